"""DataGate: stops the pipeline on blocking data anomalies, before anything trains on them.

ExampleValidator and SpanValidator find anomalies but let the pipeline go on. DataGate reads
their ExampleAnomalies (ExampleValidator's over the span range's train/eval splits, and, when
given, SpanValidator's per span: structure, schema, the newest span against the ones before it),
gives each anomaly a severity with a SeverityPolicy (components/data_gate/policy.py), and:
- with blocking anomalies, fails the run with an error that lists every anomaly, blocking ones
  first, each with the feature, what is wrong and the span or split it came from (Transform and
  everything after it never run, so nothing is trained or pushed);
- otherwise writes a report (`data_gate.json`, every finding with its severity and source) and
  records `verdict`, `num_warnings` and `num_blocking` as custom properties of its output;
  warnings are also logged.

Downstream components that must not run on bad data depend on it explicitly
(`transform.add_upstream_node(data_gate)`).

Example:
  data_gate = DataGate(anomalies=example_validator.outputs['anomalies'],
                       span_anomalies=span_validator.outputs['anomalies'],
                       severity_policy=SeverityPolicy())
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec

from components.data_gate import executor
from components.data_gate import policy as policy_lib
from components.data_gate import spec


class DataGate(base_component.BaseComponent):
  """Applies a severity policy to data anomalies (see module docstring)."""

  SPEC_CLASS = spec.DataGateSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, anomalies: types.BaseChannel,
               severity_policy: Optional[policy_lib.SeverityPolicy] = None,
               span_anomalies: Optional[types.BaseChannel] = None):
    report = types.Channel(type=spec.DataGateReport)
    super().__init__(spec=spec.DataGateSpec(
        anomalies=anomalies,
        span_anomalies=span_anomalies,
        severity_policy=(severity_policy or policy_lib.SeverityPolicy()).to_json(),
        report=report))
