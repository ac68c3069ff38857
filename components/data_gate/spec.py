"""Contract of the DataGate component: its inputs, outputs and parameters, in one place."""
from tfx import types
from tfx.types import component_spec
from tfx.types import standard_artifacts

ANOMALIES_KEY = 'anomalies'              # ExampleValidator's: the span range's train/eval splits
SPAN_ANOMALIES_KEY = 'span_anomalies'    # optional, SpanValidator's: one split per span
REPORT_KEY = 'report'
SEVERITY_POLICY_KEY = 'severity_policy'
REPORT_FILE = 'data_gate.json'

# Custom properties set on the report artifact, so orchestration and notebooks can read them.
VERDICT_PROPERTY = 'verdict'            # 'clean' | 'warnings' (a blocked run has no report)
NUM_WARNINGS_PROPERTY = 'num_warnings'
NUM_BLOCKING_PROPERTY = 'num_blocking'


class DataGateReport(types.Artifact):
  """What the data gate decided: JSON with every anomaly and the severity it was given."""
  TYPE_NAME = 'LooplineDataGateReport'


class DataGateSpec(types.ComponentSpec):
  PARAMETERS = {
      SEVERITY_POLICY_KEY: component_spec.ExecutionParameter(type=str),
  }
  INPUTS = {
      ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
      SPAN_ANOMALIES_KEY: component_spec.ChannelParameter(
          type=standard_artifacts.ExampleAnomalies, optional=True),
  }
  OUTPUTS = {
      REPORT_KEY: component_spec.ChannelParameter(type=DataGateReport),
  }
