"""A compiled Kubeflow Pipelines v2 spec (`loopline compile --target kfp`) run on this machine, task
by task, through the very container commands it names: a TEST HARNESS, not an orchestrator.

    run = run_compiled_pipeline('…/loopline-training/pipeline.yaml', store, pipeline_root,
                                parameters={'data_root': …}, work_dir=…, say=print)

It stands in for the parts of KFP's v2 backend (2.0.x, backend/src/v2: driver/driver.go,
component/launcher_v2.go, metadata/client.go) that run one container task of a DAG:
- the root driver: the pipeline inputs (the spec's defaults, overridden by the run's parameters);
  the run in ML Metadata: a `system.Pipeline` context named after the pipeline, a
  `system.PipelineRun` context named by the run id (custom property `pipeline_root`, the run's
  root `<pipeline root>/<pipeline>/<run id>`) under it, and the root `system.DAGExecution`;
- the container driver, per task in topological order: inputs resolved from constants, pipeline
  inputs, upstream output parameters and upstream output artifacts READ BACK FROM ML METADATA
  (an upstream execution's OUTPUT event keyed by the output name), each input artifact handed
  over as the driver does (`RuntimeArtifact`: name = its MLMD id, uri, metadata = its properties
  with every number a number, and a type whose instance schema is empty: metadata/client.go
  leaves the schema of an upstream output empty); outputs provisioned under
  `<run root>/<task>/<output key>`, the ExecutorOutput file and output parameter files in a
  fresh per-task directory (the pod's /tmp/kfp_outputs); a `system.ContainerExecution` created
  RUNNING with `task_name`, `display_name`, `image`, `inputs`, `parent_dag_id` and an INPUT event
  per input artifact, keyed by the input name;
- the launcher: the placeholders of the args substituted (`{{$}}`, the ExecutorInput as JSON;
  `{{$.inputs.parameters['k']}}`, `{{$.inputs.artifacts['k'].uri}}`,
  `{{$.outputs.artifacts['k'].uri|path}}`, `{{$.outputs.parameters['k'].output_file}}`,
  `{{$.outputs.output_file}}`; any other fails the task), the container's command and args run
  as a subprocess, the ExecutorOutput it wrote merged into the provisioned output artifacts (uri,
  metadata) and taken for the output parameters (TFX's entrypoint writes them there), every
  output recorded as an artifact of the type named by its schema title with its
  metadata as custom properties (numbers as doubles, booleans as ints) and `display_name`, an
  OUTPUT event keyed by the output name, the output parameters in the execution's `outputs`, and
  the execution COMPLETE; FAILED on a non-zero exit, which fails the run.

What it does not check: the image (the command runs from this checkout with this venv's Python:
`python` is `sys.executable`, the working directory is the working tree as the image's WORKDIR
/loopline is the repository, a value under /loopline is mapped to the same path in the working
tree, and the environment is the Dockerfile's ENV; nothing else of the command or args is
changed), Kubernetes (pods, resources, volumes,
service accounts, retries; tasks run one at a time), object storage (the pipeline root is a
local directory: each output artifact's directory is created before its task, as a write to
object storage needs none; nothing is downloaded or uploaded; no store session info is recorded),
caching (every task runs; no cache fingerprint), the lifecycle `pre_cache_check` hook (open-source
KFP never runs it), and importer and resolver executors (refused with an error: none of Loopline's
pipelines compiles one for open-source KFP).
"""
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import uuid
from typing import Callable, Dict, List, Mapping, Optional

import yaml
from google.protobuf import json_format
from google.protobuf import struct_pb2
from kfp.pipeline_spec import pipeline_spec_pb2
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from metadata import layout
from pipeline import kubeflow
from pipeline.config import REPO_ROOT

CONTAINER_EXECUTION_TYPE = 'system.ContainerExecution'
DAG_EXECUTION_TYPE = 'system.DAGExecution'
EXECUTOR_OUTPUT_FILE = 'output_metadata.json'      # KFP: /tmp/kfp_outputs/output_metadata.json
_PLACEHOLDER = re.compile(r'\{\{\$(\.[^}]*)?\}\}')
_Event = metadata_store_pb2.Event


class TaskFailed(RuntimeError):
  """A task's container exited with an error (the run stops there, as on KFP)."""


