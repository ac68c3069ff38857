"""Executor of DataGate: applies the severity policy to ExampleValidator's anomalies."""
import json
import os
from typing import Any, Dict, List

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from components.data_gate import policy as policy_lib
from components.data_gate import spec

ANOMALIES_FILE = 'SchemaDiff.pb'


class DataGateError(RuntimeError):
  """Blocking anomalies: the message names each feature and what is wrong with it."""


def load_anomalies(artifact: types.Artifact) -> Dict[str, anomalies_pb2.Anomalies]:
  """{'<split>': Anomalies} of an ExampleAnomalies artifact."""
  result = {}
  for split in artifact_utils.decode_split_names(artifact.split_names):
    path = os.path.join(artifact.uri, f'Split-{split}', ANOMALIES_FILE)
    if not fileio.exists(path):
      raise DataGateError(f'anomalies of split {split!r} not found at {path}')
    anomalies = anomalies_pb2.Anomalies()
    with fileio.open(path, 'rb') as f:
      anomalies.ParseFromString(f.read())
    result[split] = anomalies
  return result


def apply_policy(anomalies_by_split: Dict[str, anomalies_pb2.Anomalies],
                 policy: policy_lib.SeverityPolicy) -> Dict[str, Any]:
  """Summary of the decision; raises DataGateError when something blocks."""
  findings = policy_lib.classify(anomalies_by_split, policy)
  for finding in findings:
    if finding.severity == policy_lib.WARNING:
      logging.warning('Data gate warning: %s', finding.describe())
  summary = policy_lib.summarize(findings)
  if summary['num_blocking']:
    raise DataGateError(policy_lib.blocking_message(findings))
  return summary


class Executor(base_executor.BaseExecutor):
  """Reads the anomalies, writes the report, and stops the run on blocking anomalies."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    policy = policy_lib.SeverityPolicy.from_json(exec_properties[spec.SEVERITY_POLICY_KEY])
    anomalies = artifact_utils.get_single_instance(input_dict[spec.ANOMALIES_KEY])
    summary = apply_policy(load_anomalies(anomalies), policy)
    report = artifact_utils.get_single_instance(output_dict[spec.REPORT_KEY])
    with fileio.open(os.path.join(report.uri, spec.REPORT_FILE), 'w') as f:
      f.write(json.dumps(summary, indent=2, sort_keys=True))
    report.set_string_custom_property(spec.VERDICT_PROPERTY, summary['verdict'])
    report.set_int_custom_property(spec.NUM_WARNINGS_PROPERTY, summary['num_warnings'])
    report.set_int_custom_property(spec.NUM_BLOCKING_PROPERTY, summary['num_blocking'])
