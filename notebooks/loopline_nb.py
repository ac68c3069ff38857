"""Shared helpers of Loopline's notebooks: find a run and its artifacts through ML Metadata.

Nothing here knows an artifact path: every URI comes from MLMD. Which store and run:
- `LOOPLINE_HOME` (or ./loopline_home): the home of a local run, MLMD at
  `<home>/metadata/metadata.sqlite`;
- `LOOPLINE_MLMD_URL=mysql://user:password@host:port/database`: MLMD on MySQL instead (as in a
  cluster);
- `LOOPLINE_RUN_ID`: a run by its id (the `pipeline_run` context name); the latest run if unset;
- `LOOPLINE_PIPELINE`: the pipeline name (default `loopline-training`).
"""
import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Tuple

from ml_metadata.proto import metadata_store_pb2

from loopline import home as home_lib
from pipeline import metadata_queries as mq
from pipeline.config import PipelineConfig

HOME_ENV = home_lib.HOME_ENV_VAR
MLMD_URL_ENV = 'LOOPLINE_MLMD_URL'
RUN_ENV = 'LOOPLINE_RUN_ID'
PIPELINE_ENV = 'LOOPLINE_PIPELINE'
MODEL_VERSION_ENV = 'LOOPLINE_MODEL_VERSION'


def config_from_env(home: Optional[str] = None) -> PipelineConfig:
  """The PipelineConfig whose home and MLMD the notebook reads."""
  from pipeline import kubeflow
  home = home_lib.resolve_home(home)
  overrides = {}
  if os.environ.get(MLMD_URL_ENV):
    overrides['mysql'] = kubeflow.parse_mysql_url(os.environ[MLMD_URL_ENV])
  if os.environ.get(PIPELINE_ENV):
    overrides['pipeline_name'] = os.environ[PIPELINE_ENV]
  return PipelineConfig(home=home, **overrides)


def open_store(config: PipelineConfig):
  """The run's MLMD store; a clear error when it is missing or MySQL cannot be reached."""
  if config.mysql is None and not os.path.isfile(config.metadata_path):
    raise FileNotFoundError(
        f'no ML Metadata at {config.metadata_path}: run `loopline train` first, or set '
        f'{HOME_ENV} (or {MLMD_URL_ENV}) to where a run wrote its metadata')
  try:
    return mq.open_pipeline_store(config)
  except RuntimeError as e:
    if config.mysql is None:
      raise
    raise ConnectionError(f'cannot open ML Metadata on MySQL {describe_mysql(config.mysql)}: '
                          f'{mysql_diagnosis(config.mysql)} (MLMD: {e})') from e


def describe_mysql(mysql) -> str:
  return f'{mysql.username}@{mysql.host}:{mysql.port}/{mysql.database}'


def mysql_diagnosis(mysql) -> str:
  """What is wrong, as far as a TCP connection tells (MLMD's own message says little)."""
  import socket
  try:
    with socket.create_connection((mysql.host, mysql.port), timeout=5):
      return 'the server answers: check the user, password and database'
  except OSError as e:
    return f'nothing answers on {mysql.host}:{mysql.port} ({e.strerror or e})'


@dataclasses.dataclass
class Run:
  """One pipeline run read back from MLMD: its executions by node id, with their artifacts."""
  config: PipelineConfig
  store: object
  context: metadata_store_pb2.Context
  records: Dict[str, mq.ExecutionRecord]

  @property
  def run_id(self) -> str:
    return self.context.name

  def artifact(self, node: str, key: str, side: str = 'outputs'):
    """The first artifact of `node`'s input or output `key`, or None."""
    record = self.records.get(node)
    if record is None:
      return None
    artifacts = getattr(record, side).get(key) or []
    return artifacts[0] if artifacts else None

  def require(self, node: str, key: str, side: str = 'outputs'):
    found = self.artifact(node, key, side)
    if found is None:
      raise LookupError(f'run {self.run_id} has no {side[:-1]} {key!r} of {node} in MLMD '
                        f'(nodes: {", ".join(sorted(self.records))})')
    return found

  def exec_property(self, node: str, name: str):
    """An execution property of `node` as MLMD recorded it (TFX stores them as custom ones)."""
    return mq.custom_property(self.records[node].execution, name)

  def describe(self) -> str:
    states = {}
    for record in self.records.values():
      states[record.state] = states.get(record.state, 0) + 1
    counts = ', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))
    where = (f'MySQL {self.config.mysql.host}:{self.config.mysql.port}/'
             f'{self.config.mysql.database}' if self.config.mysql else self.config.metadata_path)
    return f'run {self.run_id} of {self.config.pipeline_name} ({counts}) from {where}'


