"""Contract of DriftDetector: inputs, outputs, parameters and the properties it records."""
from tfx import types
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.baseline_resolver import spec as baseline_spec

# Inputs.
EXAMPLES_KEY = 'examples'                      # the serving window (ServingLogExampleGen)
STATISTICS_KEY = 'statistics'                  # optional: StatisticsGen over the window
# The baseline, either as the artifacts themselves (Importers of the lineage-resolved artifacts,
# the local pipeline) or as one manifest resolved at run time (TrainingBaselineResolver, the
# cluster pipelines): exactly one of `baseline_examples` and `baseline`.
BASELINE_EXAMPLES_KEY = 'baseline_examples'    # the raw training Examples of the served model
BASELINE_STATISTICS_KEY = 'baseline_statistics'  # optional: their StatisticsGen output
MODEL_KEY = 'model'                            # optional: predictions on baseline rows
PUSHED_MODEL_KEY = 'pushed_model'              # optional: which version's traffic to assess
BASELINE_KEY = 'baseline'                      # LooplineTrainingBaseline: all of the above
SCHEMA_KEY = 'schema'
# Parameters.
DRIFT_POLICY_KEY = 'drift_policy'              # DriftPolicy JSON (policy.py)
MODEL_VERSION_KEY = 'model_version'            # overrides the pushed model's version
SERVING_SPLIT_KEY = 'serving_split'
BASELINE_SPLIT_KEY = 'baseline_split'
PREDICTION_SPLIT_KEY = 'prediction_split'
# Outputs.
ANOMALIES_KEY = 'anomalies'
REPORT_KEY = 'report'

DEFAULT_SERVING_SPLIT = 'serving'
DEFAULT_BASELINE_SPLIT = 'train'
DEFAULT_PREDICTION_SPLIT = 'eval'   # held out from training: predictions like on new traffic
ANOMALIES_FILE = 'SchemaDiff.pb'    # as ExampleValidator writes it, under Split-<split>/
REPORT_JSON = 'drift.json'
REPORT_HTML = 'drift.html'

# Custom properties of both outputs, so orchestration can branch on them.
VERDICT_PROPERTY = 'verdict'                    # no_drift | warning | critical | insufficient_data
DRIFTED_PROPERTY = 'drifted_features'           # comma-separated, warning or critical
CRITICAL_PROPERTY = 'critical_features'         # comma-separated
SCHEMA_BREAK_PROPERTY = 'schema_break'          # 1: blocking schema anomalies (fix upstream)
NUM_ROWS_PROPERTY = 'num_rows'                  # rows assessed
MODEL_VERSION_PROPERTY = 'model_version'        # version assessed (-1: all rows)


class DriftReport(types.Artifact):
  """The drift verdict: drift.json (every measure, threshold, anomaly) and drift.html (plots)."""
  TYPE_NAME = 'LooplineDriftReport'


class DriftDetectorSpec(types.ComponentSpec):
  # Each component declares its own contract, as TFX's do (`duplicates` pairs these by shape).
  PARAMETERS = {
      DRIFT_POLICY_KEY: component_spec.ExecutionParameter(type=str),
      MODEL_VERSION_KEY: component_spec.ExecutionParameter(type=int, optional=True),
      SERVING_SPLIT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      BASELINE_SPLIT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      PREDICTION_SPLIT_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      STATISTICS_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ExampleStatistics, optional=True),
      BASELINE_EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples,
                                                             optional=True),
      BASELINE_STATISTICS_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ExampleStatistics, optional=True),
      SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
      MODEL_KEY: component_spec.ChannelParameter(type=standard_artifacts.Model, optional=True),
      PUSHED_MODEL_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.PushedModel, optional=True),
      BASELINE_KEY: component_spec.ChannelParameter(type=baseline_spec.TrainingBaseline,
                                                    optional=True),
  }
  OUTPUTS = {
      ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
      REPORT_KEY: component_spec.ChannelParameter(type=DriftReport),
  }
