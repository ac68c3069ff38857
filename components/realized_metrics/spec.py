"""Contract of RealizedMetrics: realized performance of one served version, as an artifact."""
from tfx import types
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.baseline_resolver import spec as baseline_spec

EVALUATION_KEY = 'evaluation'
METRICS_KEY = 'realized_metrics'
MODEL_NAME_KEY = 'model_name'
MODEL_VERSION_KEY = 'model_version'   # the version, or:
BASELINE_KEY = 'baseline'             # a TrainingBaselineResolver output naming it (at run time)
MIN_AUC_KEY = 'min_auc'
SLICE_FEATURE = 'model_version'
METRICS_FILE = 'realized_metrics.json'
REPORTED_METRICS = ('auc', 'auc_precision_recall', 'binary_accuracy', 'precision', 'recall',
                    'calibration', 'expected_calibration_error', 'example_count')
# Custom properties of the output besides the metrics: the registry reads `model_name`,
# `model_version` and every numeric property (registry/checks.py, REALIZED_METRICS_TYPE).
BELOW_THRESHOLD_PROPERTY = 'below_threshold'   # 1 when realized AUC < min_auc


class RealizedMetricsArtifact(types.Artifact):
  """Metrics of one model version measured on its own labelled serving traffic."""
  TYPE_NAME = 'LooplineRealizedMetrics'


class RealizedMetricsSpec(types.ComponentSpec):
  PARAMETERS = {
      MODEL_NAME_KEY: component_spec.ExecutionParameter(type=str),
      MODEL_VERSION_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      MIN_AUC_KEY: component_spec.ExecutionParameter(type=float),
  }
  INPUTS = {
      EVALUATION_KEY: component_spec.ChannelParameter(type=standard_artifacts.ModelEvaluation),
      BASELINE_KEY: component_spec.ChannelParameter(type=baseline_spec.TrainingBaseline,
                                                    optional=True),
  }
  OUTPUTS = {
      METRICS_KEY: component_spec.ChannelParameter(type=RealizedMetricsArtifact),
  }
