"""One pipeline's lineage graph, read from ML Metadata in a few queries and walked in memory, in
either layout (metadata.layout: TFX's, or Kubeflow Pipelines v2's).

Executions with their node id, run and state; artifacts with their type; INPUT/OUTPUT events with
every key of their path (TFX records one event with two keys when an artifact feeds two inputs,
e.g. the Evaluator's `model` and `baseline_model`). Resolver nodes only record INTERNAL_OUTPUT
events, so the producer of an artifact is always the component that wrote it; a CACHED execution
re-lists the outputs of the COMPLETE one it reused, and `producer()` prefers the latter.

No TFX import (ML Metadata only).
"""
import collections
import dataclasses
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from metadata import layout
from metadata.queries import context as _context

_INPUTS = (metadata_store_pb2.Event.INPUT, metadata_store_pb2.Event.DECLARED_INPUT)
_OUTPUTS = (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
_COMPLETE = metadata_store_pb2.Execution.COMPLETE
_CACHED = metadata_store_pb2.Execution.CACHED


def _writer_rank(execution: metadata_store_pb2.Execution) -> tuple:
  """Which of an artifact's writers is its producer, lowest first: COMPLETE before CACHED (a
  cached execution re-lists the outputs of the complete one it reused), then the oldest."""
  return {_COMPLETE: 0, _CACHED: 1}.get(execution.last_known_state, 2), execution.id


@dataclasses.dataclass(frozen=True)
class Edge:
  execution_id: int
  artifact_id: int
  keys: tuple


class Graph:
  """The executions of one pipeline and the artifacts they consumed and produced."""

  def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str):
    self.store = store
    self.artifact_type_names = {t.id: t.name for t in store.get_artifact_types()}
    self.execution_type_names = {t.id: t.name for t in store.get_execution_types()}
    self.executions: Dict[int, metadata_store_pb2.Execution] = {}
    self.node: Dict[int, str] = {}
    self.run: Dict[int, str] = {}
    self._read_tfx_layout(store, pipeline_name)   # a store may hold runs of both layouts
    self._read_kfp_layout(store, pipeline_name)
    events = store.get_events_by_execution_ids(list(self.executions)) if self.executions else []
    self.artifacts: Dict[int, metadata_store_pb2.Artifact] = {
        a.id: a for a in store.get_artifacts_by_id(list({e.artifact_id for e in events}))}
    self.inputs: Dict[int, List[Edge]] = collections.defaultdict(list)
    self.outputs: Dict[int, List[Edge]] = collections.defaultdict(list)
    self.producers: Dict[int, List[int]] = collections.defaultdict(list)
    self.consumers: Dict[int, List[Edge]] = collections.defaultdict(list)
    for event in events:
      edge = Edge(event.execution_id, event.artifact_id,
                  tuple(step.key for step in event.path.steps if step.HasField('key')))
      if event.type in _INPUTS:
        self.inputs[event.execution_id].append(edge)
        self.consumers[event.artifact_id].append(edge)
      elif event.type in _OUTPUTS:
        self.outputs[event.execution_id].append(edge)
        self.producers[event.artifact_id].append(event.execution_id)

  def _read_tfx_layout(self, store, pipeline_name: str) -> None:
    pipeline = _context(store, layout.PIPELINE_CONTEXT_TYPE, pipeline_name)
    if pipeline is None:
      return
    self.executions.update((e.id, e) for e in store.get_executions_by_context(pipeline.id))
    prefix = f'{pipeline_name}.'
    for context in store.get_contexts_by_type(layout.NODE_CONTEXT_TYPE):
      if context.name.startswith(prefix):
        for execution in store.get_executions_by_context(context.id):
          self.node[execution.id] = context.name[len(prefix):]
    self._read_runs(store, layout.RUN_CONTEXT_TYPE)

  def _read_kfp_layout(self, store, pipeline_name: str) -> None:
    """Kubeflow Pipelines v2: the tasks of the `system.Pipeline` context, node = `task_name`."""
    pipeline = _context(store, layout.KFP_PIPELINE_CONTEXT_TYPE, pipeline_name)
    if pipeline is None:
      return
    tasks = {e.id: e for e in store.get_executions_by_context(pipeline.id) if layout.task_name(e)}
    self.executions.update(tasks)
    self.node.update((i, layout.task_name(e)) for i, e in tasks.items())
    self._read_runs(store, layout.KFP_RUN_CONTEXT_TYPE)

  def _read_runs(self, store, run_context_type: str) -> None:
    for context in store.get_contexts_by_type(run_context_type):
      for execution in store.get_executions_by_context(context.id):
        if execution.id in self.executions:
          self.run[execution.id] = context.name

  # ---- artifacts -----------------------------------------------------------------------------

  def type_name(self, artifact: metadata_store_pb2.Artifact) -> str:
    """The TFX name of the artifact's type, in either layout (`tfx.Model` -> `Model`)."""
    return layout.artifact_type_name(self.artifact_type_names.get(artifact.type_id, '?'))

  def artifacts_of_type(self, type_name: str) -> List[metadata_store_pb2.Artifact]:
    return sorted((a for a in self.artifacts.values() if self.type_name(a) == type_name),
                  key=lambda a: a.id)

  # ---- executions ----------------------------------------------------------------------------

  def state(self, execution_id: int) -> str:
    return metadata_store_pb2.Execution.State.Name(self.executions[execution_id].last_known_state)

  def producer(self, artifact_id: int) -> Optional[int]:
    """The execution that wrote the artifact (COMPLETE before CACHED, then the oldest)."""
    candidates = self.producers.get(artifact_id) or []
    if not candidates:
      return None
    return min(candidates, key=lambda i: _writer_rank(self.executions[i]))

  def input(self, execution_id: int, key: str) -> List[metadata_store_pb2.Artifact]:
    return [self.artifacts[e.artifact_id] for e in self.inputs.get(execution_id, [])
            if key in e.keys]

  def output(self, execution_id: int, key: str) -> List[metadata_store_pb2.Artifact]:
    return [self.artifacts[e.artifact_id] for e in self.outputs.get(execution_id, [])
            if key in e.keys]

  def first_input(self, execution_id: Optional[int], key: str
                  ) -> Optional[metadata_store_pb2.Artifact]:
    found = self.input(execution_id, key) if execution_id is not None else []
    return found[0] if found else None

  def first_output(self, execution_id: Optional[int], key: str
                   ) -> Optional[metadata_store_pb2.Artifact]:
    found = self.output(execution_id, key) if execution_id is not None else []
    return found[0] if found else None

  def consuming(self, artifact_id: int, key: str, node: Optional[str] = None) -> List[int]:
    """Executions that consumed the artifact under `key` (optionally of one node), oldest first."""
    return sorted({e.execution_id for e in self.consumers.get(artifact_id, [])
                   if key in e.keys and (node is None or self.node.get(e.execution_id) == node)})


def producing_pipeline(store: metadata_store.MetadataStore, artifact_id: int) -> Optional[str]:
  """The name of the pipeline whose execution wrote the artifact, in either layout; None when no
  finished execution did. The producer's rule picks the writer (`_writer_rank`): a later
  pipeline's Importer that re-used the artifact records an output event too."""
  ids = [e.execution_id for e in store.get_events_by_artifact_ids([artifact_id])
         if e.type in _OUTPUTS]
  done = [e for e in store.get_executions_by_id(ids) if e.last_known_state in (_COMPLETE, _CACHED)]
  if not done:
    return None
  writer = min(done, key=_writer_rank)
  pipeline_types = {t.id for t in store.get_context_types()
                    if t.name in (layout.PIPELINE_CONTEXT_TYPE, layout.KFP_PIPELINE_CONTEXT_TYPE)}
  names = [c.name for c in store.get_contexts_by_execution(writer.id)
           if c.type_id in pipeline_types]
  return names[0] if names else None
