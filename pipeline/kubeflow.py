"""Compiling Loopline's pipelines for Kubeflow Pipelines v2 (open-source KFP, or Vertex AI), and
submitting a compiled pipeline to a KFP cluster.

  loopline compile --target kfp --root gs://bucket/loopline --image REGISTRY/loopline:0.1.0
  loopline submit loopline_home/kubeflow/kfp/loopline-training/pipeline.yaml --host https://KFP

`compile_pipeline(entry, config, target, out_dir, image)` builds the pipeline from the same
`PipelineConfig` and `create_pipeline` as the local run, compiles it with TFX's
`KubeflowV2DagRunner` (pipeline spec schema 2.1: typed parameters, as KFP 2 expects), adapts the
spec, and writes `<out_dir>/<pipeline name>/pipeline.yaml` (`kfp`: a bare `PipelineSpec`, what a
KFP v2 cluster accepts) or `pipeline.json` (`vertex`: a Vertex AI `PipelineJob`). Compiling
touches neither the network nor the pipeline root: functions go by dotted path and the package is
in the image (Dockerfile). The adaptations, each a limit of TFX 1.16 on KFP v2:

- Every task's container command is `components.kfp_v2_entrypoint`, TFX's own KFP v2 executor
  entrypoint after one repair: open-source KFP's driver hands upstream artifacts over with an
  empty type schema, from which TFX's entrypoint cannot tell the artifact's class (every task
  with an input artifact would fail); the entrypoint takes the type from the component's input
  definitions, which the spec passes to it.
- SpanRangeCsvExampleGen: TFX wires the FileBasedExampleGen driver hook to its own single-span
  driver, which fails on a span range. The hook and the executor command point at
  `components.span_example_gen.kfp_v2_driver` instead; on open-source KFP, which never runs the
  hook, the executor command runs that driver first. As the span resolution then happens inside
  the task, KFP's cache would not see a new span version: ExampleGen's task is never cached on
  `kfp` (downstream tasks still are, keyed on its output).
- Custom artifact types (DataGate's report): TFX's compiler accepts only `module.Class` names
  and, at run time, imports the schema title as the artifact class. Types it would reject are
  compiled with their full import path as title (`components.data_gate.spec.DataGateReport`).
- Resolver nodes compile to a `ResolverSpec`, which Vertex AI runs and open-source KFP rejects
  ("resolver not implemented yet"). On `kfp`, `latest_blessed_model_resolver` is left out: the
  Evaluator then has no baseline and blesses on the absolute AUC threshold alone. With tuning
  off, the Trainer uses the model's defaults instead of the last tuned hyperparameters. Any other
  resolver is refused on `kfp` with an error.
- Runtime parameters (`data_root`, `schema_file`; the monitoring pipeline's `model_version`):
  pipeline inputs with the configured values as defaults in the spec itself (a bare PipelineSpec
  carries no runtime config), overridable per run (`loopline submit --param data_root=gs://...`).
- The monitoring pipeline is built `for_cluster` (pipeline/monitoring_pipeline.py): its baseline
  is resolved at run time by TrainingBaselineResolver from the cluster's ML Metadata gRPC service
  (`--metadata-service`, default CLUSTER_MLMD_SERVICE_URL), for the version given by the
  `model_version` parameter (0: the latest push); ServingLogExampleGen's task is never cached
  (the logs under the same path change between runs).

Adding a pipeline is one more entry in `PIPELINES`.
"""
import argparse
import dataclasses
import json
import os
import re
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

TARGETS = {'kfp': 'pipeline.yaml', 'vertex': 'pipeline.json'}
IMAGE_ENV_VAR = 'LOOPLINE_IMAGE'
DEFAULT_IMAGE = 'loopline-pipeline:0.1.0'
# Where the Dockerfile puts the repository inside the image (data/spans and schema/ included).
IMAGE_REPO_ROOT = '/loopline'
IMAGE_DATA_ROOT = f'{IMAGE_REPO_ROOT}/data/spans'
IMAGE_SCHEMA_PATH = f'{IMAGE_REPO_ROOT}/schema/schema.pbtxt'

