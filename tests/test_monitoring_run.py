"""The monitoring summary people read: verdicts, realized metrics, what was skipped, the action."""
from pipeline import monitoring_run


def _summary(**version_info):
  return {'run_id': 'r1', 'num_examples': 120, 'num_labeled': 100, 'model_versions': '7:120',
          'skipped': {'labels_unknown': 3, 'corrupt_records': 1},
          'versions': {'7': dict({'verdict': 'no_drift', 'drifted_features': '',
                                  'critical_features': '', 'schema_break': False,
                                  'realized': {'auc': 0.91, 'expected_calibration_error': 0.034,
                                               'example_count': 100.0}},
                                 **version_info)},
          'retrain': False, 'schema_break': version_info.get('schema_break', False)}


def test_counts_of_unusable_feedback_and_logs_are_reported():
  text = monitoring_run.format_monitoring(_summary())
  assert 'not used (counted): corrupt records 1, labels unknown 3' in text
  assert ('version 7: drift no_drift; realized AUC 0.910, ECE 0.034 on 100 labelled examples'
          in text)
  assert text.endswith('-> no action')


def test_requests_missing_a_required_feature_are_counted_and_named():
  summary = _summary()
  summary['missing_required'] = {'examples': 12, 'features': 'fare:12,payment_type:2'}
  assert ('requests missing a feature the model requires: 12 (fare 12, payment_type 2)'
          in monitoring_run.format_monitoring(summary))
  summary['missing_required'] = {'examples': 0, 'features': ''}
  assert 'missing a feature' not in monitoring_run.format_monitoring(summary)


def test_a_schema_break_is_not_a_reason_to_retrain():
  summary = _summary(verdict='critical', critical_features='company', schema_break=True)
  text = monitoring_run.format_monitoring(summary)
  assert 'drift critical (schema break)' in text and 'critical: company' in text
  assert 'fix the producer' in text


def test_a_run_without_a_serving_window_is_named():
  """A monitoring run whose ServingLogExampleGen produced nothing (it failed): a LookupError
  naming the run and the nodes it has, not a KeyError."""
  import pytest
  from ml_metadata.metadata_store import metadata_store
  from ml_metadata.proto import metadata_store_pb2
  connection = metadata_store_pb2.ConnectionConfig()
  connection.fake_database.SetInParent()
  store = metadata_store.MetadataStore(connection)
  run_type = store.put_context_type(metadata_store_pb2.ContextType(name='pipeline_run'))
  [run_id] = store.put_contexts([metadata_store_pb2.Context(type_id=run_type, name='run-7')])
  run = store.get_contexts_by_id([run_id])[0]
  with pytest.raises(LookupError, match=r'monitoring run run-7 has no serving window \(no '
                                        r'output of ServingLogExampleGen; nodes: none\)'):
    monitoring_run.summarize(store, run)


def test_the_version_of_a_monitoring_node():
  """Per-version nodes (`DriftDetector_7`) and the cluster pipeline's single node, whose version
  is known only from its output's `model_version` property."""
  from ml_metadata.proto import metadata_store_pb2

  def artifact(model_version=None):
    result = metadata_store_pb2.Artifact()
    if model_version is not None:
      result.custom_properties['model_version'].int_value = model_version
    return result
  prefix = monitoring_run.DRIFT_PREFIX
  assert monitoring_run.node_version('DriftDetector', prefix, artifact(42)) == '42'
  assert monitoring_run.node_version('DriftDetector_7', prefix, artifact(-1)) == '7'
  assert monitoring_run.node_version('DriftDetector_7', prefix, artifact(7)) == '7'
  assert monitoring_run.node_version('RealizedMetrics', monitoring_run.REALIZED_PREFIX,
                                     artifact(9)) == '9'
  assert monitoring_run.node_version('StatisticsGen', prefix, artifact(3)) is None
  assert monitoring_run.node_version('RealizedMetrics_7', prefix, artifact(7)) is None