@dataclasses.dataclass
class TaskRun:
  name: str
  execution_id: int
  seconds: float
  log_file: str
  outputs: Dict[str, metadata_store_pb2.Artifact]


@dataclasses.dataclass
class PipelineRun:
  pipeline_name: str
  run_id: str
  run_root: str
  tasks: Dict[str, TaskRun]


def topological_order(spec: pipeline_spec_pb2.PipelineSpec) -> List[str]:
  """The root DAG's tasks, each after every task it depends on or takes an input from (ties by
  name). ValueError on a cycle or an unknown upstream task."""
  tasks = spec.root.dag.tasks
  upstream = {}
  for name, task in tasks.items():
    needs = set(task.dependent_tasks)
    needs |= {a.task_output_artifact.producer_task for a in task.inputs.artifacts.values()
              if a.HasField('task_output_artifact')}
    needs |= {p.task_output_parameter.producer_task for p in task.inputs.parameters.values()
              if p.HasField('task_output_parameter')}
    unknown = needs - set(tasks)
    if unknown:
      raise ValueError(f'task {name} depends on unknown task(s) {sorted(unknown)}')
    upstream[name] = needs
  order: List[str] = []
  while len(order) < len(tasks):
    ready = sorted(n for n in tasks if n not in order and upstream[n] <= set(order))
    if not ready:
      raise ValueError(f'the DAG has a cycle among {sorted(set(tasks) - set(order))}')
    order += ready
  return order


def load_spec(path: str) -> pipeline_spec_pb2.PipelineSpec:
  spec = kubeflow.load_pipeline_spec(path)
  if not isinstance(spec, pipeline_spec_pb2.PipelineSpec):
    raise ValueError(f'{path} is not a bare PipelineSpec (compile with --target kfp)')
  return spec


def image_path_to_local(value: str) -> str:
  """A path in the image's repository (/loopline/...) as the same path in the working tree."""
  root = kubeflow.IMAGE_REPO_ROOT
  if value == root or value.startswith(root + '/'):
    return REPO_ROOT + value[len(root):]
  return value


# --- ML Metadata, as KFP's metadata client writes it -------------------------------------------

def _string(value: str) -> metadata_store_pb2.Value:
  return metadata_store_pb2.Value(string_value=value)


def _struct(values: Mapping[str, struct_pb2.Value]) -> metadata_store_pb2.Value:
  result = metadata_store_pb2.Value()
  result.struct_value.SetInParent()          # an empty struct too: MLMD aborts on an unset value
  for key, value in values.items():
    result.struct_value.fields[key].CopyFrom(value)
  return result


def mlmd_value(value: struct_pb2.Value) -> metadata_store_pb2.Value:
  """metadata/converter.go StructValueToMLMDValue: numbers as doubles, booleans as ints, lists
  and structs wrapped in a struct."""
  kind = value.WhichOneof('kind')
  if kind == 'string_value':
    return _string(value.string_value)
  if kind == 'number_value':
    return metadata_store_pb2.Value(double_value=value.number_value)
  if kind == 'bool_value':
    return metadata_store_pb2.Value(int_value=int(value.bool_value))
  if kind in ('list_value', 'struct_value'):
    return _struct({'list' if kind == 'list_value' else 'struct': value})
  raise ValueError(f'unsupported metadata value {value}')


def runtime_artifact(artifact: metadata_store_pb2.Artifact) -> pipeline_spec_pb2.RuntimeArtifact:
  """metadata/client.go toRuntimeArtifact + OutputArtifact.ToRuntimeArtifact: an upstream output
  as the driver hands it to the next task (the schema of its type left empty)."""
  result = pipeline_spec_pb2.RuntimeArtifact(name=str(artifact.id), uri=artifact.uri)
  for properties in (artifact.properties, artifact.custom_properties):
    for key, value in properties.items():
      kind = value.WhichOneof('value')
      target = result.metadata.fields[key]
      if kind == 'string_value':
        target.string_value = value.string_value
      elif kind in ('double_value', 'int_value'):
        target.number_value = float(getattr(value, kind))
      elif kind == 'struct_value':
        target.struct_value.CopyFrom(value.struct_value)
  result.type.instance_schema = ''
  return result