TFX_EXECUTOR_MODULE = 'tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor'
EXECUTOR_COMMAND = ['python', '-m', 'components.kfp_v2_entrypoint']
EXAMPLE_GEN_DRIVER_MODULE = 'components.span_example_gen.kfp_v2_driver'
EXAMPLE_GEN_COMMAND = ['python', '-m', EXAMPLE_GEN_DRIVER_MODULE]
# Resolvers open-source KFP cannot run that the pipeline can do without, and what that costs.
KFP_DROPPABLE_RESOLVERS = {
    'latest_blessed_model_resolver':
        'the Evaluator has no baseline model: blessing uses the absolute AUC threshold only',
}
# Tasks whose result changes under the same parameters (new span versions, new logs, a new push):
# KFP's cache must never answer for them.
NEVER_CACHED_TASKS = ('SpanRangeCsvExampleGen', 'ServingLogExampleGen', 'TrainingBaselineResolver')
_TFX_TITLE_RE = re.compile(r'^[a-z][a-z0-9-_]{2,20}[.][A-Z][a-zA-Z0-9-_]{2,49}$')


class CompileError(ValueError):
  """Bad input to compile or submit: a clear message, exit code 2 on the command line."""


@dataclasses.dataclass(frozen=True)
class RuntimeParameter:
  """A pipeline input that sets one component's execution property.

  Its default is the config's `config_field`, or `default` when the config has no such field.
  """
  name: str
  node_id: str
  exec_property: str
  config_field: Optional[str] = None
  default: Any = None
  ptype: type = str


@dataclasses.dataclass(frozen=True)
class PipelineEntry:
  """One compilable pipeline: how to build it from the config, and its runtime parameters."""
  key: str
  build: Callable[..., Any]            # (PipelineConfig, target, notes) -> tfx.dsl.Pipeline
  runtime_parameters: Tuple[RuntimeParameter, ...] = ()


def _build_training(config, target: str, notes: List[str]):
  from pipeline import training_pipeline
  if target == 'kfp' and not config.enable_tuning:
    notes.append('tuning off: the Trainer uses the model\'s default hyperparameters '
                 '(open-source KFP cannot resolve the last tuned ones from ML Metadata)')
  return training_pipeline.create_pipeline(config,
                                           reuse_tuned_hyperparameters=target != 'kfp')


def _build_monitoring(config, target: str, notes: List[str]):
  from pipeline import monitoring_pipeline
  if not config.metadata_service_url:
    config = dataclasses.replace(config, metadata_service_url=CLUSTER_MLMD_SERVICE_URL)
  notes.append(f'baseline resolved at run time from ML Metadata at {config.metadata_service_url} '
               f'for the version of the `model_version` parameter (0: the latest push)')
  return monitoring_pipeline.create_monitoring_pipeline(config, for_cluster=True)


PIPELINES: Dict[str, PipelineEntry] = {
    'training': PipelineEntry('training', _build_training, (
        RuntimeParameter('data_root', 'SpanRangeCsvExampleGen', 'input_base', 'data_root'),
        RuntimeParameter('schema_file', 'ImportSchemaGen', 'schema_file', 'schema_path'),
    )),
    'monitoring': PipelineEntry('monitoring', _build_monitoring, (
        RuntimeParameter('model_version', 'TrainingBaselineResolver', 'model_version',
                         default=0, ptype=int),
        RuntimeParameter('schema_file', 'ImportSchemaGen', 'schema_file', 'schema_path'),
    )),
}


def _pb():
  from kfp.pipeline_spec import pipeline_spec_pb2
  return pipeline_spec_pb2


# --- checks -----------------------------------------------------------------------------------

def check_target(target: str) -> str:
  if target not in TARGETS:
    raise CompileError(f'unknown target {target!r}: choose one of {", ".join(sorted(TARGETS))}')
  return target


