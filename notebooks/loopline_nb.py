"""Shared helpers of Loopline's notebooks: find a run and its artifacts through ML Metadata.

Nothing here knows an artifact path: every URI comes from MLMD. Which store and run:
- `LOOPLINE_HOME` (or ./loopline_home): the home of a local run, MLMD at
  `<home>/metadata/metadata.sqlite`;
- `LOOPLINE_MLMD_URL=mysql://user:password@host:port/database`: MLMD on MySQL instead (as in a
  cluster);
- `LOOPLINE_RUN_ID`: a training run by its id (the `pipeline_run` context name); the latest run
  if unset;
- `LOOPLINE_PIPELINE`: the pipeline name (default `loopline-training`);
- `LOOPLINE_MONITORING_RUN_ID`: a run of the monitoring pipeline by its id (notebook 4); the
  latest if unset.
"""
import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Tuple

from ml_metadata.proto import metadata_store_pb2

from core import home as home_lib
from metadata import connection as metadata_connection
from metadata import layout
from metadata import lineage as lineage_lib
from metadata import queries as mq
from metadata.graph import Graph
from pipeline import config as config_lib
from pipeline.config import PipelineConfig

HOME_ENV = home_lib.HOME_ENV_VAR
MLMD_URL_ENV = config_lib.MLMD_URL_ENV
RUN_ENV = 'LOOPLINE_RUN_ID'
PIPELINE_ENV = 'LOOPLINE_PIPELINE'
MODEL_VERSION_ENV = 'LOOPLINE_MODEL_VERSION'
MONITORING_RUN_ENV = 'LOOPLINE_MONITORING_RUN_ID'


def config_from_env(home: Optional[str] = None) -> PipelineConfig:
  """The PipelineConfig whose home and MLMD the notebook reads."""
  overrides = {}
  if os.environ.get(PIPELINE_ENV):
    overrides['pipeline_name'] = os.environ[PIPELINE_ENV]
  return PipelineConfig.for_home(home_lib.resolve_home(home), **overrides)


def open_store(config: PipelineConfig):
  """The run's MLMD store; a clear error when it is missing or MySQL cannot be reached."""
  if config.mysql is None and not os.path.isfile(config.metadata_path):
    raise FileNotFoundError(
        f'no ML Metadata at {config.metadata_path}: run `loopline train` first, or set '
        f'{HOME_ENV} (or {MLMD_URL_ENV}) to where a run wrote its metadata')
  try:
    return metadata_connection.open_pipeline_store(config, read_only=True)
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
  pipeline_name: str = ''           # default: the config's training pipeline

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
    """An execution property of `node` as MLMD recorded it (TFX: custom properties; Kubeflow
    Pipelines: the execution's `inputs`)."""
    return mq.execution_property(self.records[node].execution, name)

  def describe(self) -> str:
    states = {}
    for record in self.records.values():
      states[record.state] = states.get(record.state, 0) + 1
    counts = ', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))
    where = (f'MySQL {self.config.mysql.host}:{self.config.mysql.port}/'
             f'{self.config.mysql.database}' if self.config.mysql else self.config.metadata_path)
    return (f'run {self.run_id} of {self.pipeline_name or self.config.pipeline_name} '
            f'({counts}) from {where}')


def list_runs(config: Optional[PipelineConfig] = None) -> List[str]:
  config = config or config_from_env()
  return [c.name for c in mq.run_contexts(open_store(config), config.pipeline_name)]


def open_run(run_id: Optional[str] = None, config: Optional[PipelineConfig] = None) -> Run:
  """The run `run_id` (default: $LOOPLINE_RUN_ID, else the latest run) of the pipeline."""
  config = config or config_from_env()
  return _open_pipeline_run(config, config.pipeline_name, run_id or os.environ.get(RUN_ENV),
                            f'no run of pipeline {config.pipeline_name!r} in ML Metadata')


