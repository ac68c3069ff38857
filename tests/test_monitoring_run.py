"""The monitoring summary people read: verdicts, realized metrics, what was skipped, the action."""
from pipeline import monitoring_run


def _summary(**version_info):
  return {'run_id': 'r1', 'num_examples': 120, 'num_labeled': 100, 'model_versions': '7:120',
          'skipped': {'labels_unknown': 3, 'corrupt_records': 1},
          'versions': {'7': dict({'verdict': 'no_drift', 'drifted_features': '',
                                  'critical_features': '', 'schema_break': False,
                                  'realized': {'auc': 0.91, 'example_count': 100.0}},
                                 **version_info)},
          'retrain': False, 'schema_break': version_info.get('schema_break', False)}


def test_counts_of_unusable_feedback_and_logs_are_reported():
  text = monitoring_run.format_monitoring(_summary())
  assert 'not used (counted): corrupt records 1, labels unknown 3' in text
  assert 'version 7: drift no_drift; realized AUC 0.910 on 100 labelled examples' in text
  assert text.endswith('-> no action')


def test_a_schema_break_is_not_a_reason_to_retrain():
  summary = _summary(verdict='critical', critical_features='company', schema_break=True)
  text = monitoring_run.format_monitoring(summary)
  assert 'drift critical (schema break)' in text and 'critical: company' in text
  assert 'fix the producer' in text