def check_cluster_paths(config) -> None:
  """Pipeline root and serving directory must be storage the cluster's pods can reach."""
  for what, path in (('pipeline root', config.pipeline_root),
                     ('serving directory', config.serving_model_dir)):
    if '://' not in path:
      raise CompileError(
          f'{what} {path!r} is a local path, which a cluster cannot see: give an object-storage '
          f'root (--root gs://bucket/loopline or s3://bucket/loopline)')


def prepare_out_dir(out_dir: str) -> str:
  """Creates the output directory; a clear error when it cannot be written."""
  if '://' in out_dir:
    raise CompileError(f'output directory {out_dir!r} must be a local directory')
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise CompileError(f'output directory {out_dir!r} is a file')
  try:
    os.makedirs(out_dir, exist_ok=True)
  except OSError as e:
    raise CompileError(f'cannot create output directory {out_dir!r}: {e.strerror}') from e
  if not os.access(out_dir, os.W_OK | os.X_OK):
    raise CompileError(f'output directory {out_dir!r} is not writable')
  return out_dir


# --- pipeline adaptations before compiling ----------------------------------------------------

def _nodes_by_id(tfx_pipeline) -> Dict[str, Any]:
  return {node.id: node for node in tfx_pipeline.components}


def attach_runtime_parameters(tfx_pipeline, entry: PipelineEntry, config) -> Dict[str, str]:
  """Turns the entry's execution properties into RuntimeParameters; returns {name: default}."""
  from tfx.orchestration import data_types
  nodes = _nodes_by_id(tfx_pipeline)
  defaults = {}
  for parameter in entry.runtime_parameters:
    node = nodes.get(parameter.node_id)
    if node is None or parameter.exec_property not in node.exec_properties:
      raise CompileError(f'runtime parameter {parameter.name!r}: pipeline {entry.key!r} has no '
                         f'{parameter.node_id}.{parameter.exec_property}')
    default = (getattr(config, parameter.config_field) if parameter.config_field
               else parameter.default)
    node.exec_properties[parameter.exec_property] = data_types.RuntimeParameter(
        name=parameter.name, ptype=parameter.ptype, default=default)
    defaults[parameter.name] = default
  return defaults


def kfp_droppable_resolvers(tfx_pipeline) -> List[str]:
  """The ids of the resolvers to leave out on open-source KFP.

  Raises CompileError for a resolver the pipeline cannot do without.
  """
  from tfx.dsl.components.common import resolver as resolver_lib
  ids = []
  for node in tfx_pipeline.components:
    if not isinstance(node, resolver_lib.Resolver):
      continue
    if node.id not in KFP_DROPPABLE_RESOLVERS:
      raise CompileError(
          f'{node.id} resolves artifacts from ML Metadata, which open-source KFP cannot run '
          f'("resolver not implemented yet"): compile for --target vertex, or without it '
          f'(e.g. with tuning on)')
    ids.append(node.id)
  return sorted(ids)


def check_optional_inputs(tfx_pipeline, dropped: Sequence[str]) -> None:
  """Every input left without a producer ('Node.key') must be optional in its component spec."""
  nodes = _nodes_by_id(tfx_pipeline)
  for item in dropped:
    node_id, _, key = item.partition('.')
    spec_inputs = getattr(getattr(nodes.get(node_id), 'spec', None), 'INPUTS', {})
    if key in spec_inputs and not spec_inputs[key].optional:
      raise CompileError(f'{node_id}.{key} needs a resolver, which open-source KFP cannot run')