def _schema_title(artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> str:
  if artifact_type.WhichOneof('kind') == 'schema_title':
    return artifact_type.schema_title
  title = (yaml.safe_load(artifact_type.instance_schema) or {}).get('title')
  if not title:
    raise ValueError(f'artifact type without a title: {artifact_type}')
  return title


class KfpMetadata:
  """The run's records in ML Metadata, in KFP's layout (metadata/client.go)."""

  def __init__(self, store: metadata_store.MetadataStore, pipeline_name: str, run_id: str,
               run_root: str, parameters: Mapping[str, struct_pb2.Value]):
    self.store = store
    self.pipeline = self._context(layout.KFP_PIPELINE_CONTEXT_TYPE, pipeline_name, {})
    self.run = self._context(layout.KFP_RUN_CONTEXT_TYPE, run_id, {
        'namespace': _string('local'), 'resource_name': _string(f'run-{run_id}'),
        'pipeline_root': _string(run_root)})
    store.put_parent_contexts([metadata_store_pb2.ParentContext(
        child_id=self.run.id, parent_id=self.pipeline.id)])
    self.dag = self.create_execution(DAG_EXECUTION_TYPE, {
        'display_name': _string(pipeline_name), 'task_name': _string(''),
        'inputs': _struct(parameters)}, {})

  def _context(self, type_name: str, name: str, properties) -> metadata_store_pb2.Context:
    type_id = self.store.put_context_type(metadata_store_pb2.ContextType(name=type_name))
    existing = self.store.get_context_by_type_and_name(type_name, name)
    if existing is not None:
      return existing
    context = metadata_store_pb2.Context(type_id=type_id, name=name)
    for key, value in properties.items():
      context.custom_properties[key].CopyFrom(value)
    (context_id,) = self.store.put_contexts([context])
    return self.store.get_contexts_by_id([context_id])[0]

  def create_execution(self, type_name: str, properties,
                       inputs: Mapping[str, List[metadata_store_pb2.Artifact]]
                       ) -> metadata_store_pb2.Execution:
    type_id = self.store.put_execution_type(metadata_store_pb2.ExecutionType(name=type_name))
    execution = metadata_store_pb2.Execution(
        type_id=type_id, last_known_state=metadata_store_pb2.Execution.RUNNING)
    for key, value in properties.items():
      execution.custom_properties[key].CopyFrom(value)
    pairs = [(artifact, self._event(_Event.INPUT, key))
             for key, artifacts in inputs.items() for artifact in artifacts]
    execution_id, _, _ = self.store.put_execution(execution, pairs, [self.pipeline, self.run])
    return self.store.get_executions_by_id([execution_id])[0]

  @staticmethod
  def _event(kind, key: str) -> _Event:
    event = _Event(type=kind)
    event.path.steps.add().key = key
    return event

  def record_artifact(self, key: str, title: str,
                      artifact: pipeline_spec_pb2.RuntimeArtifact) -> metadata_store_pb2.Artifact:
    """RecordArtifact: typed by schema title, metadata as custom properties, LIVE."""
    type_id = self.store.put_artifact_type(metadata_store_pb2.ArtifactType(name=title))
    stored = metadata_store_pb2.Artifact(type_id=type_id, uri=artifact.uri,
                                         state=metadata_store_pb2.Artifact.LIVE)
    for name, value in artifact.metadata.fields.items():
      stored.custom_properties[name].CopyFrom(mlmd_value(value))
    if 'display_name' not in stored.custom_properties:
      stored.custom_properties['display_name'].CopyFrom(_string(key))
    (artifact_id,) = self.store.put_artifacts([stored])
    return self.store.get_artifacts_by_id([artifact_id])[0]

  def publish(self, execution: metadata_store_pb2.Execution, state,
              outputs: Mapping[str, metadata_store_pb2.Artifact] = (),
              parameters: Optional[Mapping[str, struct_pb2.Value]] = None) -> None:
    """PublishExecution: state, output parameters and an OUTPUT event per output artifact."""
    execution.last_known_state = state
    if parameters:
      execution.custom_properties['outputs'].CopyFrom(_struct(parameters))
    pairs = [(artifact, self._event(_Event.OUTPUT, key)) for key, artifact in dict(outputs).items()]
    self.store.put_execution(execution, pairs, [self.pipeline, self.run])

  def task_execution(self, task_name: str) -> metadata_store_pb2.Execution:
    """The run's execution of a task (GetExecutionsInDAG: by `task_name` within the run)."""
    found = [e for e in self.store.get_executions_by_context(self.run.id)
             if layout.task_name(e) == task_name]
    if len(found) != 1:
      raise ValueError(f'{len(found)} executions of task {task_name} in run {self.run.name}')
    return found[0]

  def output_artifact(self, task_name: str, key: str) -> metadata_store_pb2.Artifact:
    """GetOutputArtifactsByExecutionId: the producer's output named `key`, from its events."""
    execution = self.task_execution(task_name)
    ids = [e.artifact_id for e in self.store.get_events_by_execution_ids([execution.id])
           if e.type == _Event.OUTPUT and e.path.steps[0].key == key]
    if not ids:
      raise ValueError(f'task {task_name} has no output artifact {key!r}')
    return self.store.get_artifacts_by_id(ids)[0]


# --- one task: driver and launcher -------------------------------------------------------------

def _pipeline_inputs(spec, parameters: Mapping[str, object]) -> Dict[str, struct_pb2.Value]:
  definitions = spec.root.input_definitions.parameters
  unknown = sorted(set(parameters) - set(definitions))
  if unknown:
    raise ValueError(f'unknown pipeline parameter(s) {unknown}: the spec has {sorted(definitions)}')
  values = {}
  for name, definition in definitions.items():
    value = struct_pb2.Value()
    if name in parameters:
      json_format.ParseDict(parameters[name], value)
    elif definition.HasField('default_value'):
      value.CopyFrom(definition.default_value)
    else:
      raise ValueError(f'pipeline parameter {name!r} has no value and no default')
    values[name] = value
  return values


def _local_value(value: struct_pb2.Value) -> struct_pb2.Value:
  if value.WhichOneof('kind') == 'string_value':
    return struct_pb2.Value(string_value=image_path_to_local(value.string_value))
  return value


def _value_text(value: struct_pb2.Value) -> str:
  """converter.go PbValueToText: how a parameter is put into an argument."""
  kind = value.WhichOneof('kind')
  if kind == 'string_value':
    return value.string_value
  if kind == 'number_value':
    number = value.number_value
    return str(int(number)) if number.is_integer() else repr(number)
  if kind == 'bool_value':
    return 'true' if value.bool_value else 'false'
  return json.dumps(json_format.MessageToDict(value), separators=(',', ':'))


def _placeholder(executor_input: pipeline_spec_pb2.ExecutorInput, path: str) -> str:
  """One `{{$...}}` placeholder's value (launcher_v2.go getPlaceholders)."""
  if not path:
    return json_format.MessageToJson(executor_input, indent=None)
  if path == '.outputs.output_file':
    return executor_input.outputs.output_file
  match = re.fullmatch(r"\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](?:\.(\w+))?",
                       path)
  if match:
    side, kind, key, field = match.groups()
    if side == 'inputs' and kind == 'parameters' and field is None:
      if key in executor_input.inputs.parameter_values:
        return _value_text(executor_input.inputs.parameter_values[key])
    elif kind == 'artifacts' and field in ('uri', 'path'):
      artifacts = getattr(executor_input, side).artifacts
      if key in artifacts:
        return artifacts[key].artifacts[0].uri       # a local root: the path is the uri
    elif side == 'outputs' and kind == 'parameters' and field == 'output_file':
      if key in executor_input.outputs.parameters:
        return executor_input.outputs.parameters[key].output_file
  raise ValueError(f'unsupported or unresolvable placeholder {{{{${path}}}}}')


def command_line(container, executor_input: pipeline_spec_pb2.ExecutorInput) -> List[str]:
  """The container's command and args as the launcher runs them, on this machine."""
  command = [image_path_to_local(str(part)) for part in container['command']]
  if command[0] == 'python':
    command[0] = sys.executable
  args = container['args'] if 'args' in container else []
  return command + [_PLACEHOLDER.sub(lambda m: _placeholder(executor_input, m.group(1) or ''),
                                     image_path_to_local(str(arg))) for arg in args]


# What a pod inherits from this machine besides the image's ENV: a shell's basics, and the
# OpenBLAS settings some processors here need for correct results.
_HOST_ENV = ('PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR')


def container_env() -> Dict[str, str]:
  """A task's environment as in its pod: the image's ENV (the Dockerfile's), not this process's
  (which TensorFlow's imports changed: tensorflow_transform sets TF_USE_LEGACY_KERAS=1, which
  would turn a fresh process's `tf.keras` into Keras 2); the package on PYTHONPATH as the image
  installs it."""
  env = {k: v for k, v in os.environ.items() if k in _HOST_ENV or k.startswith('OPENBLAS_')}
  with open(os.path.join(REPO_ROOT, 'Dockerfile')) as f:
    for line in f:
      if line.startswith('ENV '):
        env.update(item.split('=', 1) for item in line.split()[1:])
  env['PYTHONPATH'] = REPO_ROOT
  return env


class _Run:
  """One run of a spec: the state the driver and launcher share across tasks."""

  def __init__(self, spec, mlmd: KfpMetadata, run_root: str, work_dir: str,
               pipeline_inputs: Mapping[str, struct_pb2.Value], say: Callable[[str], None]):
    self.spec, self.mlmd, self.run_root, self.work_dir = spec, mlmd, run_root, work_dir
    self.pipeline_inputs = pipeline_inputs
    self.output_parameters: Dict[str, Dict[str, struct_pb2.Value]] = {}
    self.say = say

  def _parameter(self, task_name: str, key: str, spec) -> struct_pb2.Value:
    if spec.HasField('runtime_value'):
      return spec.runtime_value.constant
    if spec.component_input_parameter:
      return self.pipeline_inputs[spec.component_input_parameter]
    if spec.HasField('task_output_parameter'):
      producer = spec.task_output_parameter
      return self.output_parameters[producer.producer_task][producer.output_parameter_key]
    raise ValueError(f'task {task_name}: input parameter {key!r} has no value the harness '
                     f'can resolve: {spec}')

  def executor_input(self, task_name: str, component, task_dir: str):
    """The driver's ExecutorInput, and the MLMD artifacts of its inputs."""
    task = self.spec.root.dag.tasks[task_name]
    executor_input = pipeline_spec_pb2.ExecutorInput()
    for key, parameter in task.inputs.parameters.items():
      executor_input.inputs.parameter_values[key].CopyFrom(
          _local_value(self._parameter(task_name, key, parameter)))
    inputs: Dict[str, List[metadata_store_pb2.Artifact]] = {}
    for key, artifact_spec in task.inputs.artifacts.items():
      if not artifact_spec.HasField('task_output_artifact'):
        raise ValueError(f'task {task_name}: input artifact {key!r} is not an upstream output')
      producer = artifact_spec.task_output_artifact
      artifact = self.mlmd.output_artifact(producer.producer_task, producer.output_artifact_key)
      inputs[key] = [artifact]
      executor_input.inputs.artifacts[key].artifacts.add().CopyFrom(runtime_artifact(artifact))
    for key, output in component.output_definitions.artifacts.items():
      uri = f'{self.run_root}/{task_name}/{key}'
      os.makedirs(uri)            # object storage needs no directory before a write; disks do
      executor_input.outputs.artifacts[key].artifacts.add(
          uri=uri, type=output.artifact_type, metadata=output.metadata)
    for key in component.output_definitions.parameters:
      executor_input.outputs.parameters[key].output_file = os.path.join(task_dir, 'outputs', key)
    executor_input.outputs.output_file = os.path.join(task_dir, EXECUTOR_OUTPUT_FILE)
    return executor_input, inputs

  def run_task(self, task_name: str) -> TaskRun:
    component = self.spec.components[self.spec.root.dag.tasks[task_name].component_ref.name]
    executor = self.spec.deployment_spec['executors'][component.executor_label]
    if 'container' not in executor:
      raise ValueError(f'task {task_name}: executor {component.executor_label} is not a '
                       f'container ({", ".join(executor.keys())}); the harness runs containers')
    container = executor['container']
    task_dir = os.path.join(self.work_dir, 'tasks', task_name)     # the pod's /tmp/kfp_outputs
    os.makedirs(task_dir)
    executor_input, inputs = self.executor_input(task_name, component, task_dir)
    execution = self.mlmd.create_execution(CONTAINER_EXECUTION_TYPE, {
        'display_name': _string(task_name), 'task_name': _string(task_name),
        'image': _string(str(container['image'])), 'pod_name': _string(f'local-{task_name}'),
        'pod_uid': _string(uuid.uuid4().hex), 'namespace': _string('local'),
        'inputs': _struct(executor_input.inputs.parameter_values),
        'parent_dag_id': metadata_store_pb2.Value(int_value=self.mlmd.dag.id)}, inputs)
    log_file = os.path.join(self.work_dir, 'logs', f'{task_name}.log')
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    self.say(f'  {task_name}: running')
    started = time.monotonic()
    command = command_line(container, executor_input)
    with open(log_file, 'w') as log:
      log.write(f'$ {" ".join(command)}\n')
      log.flush()
      process = subprocess.run(command, cwd=REPO_ROOT, env=container_env(), stdout=log,
                               stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    if process.returncode != 0:
      self.mlmd.publish(execution, metadata_store_pb2.Execution.FAILED)
      with open(log_file) as f:
        tail = f.read()[-4000:]
      raise TaskFailed(f'task {task_name} exited with {process.returncode} after '
                       f'{seconds:.0f}s (log: {log_file}):\n{tail}')
    outputs, parameters = self._collect_outputs(executor_input, component)
    self.output_parameters[task_name] = parameters
    self.mlmd.publish(execution, metadata_store_pb2.Execution.COMPLETE, outputs, parameters)
    self.say(f'  {task_name}: COMPLETE in {seconds:.0f}s')
    return TaskRun(task_name, execution.id, seconds, log_file, outputs)

  def _collect_outputs(self, executor_input, component):
    """The ExecutorOutput merged into the provisioned outputs, which are then recorded."""
    executor_output = pipeline_spec_pb2.ExecutorOutput()
    if os.path.exists(executor_input.outputs.output_file):
      with open(executor_input.outputs.output_file) as f:
        json_format.Parse(f.read(), executor_output, ignore_unknown_fields=True)
    outputs = {}
    for key, artifact_list in executor_input.outputs.artifacts.items():
      artifact = pipeline_spec_pb2.RuntimeArtifact()
      artifact.CopyFrom(artifact_list.artifacts[0])
      produced = executor_output.artifacts.get(key)
      if produced is not None and produced.artifacts:
        if produced.artifacts[0].uri:
          artifact.uri = produced.artifacts[0].uri
        for name, value in produced.artifacts[0].metadata.fields.items():
          artifact.metadata.fields[name].CopyFrom(value)
      title = _schema_title(component.output_definitions.artifacts[key].artifact_type)
      outputs[key] = self.mlmd.record_artifact(key, title, artifact)
    return outputs, dict(executor_output.parameter_values)


def run_compiled_pipeline(spec_path: str, store: metadata_store.MetadataStore,
                        pipeline_root: str, work_dir: str,
                        parameters: Optional[Mapping[str, object]] = None,
                        say: Callable[[str], None] = print) -> PipelineRun:
  """Runs every task of the compiled spec in topological order (see the module docstring);
  records the run in `store` in KFP's layout. Raises TaskFailed when a task fails."""
  spec = load_spec(spec_path)
  pipeline_name = spec.pipeline_info.name
  pipeline_inputs = _pipeline_inputs(spec, parameters or {})
  order = topological_order(spec)
  run_id = uuid.uuid4().hex
  run_root = f'{pipeline_root.rstrip("/")}/{pipeline_name}/{run_id}'
  mlmd = KfpMetadata(store, pipeline_name, run_id, run_root, pipeline_inputs)
  run = _Run(spec, mlmd, run_root, os.path.join(work_dir, run_id), pipeline_inputs, say)
  say(f'{pipeline_name}: run {run_id}, {len(order)} tasks: {", ".join(order)}')
  tasks: Dict[str, TaskRun] = {}
  try:
    for task_name in order:
      tasks[task_name] = run.run_task(task_name)
  except Exception:
    mlmd.publish(mlmd.dag, metadata_store_pb2.Execution.FAILED)
    raise
  mlmd.publish(mlmd.dag, metadata_store_pb2.Execution.COMPLETE)
  return PipelineRun(pipeline_name, run_id, run_root, tasks)
