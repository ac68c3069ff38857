"""An Evaluator's output read back: TFMA's metrics per slice (the evaluation the lineage walk
finds).

TFMA is imported inside the function (its import alone takes seconds).
"""
from typing import Any, Dict, List

SUMMARY_METRICS = ('auc', 'auc_precision_recall', 'binary_accuracy', 'precision', 'recall',
                   'calibration', 'expected_calibration_error', 'mean_label', 'example_count')


def slice_metrics(evaluation_uri: str) -> List[Dict[str, Any]]:
  """[{'slice': 'payment_type=Cash', 'auc': ..., ...}] for every slice, overall first."""
  import tensorflow_model_analysis as tfma   # seconds to import: only where it is needed
  result = tfma.load_eval_result(evaluation_uri)
  rows = []
  for slice_key, by_output in result.slicing_metrics:
    values = by_output.get('', {}).get('', {})
    row = {'slice': ', '.join(f'{k}={v}' for k, v in slice_key) or 'overall'}
    for name in SUMMARY_METRICS:
      if name in values:
        row[name] = next(iter(values[name].values()))
    rows.append(row)
  return sorted(rows, key=lambda r: (r['slice'] != 'overall', r['slice']))