class _CustomArtifactTitles:
  """While compiling: custom artifact types TFX would reject get their import path as title.

  TFX 1.16 accepts only `module.Class` names (one dot) and at run time imports the title as the
  artifact class (kubeflow_v2_entrypoint_utils._retrieve_class_path). A type that already
  passes is compiled exactly as TFX does.
  """

  def __enter__(self):
    import yaml
    from tfx.orchestration.kubeflow.v2 import compiler_utils
    from tfx.utils import name_utils
    self._module = compiler_utils
    self._original = original = compiler_utils.get_artifact_schema

    def get_artifact_schema(artifact_type):
      if (artifact_type in compiler_utils._SUPPORTED_STANDARD_ARTIFACT_TYPES  # pylint: disable=protected-access
          or _TFX_TITLE_RE.fullmatch(artifact_type.TYPE_NAME)):
        return original(artifact_type)
      # TFX's generic schema (artifact_types/Artifact.yaml), titled with the import path.
      with open(os.path.join(os.path.dirname(compiler_utils.__file__), 'artifact_types',
                             'Artifact.yaml')) as f:
        schema = yaml.safe_load(f)
      schema['title'] = name_utils.get_full_name(artifact_type)
      return yaml.dump(schema, sort_keys=False)

    compiler_utils.get_artifact_schema = get_artifact_schema
    return self

  def __exit__(self, *exc):
    self._module.get_artifact_schema = self._original
    return False


# --- spec post-processing ---------------------------------------------------------------------

def _task_component(spec, task_name: str):
  return spec.components[spec.root.dag.tasks[task_name].component_ref.name]


def _executor_container(spec, component):
  executors = spec.deployment_spec['executors']
  return executors[component.executor_label]['container']


def _inputs_spec_json(component) -> str:
  from google.protobuf import json_format
  return json_format.MessageToJson(component.input_definitions, sort_keys=True)


def _refresh_inputs_spec_arg(args: list, component) -> None:
  flag = '--json_serialized_inputs_spec_args'
  for i, arg in enumerate(args):
    if arg == flag and i + 1 < len(args):
      args[i + 1] = _inputs_spec_json(component)


def use_loopline_entrypoint(spec) -> None:
  """Every container that runs TFX's KFP v2 entrypoint runs components.kfp_v2_entrypoint."""
  for executor in spec.deployment_spec['executors'].values():
    if 'container' in executor and list(executor['container']['command']) == [
        'python', '-m', TFX_EXECUTOR_MODULE]:
      executor['container']['command'] = list(EXECUTOR_COMMAND)


def use_span_range_driver(spec, example_gen_task: str = 'SpanRangeCsvExampleGen') -> None:
  """Points ExampleGen's driver hook and executor command at our span-range driver."""
  if example_gen_task not in spec.root.dag.tasks:
    return
  container = _executor_container(spec, _task_component(spec, example_gen_task))
  container['command'] = list(EXAMPLE_GEN_COMMAND)
  lifecycle = container.get_or_create_struct('lifecycle')
  hook = lifecycle.get_or_create_struct('preCacheCheck')
  hook['command'] = list(EXAMPLE_GEN_COMMAND)


def drop_resolvers(spec, resolver_ids: Sequence[str]) -> List[str]:
  """Removes the resolvers' tasks (TFX compiles one per output) and their consumers' inputs."""
  removed = {name for name in spec.root.dag.tasks
             if any(name == r or name.startswith(f'{r}-') for r in resolver_ids)}
  for name in removed:
    component_name = spec.root.dag.tasks[name].component_ref.name
    executor_label = spec.components[component_name].executor_label
    del spec.root.dag.tasks[name]
    del spec.components[component_name]
    del spec.deployment_spec['executors'][executor_label]
  dropped = []
  for name, task in spec.root.dag.tasks.items():
    kept = [t for t in task.dependent_tasks if t not in removed]
    del task.dependent_tasks[:]
    task.dependent_tasks.extend(kept)
    for key in [k for k, a in task.inputs.artifacts.items()
                if a.task_output_artifact.producer_task in removed]:
      del task.inputs.artifacts[key]
      component = spec.components[task.component_ref.name]
      if key in component.input_definitions.artifacts:
        del component.input_definitions.artifacts[key]
      container = _executor_container(spec, component)
      _refresh_inputs_spec_arg(container['args'], component)
      dropped.append(f'{name}.{key}')
  return sorted(dropped)


def never_cache(spec, task_name: str) -> None:
  if task_name in spec.root.dag.tasks:
    spec.root.dag.tasks[task_name].caching_options.enable_cache = False