def _open_pipeline_run(config: PipelineConfig, pipeline_name: str, run_id: Optional[str],
                       none_message: str) -> Run:
  store = open_store(config)
  runs = mq.run_contexts(store, pipeline_name)
  if not runs:
    raise LookupError(none_message)
  if run_id:
    matching = [r for r in runs if r.name == run_id]
    if not matching:
      raise LookupError(f'no run {run_id!r} of {pipeline_name!r}; runs: '
                        f'{", ".join(r.name for r in runs)}')
    context = matching[0]
  else:
    context = runs[-1]
  records = {r.node_id: r for r in mq.execution_records(store, context)}
  return Run(config, store, context, records, pipeline_name)


def lineage_graph(run: Run) -> Graph:
  """The run's pipeline as one lineage graph (metadata.graph: the walk the registry and `loopline
  lineage` use, over TFX's and Kubeflow Pipelines v2's layouts)."""
  return Graph(run.store, run.pipeline_name or run.config.pipeline_name)


def _graph_record(graph: Graph, execution_id: int) -> mq.ExecutionRecord:
  """An execution of the graph with its input and output artifacts by key."""
  record = mq.ExecutionRecord(graph.node.get(execution_id, '?'), graph.executions[execution_id],
                              {}, {})
  for side, edges in ((record.inputs, graph.inputs), (record.outputs, graph.outputs)):
    for edge in edges.get(execution_id, []):
      for key in edge.keys or ('',):
        side.setdefault(key, []).append(graph.artifacts[edge.artifact_id])
  return record


def producing_record(run: Run, artifact, graph: Optional[Graph] = None
                     ) -> Optional[mq.ExecutionRecord]:
  """The execution (of any run of the pipeline) that output `artifact`, with its inputs and
  outputs."""
  graph = graph or lineage_graph(run)
  producer = graph.producer(artifact.id)
  return _graph_record(graph, producer) if producer is not None else None


def artifact_type_name(store, artifact) -> str:
  """The TFX name of the artifact's type in either layout (`tfx.Model` -> `Model`)."""
  return layout.artifact_type_name(store.get_artifact_types_by_id([artifact.type_id])[0].name)


# --- data -------------------------------------------------------------------------------------

def span_checks(run: Run):
  """SpanValidator's view of the run: ({span: statistics}, {span: Anomalies}, statistics of the
  spans before the newest one or None), each span as MLMD recorded its statistics and anomalies."""
  from components.span_validator import spec as span_spec
  statistics = statistics_by_split(run.require('SpanValidator', 'statistics'))
  anomalies = anomalies_by_split(run.require('SpanValidator', 'anomalies'))
  by_span = {span_spec.span_of_split(split): stats for split, stats in statistics.items()
             if split.startswith('span-')}
  previous = [stats for split, stats in statistics.items() if split.startswith('spans-')]
  return (dict(sorted(by_span.items())),
          {span_spec.span_of_split(split): found for split, found in anomalies.items()},
          previous[0] if previous else None)


def gate_findings(report) -> List[str]:
  """The data gate's findings (its report, read as the run summary reads it), one line each,
  blocking ones first, each with the span or split it came from."""
  from components.data_gate import policy as gate_policy
  from pipeline import run_summary
  findings = [gate_policy.Finding(**f) for f in run_summary.read_gate_findings(report.uri)]
  return gate_policy.format_findings(findings) or ['  no finding']


def drift_table(anomalies):
  """Every drift measurement of an Anomalies proto (TFDV's `drift_skew_info`): feature, measure,
  value, threshold, drifted; largest value first."""
  import pandas as pd
  from tensorflow_metadata.proto.v0 import anomalies_pb2
  measure = anomalies_pb2.DriftSkewInfo.DESCRIPTOR.fields_by_name[
      'drift_measurements'].message_type.enum_types_by_name['Type']
  rows = [('.'.join(info.path.step), measure.values_by_number[m.type].name, m.value,
           m.threshold, m.value > m.threshold)
          for info in anomalies.drift_skew_info for m in info.drift_measurements]
  table = pd.DataFrame(rows, columns=['feature', 'measure', 'value', 'threshold', 'drifted'])
  return table.sort_values('value', ascending=False)


