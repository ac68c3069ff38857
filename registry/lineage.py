"""The chain behind a model version, from its spans to its push, read from ML Metadata.

Upstream from the version's first PushedModel (or, for a dev model, its Model and latest
evaluation): every execution that produced an input, and its outputs. Two inputs are not followed
further: `baseline_model` (the previous blessed model has its own lineage) and the inputs of a
Tuner that ran in an earlier run (`--no-tuning` reuses its result; the tuning data is that run's).
Downstream of the source Examples, the validation the data went through: StatisticsGen,
ExampleValidator and the DataGate's verdict.

No TFX import.
"""
from typing import Any, Dict, List

from metadata import layout
from metadata import queries as mq
from metadata.graph import Graph
from registry import catalog

ROLES = (('ExampleGen', 'data'), ('SchemaGen', 'schema'), ('StatisticsGen', 'statistics'),
         ('ExampleValidator', 'validation'), ('DataGate', 'data gate'),
         ('Transform', 'transform'), ('Tuner', 'tuning'), ('Trainer', 'training'),
         ('Evaluator', 'evaluation'), ('Pusher', 'push'))
VALIDATION_ROLES = ('statistics', 'validation', 'data gate')
SHOWN_PROPERTIES = ('span_range', 'span_versions', 'verdict', 'num_warnings', 'num_blocking',
                    'blessed', 'pushed', 'pushed_version', 'pushed_destination')
NOT_FOLLOWED = 'baseline_model'


def role_of(graph: Graph, execution_id: int) -> str:
  type_name = graph.execution_type_names.get(graph.executions[execution_id].type_id, '')
  node = graph.node.get(execution_id, '')
  for marker, role in ROLES:
    if marker in type_name or marker in node:
      return role
  return node or type_name


def _artifact(graph: Graph, key: str, artifact) -> Dict[str, Any]:
  entry = {'key': key, 'id': artifact.id, 'type': graph.type_name(artifact), 'uri': artifact.uri}
  properties = {name: layout.number(mq.custom_property(artifact, name))
                for name in SHOWN_PROPERTIES
                if isinstance(mq.custom_property(artifact, name), (int, float, str))}
  if entry['type'] == 'HyperParameters':
    properties['values'] = mq.read_hyperparameters(artifact.uri)
  if entry['type'] != 'ModelBlessing':
    properties.pop('blessed', None)   # ExampleValidator's per-split struct is not a blessing
  if properties:
    entry['properties'] = properties
  return entry


def _step(graph: Graph, execution_id: int, followed: bool = True) -> Dict[str, Any]:
  execution = graph.executions[execution_id]
  step = {
      'role': role_of(graph, execution_id),
      'node': graph.node.get(execution_id, '?'),
      'execution_id': execution_id,
      'state': graph.state(execution_id),
      'run': graph.run.get(execution_id),
      'started_ms': execution.create_time_since_epoch,
      'seconds': (execution.last_update_time_since_epoch -
                  execution.create_time_since_epoch) / 1000.0,
      'inputs': [{'key': '/'.join(edge.keys), 'id': edge.artifact_id,
                  'type': graph.type_name(graph.artifacts[edge.artifact_id])}
                 for edge in graph.inputs.get(execution_id, [])],
      'outputs': [_artifact(graph, '/'.join(edge.keys), graph.artifacts[edge.artifact_id])
                  for edge in graph.outputs.get(execution_id, [])],
  }
  for name in ('train_args', 'eval_args', 'custom_config', 'schema_file', 'range_config'):
    value = mq.custom_property(execution, name)
    if value not in (None, '', '{}', 'null'):
      step.setdefault('parameters', {})[name] = value
  if not followed:
    step['note'] = 'inputs not followed: computed in an earlier run, whose lineage has them'
  return step


def trace(graph: Graph, record: catalog.ModelRecord) -> List[Dict[str, Any]]:
  """The lineage steps of a catalog record, data first."""
  start = list(record.pushed_model_ids[:1]) or [record.model_id]
  if record.blessing_id is not None:
    start.append(record.blessing_id)
  trainer = graph.producer(record.model_id)
  home_run = graph.run.get(trainer) if trainer is not None else None
  steps, seen, queue = {}, set(), list(start)
  while queue:
    execution_id = graph.producer(queue.pop(0))
    if execution_id is None or execution_id in seen:
      continue
    seen.add(execution_id)
    follow = not (role_of(graph, execution_id) == 'tuning' and
                  graph.run.get(execution_id) != home_run)
    steps[execution_id] = _step(graph, execution_id, follow)
    if follow:
      queue.extend(edge.artifact_id for edge in graph.inputs.get(execution_id, [])
                   if set(edge.keys) - {NOT_FOLLOWED})
  examples = graph.artifacts.get(record.examples_id) if record.examples_id else None
  for execution_id in _validation_of(graph, examples):
    steps.setdefault(execution_id, _step(graph, execution_id))
  return sorted(steps.values(), key=lambda s: (s['started_ms'], s['execution_id']))


def _validation_of(graph: Graph, examples) -> List[int]:
  """StatisticsGen -> ExampleValidator -> DataGate executions downstream of the Examples (the
  COMPLETE run of each when several runs reused it)."""
  found, frontier = [], [examples.id] if examples is not None else []
  while frontier:
    artifact_id = frontier.pop(0)
    by_role = {}
    for edge in graph.consumers.get(artifact_id, []):
      if role_of(graph, edge.execution_id) in VALIDATION_ROLES:
        by_role.setdefault(role_of(graph, edge.execution_id), []).append(edge.execution_id)
    for candidates in by_role.values():
      chosen = min(candidates, key=lambda i: (graph.state(i) != 'COMPLETE', i))
      if chosen not in found:
        found.append(chosen)
        frontier.extend(edge.artifact_id for edge in graph.outputs.get(chosen, []))
  return found