def set_parameter_defaults(spec, values: Mapping[str, Any]) -> None:
  """Runtime parameters carry their value in the spec (a bare PipelineSpec has no run config)."""
  parameters = spec.root.input_definitions.parameters
  for name, value in values.items():
    if name not in parameters:
      raise CompileError(f'unknown runtime parameter {name!r}: the pipeline has '
                         f'{", ".join(sorted(parameters)) or "none"}')
    if isinstance(value, int):
      parameters[name].default_value.number_value = value
    else:
      parameters[name].default_value.string_value = str(value)


# --- compile ----------------------------------------------------------------------------------

@dataclasses.dataclass
class CompileResult:
  path: str
  target: str
  pipeline_name: str
  pipeline_root: str
  image: str
  parameters: Dict[str, str]
  notes: List[str]


def compile_pipeline(entry: PipelineEntry, config, target: str, out_dir: str,
                     image: Optional[str] = None,
                     parameter_values: Optional[Mapping[str, str]] = None,
                     cluster_paths: bool = True) -> CompileResult:
  """Compiles one pipeline for `target`; writes and returns `<out_dir>/<name>/<file>`.

  `cluster_paths=False` lets the config's roots be local directories, which no cluster can see:
  only for running the compiled spec on this machine (tests/kfp_local_launcher.py).
  """
  check_target(target)
  if cluster_paths:
    check_cluster_paths(config)
  image = image or os.environ.get(IMAGE_ENV_VAR) or DEFAULT_IMAGE

  from google.protobuf import json_format
  from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2_runner

  notes: List[str] = []
  tfx_pipeline = entry.build(config, target, notes)
  pipeline_name = tfx_pipeline.pipeline_info.pipeline_name
  out_dir = prepare_out_dir(os.path.join(prepare_out_dir(out_dir), pipeline_name))
  defaults = attach_runtime_parameters(tfx_pipeline, entry, config)
  types = {p.name: p.ptype for p in entry.runtime_parameters}
  values = dict(defaults)
  for name, value in (parameter_values or {}).items():
    if name not in defaults:
      raise CompileError(f'unknown runtime parameter {name!r}: pipeline {entry.key!r} has '
                         f'{", ".join(sorted(defaults)) or "none"}')
    try:
      values[name] = types[name](value)
    except ValueError as e:
      raise CompileError(f'runtime parameter {name}={value!r} must be '
                         f'{"an integer" if types[name] is int else "text"}') from e
  drops = kfp_droppable_resolvers(tfx_pipeline) if target == 'kfp' else []

  runner = v2_runner.KubeflowV2DagRunner(
      config=v2_runner.KubeflowV2DagRunnerConfig(
          display_name=pipeline_name, default_image=image, use_pipeline_spec_2_1=True),
      output_dir=out_dir, output_filename=TARGETS[target])
  with _CustomArtifactTitles():
    job = runner.run(tfx_pipeline, parameter_values=values, write_out=False)

  spec = _pb().PipelineSpec()
  json_format.ParseDict(job['pipelineSpec'], spec)
  use_loopline_entrypoint(spec)
  use_span_range_driver(spec)
  if target == 'kfp':
    for task_name in NEVER_CACHED_TASKS:
      never_cache(spec, task_name)
    for resolver_id in drops:
      dropped = drop_resolvers(spec, [resolver_id])
      check_optional_inputs(tfx_pipeline, dropped)
      notes.append(f'left out {resolver_id} (open-source KFP runs no resolver): '
                   f'{KFP_DROPPABLE_RESOLVERS[resolver_id]} [{", ".join(dropped)}]')
  set_parameter_defaults(spec, values)

  path = os.path.join(out_dir, TARGETS[target])
  spec_dict = json_format.MessageToDict(spec)
  try:
    if target == 'kfp':
      write_pipeline_yaml(spec_dict, path)
    else:
      job['pipelineSpec'] = spec_dict
      with open(path, 'w') as f:
        json.dump(job, f, sort_keys=True, indent=2)
        f.write('\n')
  except OSError as e:
    raise CompileError(f'cannot write {path}: {e.strerror}') from e
  return CompileResult(path, target, pipeline_name, tfx_pipeline.pipeline_info.pipeline_root,
                       image, values, notes)