def _tfx_artifact(artifact, artifact_class):
  """A TFX artifact of `artifact_class` over an MLMD artifact of either layout (Kubeflow records
  the split names as a custom property)."""
  copy = type(artifact)()
  copy.CopyFrom(artifact)
  result = artifact_class()
  result.set_mlmd_artifact(copy)
  if 'split_names' not in copy.properties and lineage_lib.split_names(artifact):
    result.split_names = lineage_lib.split_names(artifact)
  return result


def statistics_by_split(artifact) -> Dict[str, object]:
  """{split: DatasetFeatureStatisticsList} of a StatisticsGen or SpanValidator output
  (FeatureStats.pb)."""
  from tfx.components.statistics_gen import stats_artifact_utils
  from tfx.types import artifact_utils, standard_artifacts
  stats = _tfx_artifact(artifact, standard_artifacts.ExampleStatistics)
  splits = artifact_utils.decode_split_names(stats.split_names)
  return {split: stats_artifact_utils.load_statistics(stats, split).proto() for split in splits}


def anomalies_by_split(artifact) -> Dict[str, object]:
  """{split: Anomalies} of an ExampleValidator or SpanValidator output (read as the data gate
  reads them)."""
  from components.data_gate import executor as data_gate_executor
  from tfx.types import standard_artifacts
  return data_gate_executor.load_anomalies(
      _tfx_artifact(artifact, standard_artifacts.ExampleAnomalies))


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
  """The PushedModel artifact in MLMD whose pushed_version is `version`, in either layout: the
  push that created the version (as the lineage walk takes it; a later pipeline's Importer of it
  may record another)."""
  store = getattr(run_or_store, 'store', run_or_store)
  candidates = [a for a in lineage_lib.pushed_models(store)
                if str(layout.number(mq.custom_property(a, 'pushed_version'))) == str(version)]
  if not candidates:
    raise LookupError(f'no pushed model version {version} in ML Metadata')
  return candidates[0]


def blessed_models(run: Run) -> List[Tuple[object, object]]:
  """[(Model, ModelBlessing)] of every blessed evaluation of the pipeline, oldest first."""
  graph = lineage_graph(run)
  found = []
  for blessing in graph.artifacts_of_type('ModelBlessing'):
    model = graph.first_input(graph.producer(blessing.id), 'model')
    if mq.custom_property(blessing, 'blessed') and model is not None:
      found.append((model, blessing))
  return found


def evaluation_of(run: Run, model) -> Optional[object]:
  """The ModelEvaluation of the (latest) Evaluator execution that evaluated `model` as candidate."""
  graph = lineage_graph(run)
  evaluators = graph.consuming(model.id, 'model', node='Evaluator')
  return graph.first_output(evaluators[-1], 'evaluation') if evaluators else None


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
  """Walks the lineage graph upstream from `artifact` to the data (and each execution's outputs of
  `sibling_output_types`, e.g. the evaluation beside a blessing)."""
  store, graph = run.store, lineage_graph(run)
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
      record = producing_record(run, current, graph)
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


# --- monitoring -------------------------------------------------------------------------------

VERDICT_LEVELS = ('no_drift', 'insufficient_data', 'warning', 'critical')
VERDICT_COLORS = {'no_drift': '#2e7d32', 'insufficient_data': '#616161', 'warning': '#ef6c00',
                  'critical': '#c62828'}
LABEL_ORDER = ('stable', 'canary')
# Ground truth of requests logged in another window: normal when feedback accumulates, not a loss.
OTHER_WINDOW_LABELS = 'labels_outside_window'


def _where(config: PipelineConfig) -> str:
  return (f'MySQL {describe_mysql(config.mysql)}' if config.mysql else config.metadata_path)


