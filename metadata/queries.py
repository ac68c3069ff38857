"""Reading a pipeline run back from ML Metadata: which components ran, for how long, cached or not,
and what they consumed and produced. Used by the run summary, the registry, the notebooks, the
benchmark and the tests. Imports ML Metadata only (not TFX, whose import alone takes seconds).
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from metadata import layout

_STATE_NAMES = {v: k for k, v in metadata_store_pb2.Execution.State.items()}
HYPERPARAMETERS_FILE = 'best_hyperparameters.txt'
TUNER_RESULTS_FILE = 'tuner_results.json'           # TFX's Tuner, output `tuner_results`


@dataclasses.dataclass
class ExecutionRecord:
  node_id: str
  execution: metadata_store_pb2.Execution
  inputs: Dict[str, List[metadata_store_pb2.Artifact]]
  outputs: Dict[str, List[metadata_store_pb2.Artifact]]

  @property
  def state(self) -> str:
    return _STATE_NAMES.get(self.execution.last_known_state, 'UNKNOWN')

  @property
  def seconds(self) -> float:
    return (self.execution.last_update_time_since_epoch -
            self.execution.create_time_since_epoch) / 1000.0


def read_tuner_results(uri: str) -> Optional[List[Dict[str, Any]]]:
  """The completed trials of a TunerResults artifact (the Tuner's tuner_results.json: trial_id,
  score and the trial's hyperparameters), best first; None if unreadable."""
  try:
    with open(os.path.join(uri, TUNER_RESULTS_FILE)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def read_hyperparameters(uri: str) -> Optional[Dict[str, Any]]:
  """The `values` of a HyperParameters artifact (the Tuner's best_hyperparameters.txt), if any."""
  try:
    with open(os.path.join(uri, HYPERPARAMETERS_FILE)) as f:
      return json.load(f).get('values')
  except (OSError, ValueError):
    return None


# (pipeline context type, run context type) of each layout (metadata.layout): TFX's, then KFP's.
_LAYOUTS = ((layout.PIPELINE_CONTEXT_TYPE, layout.RUN_CONTEXT_TYPE),
            (layout.KFP_PIPELINE_CONTEXT_TYPE, layout.KFP_RUN_CONTEXT_TYPE))


def run_contexts(store: metadata_store.MetadataStore,
                 pipeline_name: str) -> List[metadata_store_pb2.Context]:
  """The pipeline's run contexts, oldest first, in either layout (a `pipeline_run` of TFX's
  runners, a `system.PipelineRun` of Kubeflow Pipelines)."""
  runs = []
  for pipeline_type, run_type in _LAYOUTS:
    pipeline = context(store, pipeline_type, pipeline_name)
    if pipeline is None:
      continue
    pipeline_execution_ids = {e.id for e in store.get_executions_by_context(pipeline.id)}
    for run in store.get_contexts_by_type(run_type):
      if any(e.id in pipeline_execution_ids for e in store.get_executions_by_context(run.id)):
        runs.append(run)
  return sorted(runs, key=lambda c: (c.create_time_since_epoch, c.id))


def latest_run(store: metadata_store.MetadataStore,
               pipeline_name: str) -> Optional[metadata_store_pb2.Context]:
  runs = run_contexts(store, pipeline_name)
  return runs[-1] if runs else None


def node_id_of(store: metadata_store.MetadataStore,
               execution: metadata_store_pb2.Execution) -> str:
  """The component's id: its `node` context in TFX's layout, `task_name` in KFP's."""
  for context in store.get_contexts_by_execution(execution.id):
    if store.get_context_types_by_id([context.type_id])[0].name == layout.NODE_CONTEXT_TYPE:
      return context.name.split('.', 1)[-1]
  return layout.task_name(execution) or '?'


def context(store, type_name: str, name: str) -> Optional[metadata_store_pb2.Context]:
  """The context, None when it (or its type) does not exist."""
  try:
    return store.get_context_by_type_and_name(type_name, name)
  except mlmd_errors.NotFoundError:
    return None


def execution_records(store: metadata_store.MetadataStore,
                      run: metadata_store_pb2.Context) -> List[ExecutionRecord]:
  """Every execution of a run with its input and output artifacts by key, in start order (in
  KFP's layout, its tasks: not the run's DAG execution, which has no task name)."""
  executions = sorted((e for e in store.get_executions_by_context(run.id)
                       if layout.task_name(e) != ''),
                      key=lambda e: (e.create_time_since_epoch, e.id))
  events = store.get_events_by_execution_ids([e.id for e in executions])
  artifacts = {a.id: a for a in store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))}
  records = {e.id: ExecutionRecord(node_id_of(store, e), e, {}, {}) for e in executions}
  for event in events:
    record = records[event.execution_id]
    # One event names every key the artifact was bound to (e.g. the same model as `model` and
    # `baseline_model`).
    keys = [step.key for step in event.path.steps if step.HasField('key')] or ['']
    if event.type in (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT):
      side = record.inputs
    elif event.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT):
      side = record.outputs
    else:
      continue
    for key in keys:
      side.setdefault(key, []).append(artifacts[event.artifact_id])
  return list(records.values())


def custom_property(artifact: metadata_store_pb2.Artifact, name: str):
  """A custom property's value (string, int or double), or None."""
  if name not in artifact.custom_properties:
    return None
  value = artifact.custom_properties[name]
  return getattr(value, value.WhichOneof('value'))


def execution_property(execution: metadata_store_pb2.Execution, name: str):
  """A component's parameter as its execution recorded it, in either layout: a custom property
  in TFX's, a field of the `inputs` struct in KFP's (an integral number as an int); or None."""
  if name in execution.custom_properties:
    value = execution.custom_properties[name]
    return getattr(value, value.WhichOneof('value'))
  inputs = execution.custom_properties.get(layout.KFP_INPUTS_PROPERTY)
  if inputs is None or name not in inputs.struct_value.fields:
    return None
  value = inputs.struct_value.fields[name]
  return layout.number(getattr(value, value.WhichOneof('kind')))


def artifact_property(artifact: metadata_store_pb2.Artifact, name: str):
  """A declared property's value (e.g. Examples' `span`), or None."""
  if name not in artifact.properties:
    return None
  value = artifact.properties[name]
  return getattr(value, value.WhichOneof('value'))