def write_pipeline_yaml(spec_dict: Dict[str, Any], path: str) -> None:
  """The bare PipelineSpec as one YAML document, keys sorted (what KFP v2 clusters accept)."""
  import yaml
  header = (f'# PIPELINE DEFINITION\n# Name: {spec_dict["pipelineInfo"]["name"]}\n'
            f'# Compiled by `loopline compile --target kfp` (TFX KubeflowV2DagRunner).\n')
  with open(path, 'w') as f:
    f.write(header)
    yaml.safe_dump(spec_dict, f, sort_keys=True)


def load_pipeline_spec(path: str):
  """A compiled file back as KFP's own PipelineSpec proto (YAML) or PipelineJob (JSON)."""
  import yaml
  from google.protobuf import json_format
  with open(path) as f:
    if path.endswith('.json'):
      job = _pb().PipelineJob()
      json_format.ParseDict(json.load(f), job)
      return job
    spec = _pb().PipelineSpec()
    json_format.ParseDict(yaml.safe_load(f), spec)
    return spec


# --- configuration from the command line ------------------------------------------------------

# ML Metadata of a Kubeflow Pipelines install: MySQL service `mysql` in namespace `kubeflow`,
# database `metadb`. The compiled spec does not use it (KFP's launcher records to the cluster's
# MLMD itself); the config names it so that the pipeline is built with no local SQLite file.
CLUSTER_MLMD_URL = 'mysql://root@mysql.kubeflow.svc.cluster.local:3306/metadb'
# The same store as KFP's own tasks reach it: the ML Metadata gRPC service of a KFP install. The
# monitoring pipeline's TrainingBaselineResolver reads lineage from it at run time.
CLUSTER_MLMD_SERVICE_URL = 'grpc://metadata-grpc-service.kubeflow:8080'


def _read_args_file(path: str) -> List[str]:
  try:
    with open(path) as f:
      lines = [line.strip() for line in f]
  except OSError as e:
    raise CompileError(f'cannot read Beam args file {path!r}: {e.strerror}') from e
  return [line for line in lines if line and not line.startswith('#')]


def parse_params(items: Optional[Sequence[str]]) -> Dict[str, str]:
  params = {}
  for item in items or ():
    name, sep, value = item.partition('=')
    if not sep or not name.strip():
      raise CompileError(f'parameter {item!r} must look like NAME=VALUE')
    params[name.strip()] = value
  return params


def config_from_args(args):
  """The same PipelineConfig as `loopline train`, rooted in object storage."""
  from pipeline.config import PipelineConfig
  root = args.root or os.environ.get('LOOPLINE_KFP_ROOT')
  if not root:
    raise CompileError('--root is required: the object-storage root of the pipeline root and '
                       'the serving directory (gs://bucket/loopline, s3://bucket/loopline)')
  if '://' not in root:
    raise CompileError(f'--root {root!r} is a local path, which a cluster cannot see: give an '
                       f'object-storage URI (gs://bucket/loopline, s3://bucket/loopline)')
  overrides: Dict[str, Any] = dict(data_root=args.data_root or IMAGE_DATA_ROOT,
                                   schema_path=args.schema or IMAGE_SCHEMA_PATH)
  if args.spans:
    overrides['first_span'], overrides['last_span'] = args.spans
  if args.no_tuning:
    overrides['enable_tuning'] = False
  for option in ('max_trials', 'train_steps', 'min_auc'):
    if getattr(args, option) is not None:
      overrides[option] = getattr(args, option)
  beam_args = list(args.beam_arg or [])
  if args.beam_args_file:
    beam_args = _read_args_file(args.beam_args_file) + beam_args
  if beam_args:
    overrides['beam_pipeline_args'] = tuple(beam_args)
  from metadata import connection as metadata_connection
  try:
    overrides['mysql'] = metadata_connection.parse_mysql_url(args.mysql_url or CLUSTER_MLMD_URL)
  except ValueError as e:
    raise CompileError(str(e)) from e
  service = args.metadata_service or CLUSTER_MLMD_SERVICE_URL
  if not service.startswith(('grpc://', 'mysql://')):
    raise CompileError(f'--metadata-service {service!r}: the cluster\'s tasks reach ML Metadata '
                       f'through grpc://HOST:PORT (or mysql://USER@HOST/DB), not a local file')
  try:
    metadata_connection.connection_from_url(service)
  except ValueError as e:
    raise CompileError(str(e)) from e
  overrides['metadata_service_url'] = service
  try:
    return PipelineConfig(home=root.rstrip('/'), **overrides)
  except ValueError as e:
    raise CompileError(str(e)) from e