def list_runs(config: Optional[PipelineConfig] = None) -> List[str]:
  config = config or config_from_env()
  return [c.name for c in mq.run_contexts(open_store(config), config.pipeline_name)]


def open_run(run_id: Optional[str] = None, config: Optional[PipelineConfig] = None) -> Run:
  """The run `run_id` (default: $LOOPLINE_RUN_ID, else the latest run) of the pipeline."""
  config = config or config_from_env()
  store = open_store(config)
  runs = mq.run_contexts(store, config.pipeline_name)
  if not runs:
    raise LookupError(f'no run of pipeline {config.pipeline_name!r} in ML Metadata')
  run_id = run_id or os.environ.get(RUN_ENV)
  if run_id:
    matching = [r for r in runs if r.name == run_id]
    if not matching:
      raise LookupError(f'no run {run_id!r} of {config.pipeline_name!r}; runs: '
                        f'{", ".join(r.name for r in runs)}')
    context = matching[0]
  else:
    context = runs[-1]
  records = {r.node_id: r for r in mq.execution_records(store, context)}
  return Run(config, store, context, records)


def producing_record(run: Run, artifact) -> Optional[mq.ExecutionRecord]:
  """The execution (of any run) that output `artifact`, with its inputs and outputs."""
  store = run.store
  events = store.get_events_by_artifact_ids([artifact.id])
  outputs = [e for e in events if e.type in (metadata_store_pb2.Event.OUTPUT,
                                             metadata_store_pb2.Event.DECLARED_OUTPUT)]
  if not outputs:
    return None
  execution = store.get_executions_by_id([outputs[0].execution_id])[0]
  return _record(store, execution)


def _record(store, execution) -> mq.ExecutionRecord:
  record = mq.ExecutionRecord(mq.node_id_of(store, execution.id), execution, {}, {})
  events = store.get_events_by_execution_ids([execution.id])
  artifacts = {a.id: a for a in store.get_artifacts_by_id(list({e.artifact_id for e in events}))}
  for event in events:
    key = event.path.steps[0].key if event.path.steps else ''
    side = (record.inputs if event.type in (metadata_store_pb2.Event.INPUT,
                                            metadata_store_pb2.Event.DECLARED_INPUT)
            else record.outputs)
    side.setdefault(key, []).append(artifacts[event.artifact_id])
  return record


def artifact_type_name(store, artifact) -> str:
  return store.get_artifact_types_by_id([artifact.type_id])[0].name


# --- data -------------------------------------------------------------------------------------

def span_files(run: Run) -> Dict[int, List[str]]:
  """{span: [CSV files]} the run's ExampleGen read, from the span versions MLMD recorded."""
  from tfx.dsl.io import fileio
  from tfx.proto import example_gen_pb2
  from tfx.utils import proto_utils
  examples = run.require('SpanRangeCsvExampleGen', 'examples')
  versions = dict(tuple(int(x) for x in item.split(':'))
                  for item in (mq.custom_property(examples, 'span_versions') or '').split(',')
                  if item)
  input_base = run.exec_property('SpanRangeCsvExampleGen', 'input_base')
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(run.exec_property('SpanRangeCsvExampleGen', 'input_config'),
                            input_config)
  # MLMD records the resolved config: one pattern per span, newline-separated, in span order.
  patterns = input_config.splits[0].pattern.split('\n')
  if len(patterns) == 1 and len(versions) > 1:
    patterns = patterns * len(versions)
  files = {}
  for (span, version), pattern in zip(sorted(versions.items()), patterns):
    glob = pattern.replace('{SPAN}', str(span)).replace('{VERSION}', str(version))
    files[span] = sorted(fileio.glob(os.path.join(input_base, glob)))
  return files