def list_monitoring_runs(config: Optional[PipelineConfig] = None) -> List[str]:
  """Ids of the monitoring pipeline's runs, oldest first."""
  config = config or config_from_env()
  return [c.name for c in mq.run_contexts(open_store(config), config.monitoring_pipeline_name)]


def open_monitoring_run(run_id: Optional[str] = None,
                        config: Optional[PipelineConfig] = None) -> Run:
  """The monitoring run `run_id` (default: $LOOPLINE_MONITORING_RUN_ID, else the latest)."""
  config = config or config_from_env()
  return _open_pipeline_run(
      config, config.monitoring_pipeline_name, run_id or os.environ.get(MONITORING_RUN_ENV),
      f'no run of the monitoring pipeline {config.monitoring_pipeline_name!r} in ML Metadata at '
      f'{_where(config)}: run `loopline loop` or `loopline monitor` first, or set {HOME_ENV} '
      f'(or {MLMD_URL_ENV}) to where monitoring ran')


def monitoring_runs(config: Optional[PipelineConfig] = None) -> List[Run]:
  """Every monitoring run, oldest first (one MLMD read per run)."""
  config = config or config_from_env()
  store = open_store(config)
  runs = []
  for context in mq.run_contexts(store, config.monitoring_pipeline_name):
    records = {r.node_id: r for r in mq.execution_records(store, context)}
    runs.append(Run(config, store, context, records, config.monitoring_pipeline_name))
  return runs


def version_labels_at(store, model_name: str, at_ms: int) -> Dict[str, str]:
  """{version: 'stable'|'canary'} as the model registry had labelled them at `at_ms` (the last
  stage transition recorded before it); {} when the registry has no transition by then."""
  from registry import store as registry_store
  labels = {}
  for transition in registry_store.RegistryStore(store, model_name).transitions():
    if transition.at_ms > at_ms:
      break
    labels = {str(version): label for label, version in (
        ('stable', transition.stable_label), ('canary', transition.canary_label)) if version}
  return labels


def serving_config_labels(config: PipelineConfig) -> Dict[str, str]:
  """{version: label} in the home's models.config now ({} without one)."""
  from registry import serving_config
  path = home_lib.serving_config_path(config.home)
  return {str(version): label for label, version in serving_config.labels(
      serving_config.parse(serving_config.read_text(path), path), config.model_name).items()}


def monitoring_summary(run: Run) -> Dict:
  """What one monitoring run found (pipeline/monitoring_run.summarize: window counts, drift
  verdict and realized metrics per version), with the run's time, its window, the serving
  counters and the version labels of that time (registry; else the serving config now)."""
  import json
  from pipeline import monitoring_run
  summary = monitoring_run.summarize(run.store, run.context, run.records)
  window = run.require('ServingLogExampleGen', 'examples')
  summary['created_ms'] = run.context.create_time_since_epoch
  summary['window_start'] = mq.custom_property(window, 'window_start')
  summary['window_end'] = mq.custom_property(window, 'window_end')
  summary['window_counts'] = json.loads(mq.custom_property(window, 'window_counts') or '{}')
  labels = version_labels_at(run.store, run.config.model_name, summary['created_ms'])
  summary['labels_source'] = 'registry at the time of the run'
  if not labels:
    labels = serving_config_labels(run.config)
    summary['labels_source'] = 'serving config now' if labels else 'none'
  for version, info in summary['versions'].items():
    info['label'] = labels.get(version, '-')
  return summary


def ordered_versions(summary: Dict) -> List[str]:
  """The run's versions, stable first, then canary, then any other (by version)."""
  order = {label: i for i, label in enumerate(LABEL_ORDER)}
  return sorted(summary['versions'], key=lambda v: (
      order.get(summary['versions'][v].get('label'), len(order)), v))


