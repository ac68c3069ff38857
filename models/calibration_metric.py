"""Expected calibration error as a TFMA metric (TFMA 0.47 has none built in).

Used by the training pipeline's Evaluator (a blessing threshold) and the monitoring pipeline's
realized evaluation (per served version), by name through `tfma.MetricConfig`:

    tfma.MetricConfig(class_name='ExpectedCalibrationError', module='models.calibration_metric')

TFMA imports the module by that path wherever the evaluation runs (this process, Beam's worker
processes, a Kubeflow task with the package installed). The metric is derived from TFMA's own
calibration histogram (a combiner summing labels, predictions and examples per bucket of the
prediction), with `num_bins` equal-width buckets over [0, 1]: the definition and binning of
models/calibration.py's `expected_calibration_error`.
"""
from typing import Any, Dict, Optional

import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.metrics import calibration_histogram
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics import metric_util

from models import calibration

METRIC_NAME = 'expected_calibration_error'
CLASS_NAME = 'ExpectedCalibrationError'


def metric_config(**kwargs) -> tfma.MetricConfig:
  """The MetricConfig that names this metric by module path (kwargs: a MetricConfig's fields,
  e.g. `per_slice_thresholds`)."""
  return tfma.MetricConfig(class_name=CLASS_NAME, module=__name__, **kwargs)


class ExpectedCalibrationError(metric_types.Metric):
  """Row-weighted mean |mean prediction - fraction of positives| over equal-width bins."""

  def __init__(self, num_bins: int = calibration.ECE_BINS, name: str = METRIC_NAME):
    super().__init__(metric_util.merge_per_key_computations(_expected_calibration_error),
                     num_bins=num_bins, name=name)


def _expected_calibration_error(
    num_bins: int = calibration.ECE_BINS, name: str = METRIC_NAME,
    eval_config: Optional[tfma.EvalConfig] = None, model_name: str = '',
    output_name: str = '', sub_key: Optional[metric_types.SubKey] = None,
    aggregation_type: Optional[metric_types.AggregationType] = None,
    class_weights: Optional[Dict[int, float]] = None,
    example_weighted: bool = False) -> metric_types.MetricComputations:
  key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                               sub_key=sub_key, example_weighted=example_weighted)
  # Bucket ids: 0 below 0.0, i in 1..num_bins for [(i-1)/num_bins, i/num_bins), num_bins + 1 at
  # 1.0 and above: floor(p * num_bins) + 1, models/calibration.py's binning.
  computations = calibration_histogram.calibration_histogram(
      num_buckets=num_bins, left=0.0, right=1.0, eval_config=eval_config,
      model_name=model_name, output_name=output_name, sub_key=sub_key,
      aggregation_type=aggregation_type, class_weights=class_weights,
      example_weighted=example_weighted)
  histogram_key = computations[-1].keys[-1]

  def result(metrics: Dict[metric_types.MetricKey, Any]) -> Dict[metric_types.MetricKey, Any]:
    buckets = metrics[histogram_key]
    total = sum(bucket.weighted_examples for bucket in buckets)
    if not total:
      return {key: float('nan')}
    return {key: sum(abs(bucket.weighted_predictions - bucket.weighted_labels)
                     for bucket in buckets) / total}

  computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
  return computations