def statistics_by_split(artifact) -> Dict[str, object]:
  """{split: DatasetFeatureStatisticsList} of a StatisticsGen output (FeatureStats.pb)."""
  from tfx.components.statistics_gen import stats_artifact_utils
  from tfx.types import artifact_utils, standard_artifacts
  stats = standard_artifacts.ExampleStatistics()
  stats.set_mlmd_artifact(artifact)
  splits = artifact_utils.decode_split_names(stats.split_names)
  return {split: stats_artifact_utils.load_statistics(stats, split).proto() for split in splits}


def anomalies_by_split(artifact) -> Dict[str, object]:
  """{split: Anomalies} of an ExampleValidator output (read as the data gate reads them)."""
  from components.data_gate import executor as data_gate_executor
  from tfx.types import standard_artifacts
  anomalies = standard_artifacts.ExampleAnomalies()
  anomalies.set_mlmd_artifact(artifact)
  return data_gate_executor.load_anomalies(anomalies)


def schema_of(artifact):
  import tensorflow_data_validation as tfdv
  return tfdv.load_schema_text(os.path.join(artifact.uri, 'schema.pbtxt'))


# --- models -----------------------------------------------------------------------------------

def served_versions(config: PipelineConfig) -> List[str]:
  """Model versions in the serving directory, oldest first (hidden half-pushes excluded)."""
  base = config.serving_model_dir
  if '://' in base or not os.path.isdir(base):
    return []
  return sorted((v for v in os.listdir(base) if v.isdigit()), key=int)


def pushed_model(run_or_store, version: str):
  """The PushedModel artifact in MLMD whose pushed_version is `version`."""
  store = getattr(run_or_store, 'store', run_or_store)
  candidates = [a for a in store.get_artifacts_by_type('PushedModel')
                if str(mq.custom_property(a, 'pushed_version')) == str(version)
                and mq.custom_property(a, 'pushed')]
  if not candidates:
    raise LookupError(f'no pushed model version {version} in ML Metadata')
  return max(candidates, key=lambda a: a.id)


def blessed_models(run: Run) -> List[Tuple[object, object]]:
  """[(Model, ModelBlessing)] of every blessed evaluation in MLMD, oldest first."""
  store = run.store
  found = []
  for blessing in store.get_artifacts_by_type('ModelBlessing'):
    if not mq.custom_property(blessing, 'blessed'):
      continue
    record = producing_record(run, blessing)
    if record and record.inputs.get('model'):
      found.append((record.inputs['model'][0], blessing))
  return sorted(found, key=lambda pair: pair[1].id)


def evaluation_of(run: Run, model) -> Optional[object]:
  """The ModelEvaluation of the Evaluator execution that evaluated `model` as candidate."""
  store = run.store
  executions = {e.execution_id for e in store.get_events_by_artifact_ids([model.id])
                if e.type == metadata_store_pb2.Event.INPUT}
  for execution in sorted(store.get_executions_by_id(list(executions)), key=lambda e: -e.id):
    record = _record(store, execution)
    if record.node_id == 'Evaluator' and record.inputs.get('model', [None])[0].id == model.id:
      return (record.outputs.get('evaluation') or [None])[0]
  return None


def read_hyperparameters(artifact) -> Optional[Dict]:
  """The values of a HyperParameters artifact; None without one (the model's defaults)."""
  return None if artifact is None else mq.read_hyperparameters(artifact.uri)


# --- lineage ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Lineage:
  """Artifacts and executions upstream of one artifact, as a graph (producer -> consumer)."""
  nodes: Dict[Tuple[str, int], str]               # ('artifact'|'execution', id) -> label
  edges: List[Tuple[Tuple[str, int], Tuple[str, int]]]
  artifacts: Dict[int, object]
  executions: Dict[int, mq.ExecutionRecord]

  def artifacts_of_type(self, type_name: str, store) -> List[object]:
    return [a for a in self.artifacts.values() if artifact_type_name(store, a) == type_name]

  def execution(self, node_id: str) -> Optional[mq.ExecutionRecord]:
    found = [r for r in self.executions.values() if r.node_id == node_id]
    return found[0] if found else None


_LABEL_PROPERTIES = ('span_range', 'span_versions', 'pushed_version', 'blessed', 'verdict')