def version_output(run: Run, prefix: str, key: str, version: str):
  """The output `key` of the run's DriftDetector (prefix `DriftDetector_`) or RealizedMetrics
  (`RealizedMetrics_`) node that measured `version`; LookupError naming what the run has."""
  from pipeline import monitoring_run
  found = {}
  for node_id in run.records:
    artifact = run.artifact(node_id, key)
    measured = artifact is not None and monitoring_run.node_version(node_id, prefix, artifact)
    if measured:
      found[measured] = artifact
  if str(version) not in found:
    raise LookupError(f'run {run.run_id} has no {prefix.rstrip("_")} output {key!r} for version '
                      f'{version} (versions: {", ".join(sorted(found)) or "none"})')
  return found[str(version)]


def drift_report(run: Run, version: str) -> Dict:
  """The DriftDetector's drift.json of `version` in the run (every measure with its calibrated
  thresholds, bins and shares; components/drift_detector/report.py)."""
  import json
  from components.drift_detector import spec as drift_spec
  from pipeline import monitoring_run
  report = version_output(run, monitoring_run.DRIFT_PREFIX, drift_spec.REPORT_KEY, version)
  with open(os.path.join(report.uri, drift_spec.REPORT_JSON)) as f:
    return json.load(f)


def drift_report_html(run: Run, version: str) -> str:
  """Where the DriftDetector's drift.html of `version` is (from the artifact's URI in MLMD)."""
  from components.drift_detector import spec as drift_spec
  from pipeline import monitoring_run
  report = version_output(run, monitoring_run.DRIFT_PREFIX, drift_spec.REPORT_KEY, version)
  return os.path.join(report.uri, drift_spec.REPORT_HTML)


def embedded_html(path: str, height: int = 600) -> str:
  """An HTML page as an isolated iframe (srcdoc), so it shows in a saved notebook too."""
  import html
  with open(path, encoding='utf-8') as f:
    page = f.read()
  return (f'<iframe srcdoc="{html.escape(page, quote=True)}" style="width:100%;'
          f'height:{height}px;border:1px solid #ccc"></iframe>')


def measures_table(report: Dict):
  """One row per measure of a drift report: value, calibrated thresholds, status, sizes, and
  `ratio` = value / critical threshold (>= 1: critical)."""
  import pandas as pd
  rows = []
  for m in report.get('measures', []):
    thresholds = m.get('thresholds') or {}
    critical = thresholds.get('critical')
    rows.append({'measure': m['name'], 'role': m['role'], 'metric': m['metric'],
                 'value': m['value'], 'warning >': thresholds.get('warning'),
                 'critical >': critical, 'status': m['status'],
                 'ratio': (m['value'] / critical if m['value'] is not None and critical
                           else None),
                 'window rows': m['n_window'], 'baseline rows': m['n_baseline'],
                 'invalid': m.get('invalid', 0)})
  columns = ['measure', 'role', 'metric', 'value', 'warning >', 'critical >', 'status', 'ratio',
             'window rows', 'baseline rows', 'invalid']
  table = pd.DataFrame(rows, columns=columns)
  return table.sort_values('ratio', ascending=False, na_position='last').reset_index(drop=True)


def worst_measure(report: Dict) -> Optional[Dict]:
  """The measure closest to (or furthest over) its critical threshold, or None."""
  table = measures_table(report).dropna(subset=['ratio'])
  return None if table.empty else table.iloc[0].to_dict()


def summarize_runs(runs: List[Run]) -> List:
  """monitoring_summary of each run; a run that produced no window (failed) gives its
  LookupError instead, so one broken run does not hide the others."""
  summaries = []
  for run in runs:
    try:
      summaries.append(monitoring_summary(run))
    except LookupError as e:
      summaries.append(e)
  return summaries