def _cmd_compile(args) -> int:
  try:
    config = config_from_args(args)
    check_target(args.target)
    keys = sorted(PIPELINES) if args.pipeline == 'all' else [args.pipeline]
    params = parse_params(args.param)
    known = {p.name for key in keys for p in PIPELINES[key].runtime_parameters}
    unknown = sorted(set(params) - known)
    if unknown:
      raise CompileError(f'unknown runtime parameter {", ".join(map(repr, unknown))}: '
                         f'{" and ".join(keys)} {"take" if len(keys) > 1 else "takes"} '
                         f'{", ".join(sorted(known))}')
    out = args.out
    if not out:
      from core import home as home_lib
      out = os.path.join(home_lib.resolve_home(args.home), 'kubeflow', args.target)
    for key in keys:
      own = {p.name for p in PIPELINES[key].runtime_parameters}
      result = compile_pipeline(PIPELINES[key], config, args.target, out, args.image,
                                {k: v for k, v in params.items() if k in own})
      print(f'{result.pipeline_name} -> {result.path}')
      print(f'  target {result.target}, image {result.image}')
      print(f'  pipeline root {result.pipeline_root}, serving {config.serving_model_dir}')
      print('  runtime parameters: ' + ', '.join(f'{k}={v}' for k, v in
                                                 sorted(result.parameters.items())))
      for note in result.notes:
        print(f'  note: {note}')
  except CompileError as e:
    print(f'loopline compile: error: {e}', file=sys.stderr)
    return 2
  return 0


# --- submit -----------------------------------------------------------------------------------

def submit(package: str, host: str, namespace: Optional[str], experiment: str,
           pipeline_root: Optional[str], params: Mapping[str, str],
           run_name: Optional[str] = None):
  """Uploads a compiled pipeline.yaml and starts a run on a KFP v2 cluster (kfp.Client)."""
  if not os.path.isfile(package):
    raise CompileError(f'pipeline package {package!r} does not exist')
  if not package.endswith(('.yaml', '.yml')):
    raise CompileError(f'{package!r} is not a KFP pipeline package: a KFP cluster takes the '
                       f'pipeline.yaml of `loopline compile --target kfp` (pipeline.json is for '
                       f'Vertex AI)')
  spec = load_pipeline_spec(package)
  known = set(spec.root.input_definitions.parameters)
  unknown = sorted(set(params) - known)
  if unknown:
    raise CompileError(f'unknown runtime parameter(s) {", ".join(unknown)}: the pipeline has '
                       f'{", ".join(sorted(known)) or "none"}')
  if pipeline_root is not None and '://' not in pipeline_root:
    raise CompileError(f'--pipeline-root {pipeline_root!r} must be an object-storage URI')
  import kfp
  client = kfp.Client(host=host, namespace=namespace or 'kubeflow')
  return client.create_run_from_pipeline_package(
      package, arguments=dict(params), run_name=run_name, experiment_name=experiment,
      namespace=namespace, pipeline_root=pipeline_root)