def _artifact_label(store, artifact) -> str:
  label = artifact_type_name(store, artifact).split('.')[-1]
  details = [f'{p}={mq.custom_property(artifact, p)}' for p in _LABEL_PROPERTIES
             if mq.custom_property(artifact, p) is not None]
  return '\n'.join([f'{label} #{artifact.id}'] + details)


def lineage(run: Run, artifact, sibling_output_types: Iterable[str] = ('ModelEvaluation',),
            max_depth: int = 30) -> Lineage:
  """Walks MLMD events upstream from `artifact` to the data (and each execution's outputs of
  `sibling_output_types`, e.g. the evaluation beside a blessing)."""
  store = run.store
  nodes, edges, artifacts, executions = {}, [], {}, {}
  frontier, depth = [artifact], 0
  sibling_output_types = set(sibling_output_types)
  while frontier and depth < max_depth:
    next_frontier = []
    for current in frontier:
      if current.id in artifacts:
        continue
      artifacts[current.id] = current
      nodes[('artifact', current.id)] = _artifact_label(store, current)
      record = producing_record(run, current)
      if record is None:
        continue
      execution_key = ('execution', record.execution.id)
      if (execution_key, ('artifact', current.id)) not in edges:
        edges.append((execution_key, ('artifact', current.id)))
      if record.execution.id in executions:
        continue
      executions[record.execution.id] = record
      nodes[execution_key] = record.node_id
      for outputs in record.outputs.values():
        for sibling in outputs:
          if (sibling.id not in artifacts
              and artifact_type_name(store, sibling) in sibling_output_types):
            artifacts[sibling.id] = sibling
            nodes[('artifact', sibling.id)] = _artifact_label(store, sibling)
            edges.append((execution_key, ('artifact', sibling.id)))
      for inputs in record.inputs.values():
        for upstream in inputs:
          edges.append((('artifact', upstream.id), execution_key))
          next_frontier.append(upstream)
    frontier, depth = next_frontier, depth + 1
  return Lineage(nodes, edges, artifacts, executions)


def draw_lineage(graph: Lineage, title: str = '', ax=None):
  """Draws the lineage left (data) to right (served model) with matplotlib."""
  import matplotlib.pyplot as plt
  # Layer = longest path from a source, so every edge points right.
  layer = {node: 0 for node in graph.nodes}
  for _ in range(len(graph.nodes)):
    changed = False
    for source, target in graph.edges:
      if layer[target] < layer[source] + 1:
        layer[target] = layer[source] + 1
        changed = True
    if not changed:
      break
  columns: Dict[int, List] = {}
  for node in sorted(graph.nodes, key=lambda n: (layer[n], graph.nodes[n])):
    columns.setdefault(layer[node], []).append(node)
  height = max(len(c) for c in columns.values())
  position = {}
  for x in sorted(columns):
    column = columns[x]
    if x > 0:   # order each column by the mean height of its inputs: fewer crossing edges
      def barycenter(node):
        ys = [position[s][1] for s, t in graph.edges if t == node and s in position]
        return -sum(ys) / len(ys) if ys else 0.0
      column.sort(key=barycenter)
    for i, node in enumerate(column):
      position[node] = (x, (len(column) - 1) / 2 - i)
  if ax is None:
    _, ax = plt.subplots(figsize=(1.7 * (len(columns) + 1), max(4.0, 1.2 * (height + 1))))
  for source, target in graph.edges:
    ax.annotate('', xy=position[target], xytext=position[source],
                arrowprops=dict(arrowstyle='->', color='#777777', shrinkA=28, shrinkB=28))
  for node, (x, y) in position.items():
    is_execution = node[0] == 'execution'
    ax.text(x, y, graph.nodes[node], ha='center', va='center', fontsize=7,
            bbox=dict(boxstyle='round' if is_execution else 'square',
                      facecolor='#cfe2f3' if is_execution else '#fff2cc', edgecolor='#555555'))
  ax.set_xlim(-0.7, max(columns) + 0.7)
  ax.set_ylim(-height / 2 - 0.3, height / 2 + 0.3)
  ax.axis('off')
  if title:
    ax.set_title(title)
  return ax