def monitoring_history(runs: List[Run], summaries: Optional[List] = None):
  """One row per monitoring run and monitored version, oldest first: time, window size,
  labelled rows, the version's label, drift verdict, drifted/critical features, schema break,
  the worst measure (value / critical threshold), realized AUC and its labelled rows. A run
  without a window gets one row saying so."""
  import datetime
  import pandas as pd
  summaries = summarize_runs(runs) if summaries is None else summaries
  rows = []
  for index, (run, summary) in enumerate(zip(runs, summaries)):
    base = {'#': index + 1, 'run': run.run_id, 'time': datetime.datetime.fromtimestamp(
        run.context.create_time_since_epoch / 1000).strftime('%Y-%m-%d %H:%M:%S')}
    if isinstance(summary, Exception):
      rows.append(dict(base, verdict=f'incomplete: {summary}'))
      continue
    base['window rows'] = summary['num_examples']
    base['labelled rows'] = summary['num_labeled']
    for version in ordered_versions(summary):
      info = summary['versions'][version]
      realized = info.get('realized') or {}
      worst = worst_measure(drift_report(run, version)) if info.get('verdict') else None
      rows.append(dict(base, **{
          'version': version, 'label': info.get('label'), 'verdict': info.get('verdict'),
          'critical': info.get('critical_features') or '',
          'drifted': info.get('drifted_features') or '',
          'schema break': info.get('schema_break'),
          'worst measure': worst['measure'] if worst else None,
          'worst / critical': worst['ratio'] if worst else None,
          'realized AUC': realized.get('auc'),
          'realized rows': int(realized.get('example_count') or 0)}))
  return pd.DataFrame(rows)


def plot_history(history, ax_verdict=None, ax_measure=None):
  """Verdict per version over the runs (top) and the worst measure's value / its critical
  threshold (bottom; >= 1 is critical)."""
  import matplotlib.pyplot as plt
  if ax_verdict is None or ax_measure is None:
    _, (ax_verdict, ax_measure) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
  if 'version' not in history:
    return ax_verdict, ax_measure        # no run produced a window
  history = history.dropna(subset=['version'])
  for version, rows in history.groupby('version', sort=False):
    label = f'{version} ({rows["label"].iloc[-1]})'
    levels = [VERDICT_LEVELS.index(v) if v in VERDICT_LEVELS else -1 for v in rows['verdict']]
    ax_verdict.plot(rows['#'], levels, marker='o', label=label)
    ax_measure.plot(rows['#'], rows['worst / critical'], marker='o', label=label)
    for x, y, name, verdict in zip(rows['#'], rows['worst / critical'], rows['worst measure'],
                                   rows['verdict']):
      if name:
        ax_measure.annotate(name, (x, y), textcoords='offset points', xytext=(4, 4),
                            fontsize=8, color=VERDICT_COLORS.get(verdict, '#000'))
  ax_verdict.set_yticks(range(len(VERDICT_LEVELS)), VERDICT_LEVELS)
  ax_verdict.set_ylim(-0.5, len(VERDICT_LEVELS) - 0.5)
  ax_verdict.set_title('drift verdict per monitoring run')
  ax_verdict.legend(fontsize=8)
  ax_measure.axhline(1.0, color=VERDICT_COLORS['critical'], linestyle='--', linewidth=1)
  ax_measure.set_ylabel('worst measure / critical threshold')
  ax_measure.set_xlabel('monitoring run (oldest first)')
  ax_measure.set_xticks(sorted(set(history['#'])))
  return ax_verdict, ax_measure


def plot_measures(report: Dict, title: str = '', ax=None):
  """Every measure's value against its calibrated warning and critical thresholds."""
  import matplotlib.pyplot as plt
  table = measures_table(report).dropna(subset=['value']).iloc[::-1]
  if ax is None:
    _, ax = plt.subplots(figsize=(9, 0.3 * len(table) + 1.2))
  y = range(len(table))
  ax.barh(y, table['value'], color=[VERDICT_COLORS.get(s, '#2e7d32') if s != 'no_drift'
                                    else '#90a4ae' for s in table['status']])
  ax.scatter(table['warning >'], y, marker='|', s=200, color=VERDICT_COLORS['warning'],
             label='warning threshold')
  ax.scatter(table['critical >'], y, marker='|', s=200, color=VERDICT_COLORS['critical'],
             label='critical threshold')
  ax.set_yticks(list(y), [f'{m} ({metric})' for m, metric in zip(table['measure'],
                                                                 table['metric'])], fontsize=8)
  ax.set_xlabel('measured value (Jensen-Shannon or L-infinity)')
  ax.legend(fontsize=8, loc='lower right')
  if title:
    ax.set_title(title)
  return ax


