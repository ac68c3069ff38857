"""Executor of DataGate: applies the severity policy to ExampleValidator's and SpanValidator's
anomalies, each labelled with where it came from ('span 6 (version 1)', 'spans 1-6, train
split')."""
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils

from components.data_gate import policy as policy_lib
from components.data_gate import spec
from components.span_example_gen import driver as span_driver
from components.span_validator import spec as span_validator_spec

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


def labelled_anomalies(range_anomalies: Dict[str, anomalies_pb2.Anomalies],
                       span_anomalies: Optional[Dict[str, anomalies_pb2.Anomalies]] = None,
                       span_versions: str = ''
                       ) -> Tuple[Dict[str, anomalies_pb2.Anomalies], Dict[str, int]]:
  """({source label: Anomalies}, {source label: span}): ExampleValidator's splits as 'spans 1-6,
  train split' (the range from `span_versions`, SpanValidator's), SpanValidator's splits as
  'span 6 (version 1)'."""
  versions = span_driver.parse_span_versions(span_versions) if span_versions else {}
  range_label = f'spans {min(versions)}-{max(versions)}, ' if versions else ''
  result = {f'{range_label}{split} split': anomalies
            for split, anomalies in range_anomalies.items()}
  spans = {}
  for split, anomalies in (span_anomalies or {}).items():
    span = span_validator_spec.span_of_split(split)
    version = versions.get(span)
    label = f'span {span}' + (f' (version {version})' if version is not None else '')
    result[label], spans[label] = anomalies, span
  return result, spans


def apply_policy(anomalies_by_source: Dict[str, anomalies_pb2.Anomalies],
                 policy: policy_lib.SeverityPolicy,
                 span_of_source: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
  """Summary of the decision; raises DataGateError when something blocks."""
  findings = policy_lib.classify(anomalies_by_source, policy, span_of_source)
  for finding in policy_lib.split_echoes(findings)[0]:
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
    span_anomalies, span_versions = None, ''
    if input_dict.get(spec.SPAN_ANOMALIES_KEY):
      per_span = artifact_utils.get_single_instance(input_dict[spec.SPAN_ANOMALIES_KEY])
      span_anomalies = load_anomalies(per_span)
      span_versions = per_span.get_string_custom_property(
          span_validator_spec.SPAN_VERSIONS_PROPERTY)
    by_source, span_of_source = labelled_anomalies(load_anomalies(anomalies), span_anomalies,
                                                   span_versions)
    summary = apply_policy(by_source, policy, span_of_source)
    report = artifact_utils.get_single_instance(output_dict[spec.REPORT_KEY])
    with fileio.open(os.path.join(report.uri, spec.REPORT_FILE), 'w') as f:
      f.write(json.dumps(summary, indent=2, sort_keys=True))
    report.set_string_custom_property(spec.VERDICT_PROPERTY, summary['verdict'])
    report.set_int_custom_property(spec.NUM_WARNINGS_PROPERTY, summary['num_warnings'])
    report.set_int_custom_property(spec.NUM_BLOCKING_PROPERTY, summary['num_blocking'])