def _cmd_submit(args) -> int:
  try:
    params = parse_params(args.param)
    result = submit(args.package, args.host, args.namespace, args.experiment,
                    args.pipeline_root, params, args.run_name)
  except CompileError as e:
    print(f'loopline submit: error: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # pylint: disable=broad-except  # the cluster's answer, as it is
    print(f'loopline submit: the KFP API at {args.host} failed: {type(e).__name__}: {e}',
          file=sys.stderr)
    return 1
  print(f'run {result.run_id} started on {args.host} (experiment {args.experiment})')
  return 0


def register(subparsers) -> None:
  """`loopline compile` and `loopline submit`."""
  from core import spans as spans_lib
  compile_parser = subparsers.add_parser(
      'compile', help='compile the pipelines for Kubeflow Pipelines v2 (KubeflowV2DagRunner)')
  compile_parser.add_argument('--target', required=True,
                              help='kfp: pipeline.yaml for open-source KFP v2; '
                                   'vertex: pipeline.json (PipelineJob) for Vertex AI')
  compile_parser.add_argument('--pipeline', default='all', choices=sorted(PIPELINES) + ['all'])
  compile_parser.add_argument('--out', help='output directory (default <home>/kubeflow/<target>); '
                                             'one subdirectory per pipeline')
  compile_parser.add_argument('--root', help='object-storage root: pipeline_root/ and serving/ '
                                             'under it (gs://..., s3://...)')
  compile_parser.add_argument('--image', help=f'pipeline image (default ${IMAGE_ENV_VAR} or '
                                              f'{DEFAULT_IMAGE})')
  compile_parser.add_argument('--data-root', help=f'span data (default {IMAGE_DATA_ROOT}, '
                                                  f'the spans in the image)')
  compile_parser.add_argument('--schema', help=f'curated schema (default {IMAGE_SCHEMA_PATH})')
  compile_parser.add_argument('--spans', type=spans_lib.parse_span_range)
  compile_parser.add_argument('--no-tuning', action='store_true')
  compile_parser.add_argument('--max-trials', type=int)
  compile_parser.add_argument('--train-steps', type=int)
  compile_parser.add_argument('--min-auc', type=float)
  compile_parser.add_argument('--beam-arg', action='append',
                              help='Beam pipeline argument (repeatable), e.g. '
                                   '--beam-arg=--runner=DataflowRunner')
  compile_parser.add_argument('--beam-args-file',
                              help='Beam arguments, one a line (deploy/kubeflow/beam-*.args)')
  compile_parser.add_argument('--mysql-url', help=f'ML Metadata of the cluster (default '
                                                  f'{CLUSTER_MLMD_URL})')
  compile_parser.add_argument('--metadata-service',
                              help=f'ML Metadata as the monitoring pipeline\'s tasks reach it: '
                                   f'its gRPC service (default {CLUSTER_MLMD_SERVICE_URL}) or its '
                                   f'MySQL database, mysql://USER:PASSWORD@HOST:PORT/DB (a '
                                   f'SELECT-only user: the URL is written into the spec)')
  compile_parser.add_argument('--param', action='append', metavar='NAME=VALUE',
                              help='runtime parameter default (training: data_root, schema_file; '
                                   'monitoring: model_version, schema_file)')
  compile_parser.set_defaults(func=_cmd_compile)

  submit_parser = subparsers.add_parser(
      'submit', help='upload a compiled pipeline.yaml and start a run (kfp.Client)')
  submit_parser.add_argument('package', help='pipeline.yaml from `loopline compile --target kfp`')
  submit_parser.add_argument('--host', required=True, help='KFP API endpoint')
  submit_parser.add_argument('--namespace', help='Kubeflow namespace (multi-user clusters)')
  submit_parser.add_argument('--experiment', default='loopline')
  submit_parser.add_argument('--pipeline-root', help='object-storage pipeline root of the run')
  submit_parser.add_argument('--run-name')
  submit_parser.add_argument('--param', action='append', metavar='NAME=VALUE',
                             help='runtime parameter value for this run')
  submit_parser.set_defaults(func=_cmd_submit)