def plot_drifted_distributions(report: Dict, title: str = '', max_plots: int = 8):
  """Training vs serving distribution (share per bin) of each drifted measure, worst first.
  Returns the figure, or None when nothing drifted."""
  import matplotlib.pyplot as plt
  from components.drift_detector import columns as columns_lib
  from components.drift_detector import report as report_lib
  drifted = [m for m in report.get('measures', []) if m['status'] in ('warning', 'critical')]
  drifted.sort(key=lambda m: -(m['value'] / m['thresholds']['critical']
                               if m['thresholds'].get('critical') else 0.0))
  drifted = drifted[:max_plots]
  if not drifted:
    return None
  columns = min(2, len(drifted))
  rows = (len(drifted) + columns - 1) // columns
  figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, 3.6 * rows), squeeze=False)
  for ax, m in zip(axes.flat, drifted):
    if m.get('kind') == columns_lib.NUMERIC:      # ordered bins: all of them, in order
      bins, baseline, window = m['bins'], m['baseline_share'], m['window_share']
    else:                                          # categories: the largest, the rest summed
      bins, baseline, window = report_lib.plotted_bins(m['bins'], m['baseline_share'],
                                                       m['window_share'], limit=20)
    x = list(range(len(bins)))
    ax.bar([i - 0.2 for i in x], baseline, width=0.4, color=report_lib.BASELINE_COLOR,
           label='training')
    ax.bar([i + 0.2 for i in x], window, width=0.4, color=report_lib.WINDOW_COLOR,
           label='serving')
    every = max(1, len(bins) // 15)
    ax.set_xticks(x[::every], [b if len(b) <= 14 else b[:13] + '…' for b in bins[::every]],
                  rotation=60, ha='right', fontsize=7)
    ax.set_ylabel('share of rows', fontsize=8)
    ax.set_title(f'{m["name"]}: {m["metric"]} {m["value"]:.4f} ({m["status"]})\nwarning > '
                 f'{m["thresholds"]["warning"]:.4f}, critical > '
                 f'{m["thresholds"]["critical"]:.4f}', fontsize=9,
                 color=VERDICT_COLORS.get(m['status'], '#000'))
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(drifted):]:
    ax.axis('off')
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure


def realized_by_version(run: Run, summary: Dict):
  """Realized metrics per monitored version (its RealizedMetrics artifact), stable first, beside
  the AUC of the version's own training evaluation (recorded by the registry) when known."""
  import pandas as pd
  from components.realized_metrics import spec as realized_spec
  recorded = _registry_eval_auc(run.store, run.config.model_name)
  rows = []
  for version in ordered_versions(summary):
    info = summary['versions'][version]
    row = {'version': version, 'label': info.get('label')}
    node = info.get('realized_node')
    if node:
      artifact = run.require(node, realized_spec.METRICS_KEY)
      row.update({name: mq.custom_property(artifact, name)
                  for name in realized_spec.REPORTED_METRICS})
      row['below min AUC'] = bool(mq.custom_property(
          artifact, realized_spec.BELOW_THRESHOLD_PROPERTY))
      row['min AUC'] = run.exec_property(node, realized_spec.MIN_AUC_KEY)
    row['training eval AUC'] = recorded.get(version)
    rows.append(row)
  return pd.DataFrame(rows).set_index('version')


def _registry_eval_auc(store, model_name: str) -> Dict[str, float]:
  from registry import store as registry_store
  found = {}
  for version, artifact in registry_store.RegistryStore(store, model_name).versions().items():
    value = mq.custom_property(artifact, registry_store.EVAL_METRIC_PREFIX + 'auc')
    if value is not None:
      found[str(version)] = value
  return found


def realized_slices(run: Run):
  """The RealizedEvaluator's metrics on the labelled traffic: overall, per model_version, per
  training slice, and per training slice of each version (`version` column; '' for the slices of
  every version's requests together). None when the run evaluated nothing (no ground truth)."""
  import pandas as pd
  from components.serving_log_gen import spec as log_gen_spec
  from metadata import evaluation as evaluation_lib
  evaluation = run.artifact('RealizedEvaluator', 'evaluation')
  if evaluation is None:
    return None
  table = pd.DataFrame(evaluation_lib.slice_metrics(evaluation.uri)).set_index('slice')
  versions, columns = [], []
  for name in table.index:
    parts = dict(part.split('=', 1) for part in name.split(', ')) if name != 'overall' else {}
    version = parts.pop(log_gen_spec.MODEL_VERSION_FEATURE, '')
    versions.append(version)
    columns.append(','.join(parts) or (log_gen_spec.MODEL_VERSION_FEATURE if version
                                       else 'overall'))
  return table.assign(version=versions, column=columns)


def feedback_review(summary: Dict):
  """The window's counters as ServingLogExampleGen recorded them in MLMD: logged and labelled
  rows per version, what the log reader skipped, what the feedback join could not use."""
  import pandas as pd
  rows = [('window', 'logged examples', summary['num_examples']),
          ('window', 'with ground truth', summary['num_labeled'])]
  for item in (summary.get('model_versions') or '').split(','):
    if ':' in item:
      version, count = item.split(':')
      label = summary['versions'].get(version, {}).get('label', '-')
      rows.append(('window', f'logged, version {version} ({label})', int(count)))
  counts = summary.get('window_counts') or {}
  for group in ('logs', 'feedback'):
    for name, value in sorted((counts.get(group) or {}).items()):
      if isinstance(value, (int, float)):
        rows.append((group, name.replace('_', ' '), value))
  return pd.DataFrame(rows, columns=['source', 'counter', 'value'])


def verdicts_text(summaries: List) -> str:
  """Every run's verdicts, oldest first: `v1:no_drift | v1:critical | v1:critical,v2:warning`
  (stable first; `incomplete` for a run without a window)."""
  parts = []
  for summary in summaries:
    if isinstance(summary, Exception):
      parts.append('incomplete')
      continue
    parts.append(','.join(f'{v}:{summary["versions"][v].get("verdict")}'
                          for v in ordered_versions(summary)) or 'no version')
  return ' | '.join(parts)


def format_monitoring_summary(summary: Dict, summaries: List) -> str:
  """The notebook's one SUMMARY line: the selected run, how many runs, every run's verdicts, the
  selected window's counts, each version's realized AUC on its own labelled requests."""
  versions = []
  for version in ordered_versions(summary):
    info = summary['versions'][version]
    realized = info.get('realized') or {}
    auc = realized.get('auc')
    versions.append(f'version {version} ({info.get("label", "-")}) AUC '
                    f'{f"{auc:.3f}" if auc is not None else "n/a"} on '
                    f'{int(realized.get("example_count") or 0)}')
  skipped = summary.get('skipped') or {}
  unusable = sum(int(v) for k, v in skipped.items() if k != OTHER_WINDOW_LABELS)
  return (f'SUMMARY monitoring: run {summary["run_id"]}; {len(summaries)} runs; verdicts '
          f'{verdicts_text(summaries)}; window {summary["num_examples"]} logged, '
          f'{summary["num_labeled"]} labelled ({int(skipped.get(OTHER_WINDOW_LABELS, 0))} labels '
          f'of other windows, {unusable} records or labels unusable); '
          f'{", ".join(versions) or "no version monitored"}')
