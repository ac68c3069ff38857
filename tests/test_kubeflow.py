"""Compiling for Kubeflow Pipelines v2 (`loopline compile`), our ExampleGen driver on KFP, and the
bad-input paths of `loopline compile` and `loopline submit`.

The compiled files are read back with KFP's own protos (kfp-pipeline-spec). The span-range
driver and the ExampleGen executor are run as the container commands the compiled spec names, on
an ExecutorInput built from the compiled task (as KFP's launcher would), on a small sample.
"""
import json
import os
import re
import socket
import subprocess
import sys

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from components.data_gate import spec as data_gate_spec
from loopline import cli
from metadata import connection as metadata_connection
from pipeline import kubeflow
from pipeline import training_pipeline
from pipeline.config import REPO_ROOT, PipelineConfig
from tests import import_layers
from tests.conftest import read_span, sample_spans, write_span

pytestmark = pytest.mark.timeout(600)

IMAGE = 'registry.example.com/loopline/pipeline:test'
ROOT = 'gs://loopline-test-bucket/loopline'
EXAMPLE_GEN = 'SpanRangeCsvExampleGen'
IN_PROCESS_BEAM = ('--direct_running_mode=in_memory', '--direct_num_workers=1')


def _config(**overrides):
  settings = dict(home=ROOT, data_root=kubeflow.IMAGE_DATA_ROOT,
                  schema_path=kubeflow.IMAGE_SCHEMA_PATH,
                  mysql=metadata_connection.parse_mysql_url(kubeflow.CLUSTER_MLMD_URL))
  settings.update(overrides)
  return PipelineConfig(**settings)


def _compile(out_dir, target, params=None, **overrides):
  return kubeflow.compile_pipeline(kubeflow.PIPELINES['training'], _config(**overrides), target,
                                   str(out_dir), IMAGE, params)


@pytest.fixture(scope='module')
def compiled(tmp_path_factory):
  """{target: (CompileResult, parsed spec or job)} with default settings."""
  out = tmp_path_factory.mktemp('kfp')
  results = {}
  for target in ('kfp', 'vertex'):
    result = _compile(out / target, target)
    results[target] = (result, kubeflow.load_pipeline_spec(result.path))
  return results


@pytest.fixture(scope='module')
def compiled_monitoring(tmp_path_factory):
  """{target: (CompileResult, parsed spec or job)} of the monitoring pipeline."""
  out = tmp_path_factory.mktemp('kfp-monitoring')
  return {target: (result, kubeflow.load_pipeline_spec(result.path)) for target, result in (
      (target, kubeflow.compile_pipeline(kubeflow.PIPELINES['monitoring'], _config(), target,
                                         str(out / target), IMAGE))
      for target in ('kfp', 'vertex'))}


def _as_pipeline_spec(spec_or_job):
  if isinstance(spec_or_job, pipeline_spec_pb2.PipelineJob):
    parsed = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(json_format.MessageToDict(spec_or_job.pipeline_spec), parsed)
    return parsed
  return spec_or_job


def _tfx_nodes(config=None):
  """{node id: upstream node ids} of the pipeline the local runner runs."""
  tfx_pipeline = training_pipeline.create_pipeline(config or _config())
  return {node.id: {up.id for up in node.upstream_nodes} for node in tfx_pipeline.components}


def _container(spec, task):
  """The task's container spec (a Struct), or None for a resolver task."""
  component = spec.components[spec.root.dag.tasks[task].component_ref.name]
  executor = spec.deployment_spec['executors'][component.executor_label]
  return executor['container'] if 'container' in executor else None


# --- the compiled spec ------------------------------------------------------------------------

def test_kfp_yaml_is_one_bare_pipeline_spec(compiled):
  result, spec = compiled['kfp']
  assert result.path.endswith(os.path.join('loopline-training', 'pipeline.yaml'))
  with open(result.path) as f:
    documents = list(yaml.safe_load_all(f))
  assert len(documents) == 1 and 'pipelineSpec' not in documents[0]
  strict = pipeline_spec_pb2.PipelineSpec()
  json_format.ParseDict(documents[0], strict)            # no unknown field
  assert strict == spec
  assert spec.pipeline_info.name == 'loopline-training'
  assert spec.schema_version == '2.1.0'


def test_every_component_with_the_image_and_dependencies_in_order(compiled):
  _, spec = compiled['kfp']
  nodes = _tfx_nodes()
  dropped = set(kubeflow.KFP_DROPPABLE_RESOLVERS)
  expected = {n: ups - dropped for n, ups in nodes.items() if n not in dropped}
  tasks = spec.root.dag.tasks
  assert set(tasks) == set(expected)
  for name, upstream in expected.items():
    assert set(tasks[name].dependent_tasks) == upstream, name
    container = _container(spec, name)
    assert container['image'] == IMAGE, name
  # A topological order exists, and the data gate comes before Transform (explicit dependency).
  order, done = [], set()
  while len(order) < len(tasks):
    ready = sorted(n for n in tasks if n not in done and set(tasks[n].dependent_tasks) <= done)
    assert ready, f'cycle among {set(tasks) - done}'
    order += ready
    done |= set(ready)
  assert order.index('DataGate') < order.index('Transform') < order.index('Trainer')
  assert order.index('Evaluator') < order.index('AtomicPusher')
  # Every parameter is typed (schema 2.1, what KFP 2's backend reads).
  for component in spec.components.values():
    for parameter in component.input_definitions.parameters.values():
      assert parameter.parameter_type != 0


def test_functions_by_dotted_path_and_beam_args_from_the_config(tmp_path):
  beam = ('--runner=FlinkRunner', '--flink_master=flink-jobmanager:8081', '--parallelism=4')
  result = _compile(tmp_path, 'kfp', beam_pipeline_args=beam)
  spec = kubeflow.load_pipeline_spec(result.path)
  constants = {name: value.runtime_value.constant.string_value
               for task in spec.root.dag.tasks.values()
               for name, value in task.inputs.parameters.items()}
  assert constants['preprocessing_fn'] == training_pipeline.PREPROCESSING_FN
  assert constants['run_fn'] == training_pipeline.RUN_FN
  assert constants['tuner_fn'] == training_pipeline.TUNER_FN
  assert 'module_file' not in constants and 'module_path' not in constants
  for task in spec.root.dag.tasks:
    args = list(_container(spec, task)['args'])
    assert args[-len(beam):] == list(beam), task
  serving = json.loads(constants['push_destination'])
  assert serving['filesystem']['base_directory'] == f'{ROOT}/serving/big_tipper'


def test_compiling_twice_gives_the_same_files(compiled, tmp_path):
  for target in ('kfp', 'vertex'):
    first, _ = compiled[target]
    second = _compile(tmp_path / target, target)
    with open(first.path) as a, open(second.path) as b:
      assert a.read() == b.read(), target


def test_runtime_parameters_round_trip(tmp_path):
  values = {'data_root': 'gs://other-bucket/spans', 'schema_file': 'gs://other-bucket/schema.pbtxt'}
  kfp_spec = kubeflow.load_pipeline_spec(_compile(tmp_path / 'k', 'kfp', values).path)
  parameters = kfp_spec.root.input_definitions.parameters
  assert {k: p.default_value.string_value for k, p in parameters.items()} == values
  tasks = kfp_spec.root.dag.tasks
  assert tasks[EXAMPLE_GEN].inputs.parameters['input_base'].component_input_parameter == (
      'data_root')
  assert tasks['ImportSchemaGen'].inputs.parameters[
      'schema_file'].component_input_parameter == 'schema_file'
  job = kubeflow.load_pipeline_spec(_compile(tmp_path / 'v', 'vertex', values).path)
  assert {k: v.string_value for k, v in job.runtime_config.parameter_values.items()} == values
  assert job.runtime_config.gcs_output_directory == f'{ROOT}/pipeline_root'


def test_defaults_are_the_configured_values(compiled):
  _, spec = compiled['kfp']
  parameters = spec.root.input_definitions.parameters
  assert parameters['data_root'].default_value.string_value == kubeflow.IMAGE_DATA_ROOT
  assert parameters['schema_file'].default_value.string_value == kubeflow.IMAGE_SCHEMA_PATH


def test_example_gen_uses_our_span_range_driver(compiled):
  for target in ('kfp', 'vertex'):
    _, spec = compiled[target]
    if target == 'vertex':
      spec = spec.pipeline_spec
      parsed = pipeline_spec_pb2.PipelineSpec()
      json_format.ParseDict(json_format.MessageToDict(spec), parsed)
      spec = parsed
    container = _container(spec, EXAMPLE_GEN)
    assert list(container['command']) == kubeflow.EXAMPLE_GEN_COMMAND
    assert list(container['lifecycle']['preCacheCheck']['command']) == (
        kubeflow.EXAMPLE_GEN_COMMAND)
    for task in spec.root.dag.tasks:
      if task != EXAMPLE_GEN and _container(spec, task) is not None:
        assert 'kfp_v2_driver' not in json_format.MessageToJson(_container(spec, task))
  _, kfp_spec = compiled['kfp']
  assert not kfp_spec.root.dag.tasks[EXAMPLE_GEN].caching_options.enable_cache
  assert kfp_spec.root.dag.tasks['Transform'].caching_options.enable_cache


def test_data_gate_report_type_is_importable_from_its_title(compiled):
  from tfx.utils import import_utils
  _, spec = compiled['kfp']
  schema = spec.components['DataGate'].output_definitions.artifacts['report'].artifact_type
  title = yaml.safe_load(schema.instance_schema)['title']
  assert import_utils.import_class_by_path(title) is data_gate_spec.DataGateReport
  consumer = spec.components['DataGate'].input_definitions.artifacts['anomalies'].artifact_type
  assert yaml.safe_load(consumer.instance_schema)['title'] == 'tfx.ExampleAnomalies'


def test_resolvers_vertex_keeps_them_kfp_leaves_out_the_baseline(compiled):
  _, kfp_spec = compiled['kfp']
  executors = kfp_spec.deployment_spec['executors']
  assert not [e for e in executors.values() if 'resolver' in e]
  evaluator = kfp_spec.components['Evaluator']
  assert 'baseline_model' not in evaluator.input_definitions.artifacts
  assert 'baseline_model' not in kfp_spec.root.dag.tasks['Evaluator'].inputs.artifacts
  assert 'baseline_model' not in json_format.MessageToJson(_container(kfp_spec, 'Evaluator'))
  result, _ = compiled['kfp']
  assert any('latest_blessed_model_resolver' in note for note in result.notes)

  _, job = compiled['vertex']
  executors = job.pipeline_spec['deploymentSpec']['executors']
  filters = [query['filter'] for e in executors.values() if 'resolver' in e
             for query in e['resolver']['outputArtifactQueries'].values()]
  assert any('metadata.blessed.number_value=1' in f for f in filters)
  tasks = job.pipeline_spec['root']['dag']['tasks']
  assert 'baseline_model' in tasks['Evaluator']['inputs']['artifacts']


def test_tuning_off_vertex_resolves_the_last_tuned_kfp_uses_defaults(tmp_path):
  job = kubeflow.load_pipeline_spec(_compile(tmp_path / 'v', 'vertex',
                                             enable_tuning=False).path)
  tasks = job.pipeline_spec['root']['dag']['tasks']
  assert 'Tuner' not in tasks
  assert any(name.startswith('latest_hyperparameters_resolver') for name in tasks)
  assert 'hyperparameters' in tasks['Trainer']['inputs']['artifacts']
  result = _compile(tmp_path / 'k', 'kfp', enable_tuning=False)
  spec = kubeflow.load_pipeline_spec(result.path)
  assert 'Tuner' not in spec.root.dag.tasks
  assert not [t for t in spec.root.dag.tasks if 'resolver' in t]
  assert 'hyperparameters' not in spec.root.dag.tasks['Trainer'].inputs.artifacts
  assert any("the Trainer uses the model's default hyperparameters" in n for n in result.notes)


def test_a_resolver_kfp_cannot_do_without_is_refused(tmp_path):
  from tfx import v1 as tfx
  def build(config, target, notes):
    tfx_pipeline = training_pipeline.create_pipeline(config)
    tfx_pipeline.components.append(tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        schema=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Schema)).with_id('last_schema'))
    return tfx_pipeline
  entry = kubeflow.PipelineEntry('custom', build)
  with pytest.raises(kubeflow.CompileError, match='last_schema resolves artifacts from ML '
                                                  'Metadata, which open-source KFP cannot run'):
    kubeflow.compile_pipeline(entry, _config(), 'kfp', str(tmp_path))
  assert not os.path.exists(tmp_path / 'loopline-training' / 'pipeline.yaml')


def test_every_task_runs_loopline_entrypoint_or_the_span_range_driver(compiled,
                                                                      compiled_monitoring):
  for spec_or_job in (compiled['kfp'][1], compiled['vertex'][1], compiled_monitoring['kfp'][1],
                      compiled_monitoring['vertex'][1]):
    spec = _as_pipeline_spec(spec_or_job)
    for task in spec.root.dag.tasks:
      container = _container(spec, task)
      if container is None:               # a resolver (Vertex AI runs them)
        continue
      expected = (kubeflow.EXAMPLE_GEN_COMMAND if task == EXAMPLE_GEN
                  else kubeflow.EXECUTOR_COMMAND)
      assert list(container['command']) == expected, task
    assert kubeflow.TFX_EXECUTOR_MODULE not in json_format.MessageToJson(spec)


def _artifact_type(title):
  return pipeline_spec_pb2.ArtifactTypeSchema(instance_schema=f'title: {title}\ntype: object\n')


def test_the_entrypoint_gives_untyped_input_artifacts_their_declared_type():
  """Open-source KFP hands upstream artifacts over with an empty schema; TFX's entrypoint cannot
  tell their class from it (tensorflow/tfx issue 7768), ours takes the declared type."""
  from components import kfp_v2_entrypoint
  from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils
  inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
  for key, title in (('examples', 'tfx.Examples'), ('schema', 'tfx.Schema')):
    inputs_spec.artifacts[key].artifact_type.CopyFrom(_artifact_type(title))
  executor_input = pipeline_spec_pb2.ExecutorInput()
  untyped = executor_input.inputs.artifacts['examples'].artifacts.add(name='7', uri='/x/examples')
  untyped.type.instance_schema = ''                      # as KFP's driver sends it
  executor_input.inputs.artifacts['schema'].artifacts.add(
      name='8', uri='/x/schema', type=_artifact_type('tfx.Schema'))
  with pytest.raises(AttributeError):                    # TFX 1.16 alone
    kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(executor_input.inputs.artifacts)
  assert kfp_v2_entrypoint.fill_input_types(executor_input, inputs_spec) == ['examples']
  parsed = kubeflow_v2_entrypoint_utils.parse_raw_artifact_dict(executor_input.inputs.artifacts)
  assert parsed['examples'][0].TYPE_NAME == 'Examples' and parsed['examples'][0].uri == (
      '/x/examples')
  assert parsed['schema'][0].TYPE_NAME == 'Schema'
  assert kfp_v2_entrypoint.fill_input_types(executor_input, inputs_spec) == []   # typed now
  stray = executor_input.inputs.artifacts['model'].artifacts.add(name='9', uri='/x/model')
  stray.type.schema_title = ''
  with pytest.raises(ValueError, match="input artifact 'model' has no type and the component "
                                       "declares no input 'model' \\(inputs: examples, schema\\)"):
    kfp_v2_entrypoint.fill_input_types(executor_input, inputs_spec)


def test_a_local_root_only_when_asked(tmp_path):
  """Local roots are refused (a cluster cannot see them) unless the caller runs the compiled spec
  on this machine (tests/kfp_local_launcher.py)."""
  config = _config(home=str(tmp_path / 'root'))
  with pytest.raises(kubeflow.CompileError, match='is a local path'):
    kubeflow.compile_pipeline(kubeflow.PIPELINES['training'], config, 'kfp', str(tmp_path))
  result = kubeflow.compile_pipeline(kubeflow.PIPELINES['training'], config, 'kfp',
                                     str(tmp_path), IMAGE, cluster_paths=False)
  assert result.pipeline_root == str(tmp_path / 'root' / 'pipeline_root')
  constants = {name: value.runtime_value.constant.string_value
               for task in kubeflow.load_pipeline_spec(result.path).root.dag.tasks.values()
               for name, value in task.inputs.parameters.items()}
  assert json.loads(constants['push_destination'])['filesystem']['base_directory'] == str(
      tmp_path / 'root' / 'serving' / 'big_tipper')


# --- our driver and executor, as the compiled container commands ------------------------------

def _executor_input(spec, data_root, out_dir):
  """The ExecutorInput KFP's launcher gives the ExampleGen task (constants + pipeline inputs)."""
  task = spec.root.dag.tasks[EXAMPLE_GEN]
  component = spec.components[task.component_ref.name]
  executor_input = pipeline_spec_pb2.ExecutorInput()
  for name, value in task.inputs.parameters.items():
    if value.HasField('component_input_parameter'):
      assert value.component_input_parameter == 'data_root'
      executor_input.inputs.parameter_values[name].string_value = data_root
    else:
      executor_input.inputs.parameter_values[name].CopyFrom(value.runtime_value.constant)
  output = executor_input.outputs.artifacts['examples'].artifacts.add()
  output.name = 'projects/loopline/artifacts/examples-1'
  output.uri = os.path.join(out_dir, 'examples')
  output.type.CopyFrom(component.output_definitions.artifacts['examples'].artifact_type)
  executor_input.outputs.output_file = os.path.join(out_dir, 'executor_output.json')
  return executor_input


def _command_line(command, args, executor_input):
  """The container's command line as KFP runs it; `python` is the image's, here this venv's."""
  command = list(command)
  assert command[0] == 'python'
  return [sys.executable] + command[1:] + [
      json_format.MessageToJson(executor_input) if a == '{{$}}' else a for a in args]


@pytest.fixture(scope='module')
def versioned_spans(tmp_path_factory):
  """Spans 1-2 of the sample; span 2 also has a corrected version-2 (fewer rows)."""
  root = sample_spans(str(tmp_path_factory.mktemp('spans') / 'spans'), every=8)
  header, rows = read_span(2, root)
  write_span(root, 2, header, rows[:50], version=2)
  return root


def test_driver_command_resolves_the_span_range(tmp_path, versioned_spans):
  result = _compile(tmp_path / 'c', 'kfp', first_span=1, last_span=2)
  spec = kubeflow.load_pipeline_spec(result.path)
  hook = _container(spec, EXAMPLE_GEN)['lifecycle']['preCacheCheck']
  executor_input = _executor_input(spec, versioned_spans, str(tmp_path))
  process = subprocess.run(_command_line(hook['command'], hook['args'], executor_input),
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  output = pipeline_spec_pb2.ExecutorOutput()
  with open(executor_input.outputs.output_file) as f:
    json_format.Parse(f.read(), output)
  values = output.parameter_values
  assert values['span'].number_value == 2
  assert values['version'].number_value == 2            # the corrected version wins
  input_config = json.loads(values['input_config'].string_value)
  assert input_config['splits'][0]['pattern'].split('\n') == [
      'span-1/version-1/*.csv', 'span-2/version-2/*.csv']
  sizes = [os.path.getsize(os.path.join(versioned_spans, f'span-{span}', f'version-{version}',
                                         'data.csv')) for span, version in ((1, 1), (2, 2))]
  lines = values['input_fingerprint'].string_value.split('\n')   # one per span, in order
  assert len(lines) == 2
  for size, line in zip(sizes, lines):
    assert line.startswith(f'split:single_split,num_files:1,total_bytes:{size},'), line
  metadata = output.artifacts['examples'].artifacts[0].metadata
  assert metadata['span_range'] == '1-2' and metadata['span_versions'] == '1:1,2:2'
  assert metadata['span'] == 2 and metadata['version'] == 2
  assert metadata['custom:span'] == 2 and metadata['input_fingerprint'] == (
      values['input_fingerprint'].string_value)


def test_driver_command_fails_on_a_missing_span(tmp_path, versioned_spans):
  spec = kubeflow.load_pipeline_spec(_compile(tmp_path / 'c', 'kfp', first_span=1,
                                              last_span=3).path)
  hook = _container(spec, EXAMPLE_GEN)['lifecycle']['preCacheCheck']
  executor_input = _executor_input(spec, versioned_spans, str(tmp_path))
  process = subprocess.run(_command_line(hook['command'], hook['args'], executor_input),
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert process.returncode != 0
  assert 'span 3 under' in process.stderr
  assert not os.path.exists(executor_input.outputs.output_file)


def test_executor_command_without_a_hook_resolves_then_writes_examples(tmp_path,
                                                                       versioned_spans):
  """Open-source KFP runs no pre_cache_check: the executor command does the driver's work."""
  spec = kubeflow.load_pipeline_spec(_compile(tmp_path / 'c', 'kfp', first_span=1, last_span=2,
                                              beam_pipeline_args=IN_PROCESS_BEAM).path)
  container = _container(spec, EXAMPLE_GEN)
  executor_input = _executor_input(spec, versioned_spans, str(tmp_path))
  process = subprocess.run(_command_line(container['command'], container['args'],
                                         executor_input),
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=500)
  assert process.returncode == 0, process.stderr[-3000:]
  examples_uri = executor_input.outputs.artifacts['examples'].artifacts[0].uri
  assert sorted(os.listdir(examples_uri)) == ['Split-eval', 'Split-train']
  import tensorflow as tf
  records = sum(1 for split in ('Split-train', 'Split-eval')
                for path in tf.io.gfile.glob(os.path.join(examples_uri, split, '*'))
                for _ in tf.data.TFRecordDataset(path, compression_type='GZIP'))
  _, span_1 = read_span(1, versioned_spans)
  assert records == len(span_1) + 50                     # span 1 v1 + span 2 v2, not v1
  output = pipeline_spec_pb2.ExecutorOutput()
  with open(executor_input.outputs.output_file) as f:
    json_format.Parse(f.read(), output)
  metadata = output.artifacts['examples'].artifacts[0].metadata
  assert metadata['span_range'] == '1-2' and metadata['span_versions'] == '1:1,2:2'
  assert metadata['span'] == 2 and metadata['input_fingerprint']


# --- bad input --------------------------------------------------------------------------------

# --- the monitoring pipeline ------------------------------------------------------------------

def test_monitoring_pipeline_compiles_with_a_runtime_baseline_resolver(compiled_monitoring):
  from pipeline import monitoring_pipeline
  local = monitoring_pipeline.create_monitoring_pipeline(_config(), for_cluster=True)
  expected = {node.id: {up.id for up in node.upstream_nodes} for node in local.components}
  for target in ('kfp', 'vertex'):
    result, compiled = compiled_monitoring[target]
    spec = _as_pipeline_spec(compiled)
    assert spec.pipeline_info.name == 'loopline-monitoring'
    assert result.pipeline_root == f'{ROOT}/monitoring_root'
    tasks = spec.root.dag.tasks
    assert {n: set(t.dependent_tasks) for n, t in tasks.items()} == expected, target
    # Nothing resolved at compile time: no Importer, no TFX Resolver, one runtime resolver that
    # feeds both the drift detector and the realized metrics.
    assert not any(n.startswith(('baseline_', 'latest')) for n in tasks)
    assert tasks['DriftDetector'].inputs.artifacts['baseline'].task_output_artifact == (
        pipeline_spec_pb2.TaskInputsSpec.InputArtifactSpec.TaskOutputArtifactSpec(
            producer_task='TrainingBaselineResolver', output_artifact_key='baseline'))
    assert 'baseline' in tasks['RealizedMetrics'].inputs.artifacts
    assert 'baseline_examples' not in tasks['DriftDetector'].inputs.artifacts
    for name in tasks:
      assert _container(spec, name)['image'] == IMAGE
    resolver = tasks['TrainingBaselineResolver'].inputs.parameters
    assert resolver['metadata_url'].runtime_value.constant.string_value == (
        kubeflow.CLUSTER_MLMD_SERVICE_URL)
    assert resolver['model_version'].component_input_parameter == 'model_version'
    log_gen = tasks['ServingLogExampleGen'].inputs.parameters
    assert log_gen['log_dir'].runtime_value.constant.string_value == f'{ROOT}/request_logs'
    assert log_gen['input_fingerprint'].runtime_value.constant.string_value == ''
  _, kfp_spec = compiled_monitoring['kfp']
  for never in ('ServingLogExampleGen', 'TrainingBaselineResolver'):
    assert not kfp_spec.root.dag.tasks[never].caching_options.enable_cache, never
  assert kfp_spec.root.dag.tasks['StatisticsGen'].caching_options.enable_cache


def test_monitoring_custom_artifact_types_are_importable_from_their_titles(compiled_monitoring):
  from tfx.utils import import_utils
  from components.baseline_resolver import spec as resolver_spec
  from components.drift_detector import spec as drift_spec
  from components.realized_metrics import spec as realized_spec
  _, spec = compiled_monitoring['kfp']
  for component, key, artifact_class in (
      ('TrainingBaselineResolver', 'baseline', resolver_spec.TrainingBaseline),
      ('DriftDetector', 'report', drift_spec.DriftReport),
      ('RealizedMetrics', 'realized_metrics', realized_spec.RealizedMetricsArtifact)):
    schema = spec.components[component].output_definitions.artifacts[key].artifact_type
    title = yaml.safe_load(schema.instance_schema)['title']
    assert import_utils.import_class_by_path(title) is artifact_class, component


def test_monitoring_model_version_parameter_round_trips(compiled_monitoring, tmp_path):
  _, spec = compiled_monitoring['kfp']
  parameters = spec.root.input_definitions.parameters
  assert parameters['model_version'].parameter_type == (
      pipeline_spec_pb2.ParameterType.NUMBER_INTEGER)
  assert parameters['model_version'].default_value.number_value == 0     # the latest push
  result = kubeflow.compile_pipeline(kubeflow.PIPELINES['monitoring'], _config(), 'kfp',
                                     str(tmp_path), IMAGE, {'model_version': '1795759493'})
  spec = kubeflow.load_pipeline_spec(result.path)
  assert spec.root.input_definitions.parameters[
      'model_version'].default_value.number_value == 1795759493
  job_result = kubeflow.compile_pipeline(kubeflow.PIPELINES['monitoring'], _config(), 'vertex',
                                         str(tmp_path / 'v'), IMAGE, {'model_version': '7'})
  job = kubeflow.load_pipeline_spec(job_result.path)
  assert job.runtime_config.parameter_values['model_version'].number_value == 7
  with pytest.raises(kubeflow.CompileError, match="model_version='latest' must be an integer"):
    kubeflow.compile_pipeline(kubeflow.PIPELINES['monitoring'], _config(), 'kfp',
                              str(tmp_path / 'bad'), IMAGE, {'model_version': 'latest'})


def test_compiling_the_monitoring_pipeline_twice_gives_the_same_files(compiled_monitoring,
                                                                      tmp_path):
  for target in ('kfp', 'vertex'):
    first, _ = compiled_monitoring[target]
    second = kubeflow.compile_pipeline(kubeflow.PIPELINES['monitoring'], _config(), target,
                                       str(tmp_path / target), IMAGE)
    with open(first.path) as a, open(second.path) as b:
      assert a.read() == b.read(), target


def _main(capsys, *argv):
  code = cli.main(list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_compile_command_writes_the_pipeline(tmp_path, capsys):
  code, out, err = _main(capsys, 'compile', '--target', 'kfp', '--root', 's3://bucket/ll',
                         '--image', IMAGE, '--out', str(tmp_path), '--param',
                         'data_root=s3://bucket/spans', '--beam-args-file',
                         os.path.join(REPO_ROOT, 'deploy', 'kubeflow', 'beam-flink.args'))
  assert code == 0, err
  path = tmp_path / 'loopline-training' / 'pipeline.yaml'
  assert f'loopline-training -> {path}' in out
  assert 'note: left out latest_blessed_model_resolver' in out
  spec = kubeflow.load_pipeline_spec(str(path))
  assert spec.root.input_definitions.parameters['data_root'].default_value.string_value == (
      's3://bucket/spans')
  assert '--runner=FlinkRunner' in list(_container(spec, 'Trainer')['args'])


def test_compile_all_writes_both_pipelines_each_with_its_own_parameters(tmp_path, capsys):
  code, out, err = _main(capsys, 'compile', '--target', 'kfp', '--root', ROOT, '--out',
                         str(tmp_path), '--param', 'schema_file=gs://b/schema.pbtxt', '--param',
                         'model_version=42', '--metadata-service', 'grpc://mlmd.example:9090')
  assert code == 0, err
  training = kubeflow.load_pipeline_spec(str(tmp_path / 'loopline-training' / 'pipeline.yaml'))
  monitoring = kubeflow.load_pipeline_spec(
      str(tmp_path / 'loopline-monitoring' / 'pipeline.yaml'))
  assert set(training.root.input_definitions.parameters) == {'data_root', 'schema_file'}
  assert set(monitoring.root.input_definitions.parameters) == {'model_version', 'schema_file'}
  for spec in (training, monitoring):
    assert spec.root.input_definitions.parameters[
        'schema_file'].default_value.string_value == 'gs://b/schema.pbtxt'
  assert monitoring.root.input_definitions.parameters[
      'model_version'].default_value.number_value == 42
  assert monitoring.root.dag.tasks['TrainingBaselineResolver'].inputs.parameters[
      'metadata_url'].runtime_value.constant.string_value == 'grpc://mlmd.example:9090'
  assert f'pipeline root {ROOT}/monitoring_root' in out


def test_the_resolver_can_read_ml_metadata_on_mysql_directly(tmp_path, capsys):
  """`--metadata-service mysql://...`: the cluster's MLMD database itself, for clusters whose
  tasks should not (or cannot) go through the gRPC service; tests/test_kfp_local_run.py runs it."""
  url = 'mysql://mlmd_reader:secret@mysql.kubeflow.svc.cluster.local:3306/metadb'
  code, out, err = _main(capsys, 'compile', '--target', 'kfp', '--root', ROOT, '--out',
                         str(tmp_path), '--pipeline', 'monitoring', '--metadata-service', url)
  assert code == 0, err
  assert f'ML Metadata at {url}' in out
  monitoring = kubeflow.load_pipeline_spec(
      str(tmp_path / 'loopline-monitoring' / 'pipeline.yaml'))
  assert monitoring.root.dag.tasks['TrainingBaselineResolver'].inputs.parameters[
      'metadata_url'].runtime_value.constant.string_value == url


def test_compile_writes_under_the_home_by_default(tmp_path, capsys):
  code, out, err = _main(capsys, '--home', str(tmp_path / 'home'), 'compile', '--target',
                         'vertex', '--root', ROOT, '--pipeline', 'training')
  assert code == 0, err
  path = tmp_path / 'home' / 'kubeflow' / 'vertex' / 'loopline-training' / 'pipeline.json'
  assert f'-> {path}' in out
  job = kubeflow.load_pipeline_spec(str(path))
  assert job.display_name == 'loopline-training'


@pytest.mark.parametrize('argv, message', [
    (['--target', 'argo'], "unknown target 'argo': choose one of kfp, vertex"),
    (['--target', 'kfp', '--root', '/tmp/local'], 'is a local path'),
    (['--target', 'kfp', '--root', ''], '--root is required'),
    (['--target', 'kfp', '--param', 'data_root'], "must look like NAME=VALUE"),
    (['--target', 'kfp', '--param', 'epochs=3'], "unknown runtime parameter 'epochs'"),
    (['--target', 'kfp', '--mysql-url', 'postgres://u@h/db'], 'must start with mysql://'),
    (['--target', 'kfp', '--mysql-url', 'mysql://u@h:port/db'], 'bad port'),
    (['--target', 'kfp', '--mysql-url', 'mysql://h/db'], 'has no user'),
    (['--target', 'kfp', '--mysql-url', 'mysql://u@h'], 'must name one database'),
    (['--target', 'kfp', '--mysql-url', 'mysql://u@h/db?ssl=1'], 'options'),
    (['--target', 'kfp', '--beam-args-file', '/nonexistent/beam.args'],
     "cannot read Beam args file '/nonexistent/beam.args'"),
    (['--target', 'kfp', '--min-auc', '1.5'], 'min_auc must be within'),
    (['--target', 'kfp', '--metadata-service', 'sqlite:///tmp/m.sqlite'], 'not a local file'),
    (['--target', 'kfp', '--metadata-service', 'grpc://mlmd'], 'must look like grpc://HOST:PORT'),
    (['--target', 'kfp', '--metadata-service', 'mysql://mysql.kubeflow/metadb'], 'has no user'),
    (['--target', 'kfp', '--pipeline', 'monitoring', '--param', 'data_root=gs://b/s'],
     "unknown runtime parameter 'data_root': monitoring takes model_version, schema_file"),
])
def test_compile_bad_input(tmp_path, capsys, argv, message):
  if '--root' not in argv:
    argv = argv + ['--root', ROOT]
  code, _, err = _main(capsys, 'compile', '--out', str(tmp_path), *argv)
  assert code == 2
  assert message in err
  assert not (tmp_path / 'loopline-training' / 'pipeline.yaml').exists()


def test_compile_to_an_unwritable_output(tmp_path, capsys):
  a_file = tmp_path / 'taken'
  a_file.write_text('not a directory')
  code, _, err = _main(capsys, 'compile', '--target', 'kfp', '--root', ROOT, '--out',
                       str(a_file))
  assert code == 2 and f"output directory '{a_file}' is a file" in err
  code, _, err = _main(capsys, 'compile', '--target', 'kfp', '--root', ROOT, '--out',
                       str(a_file / 'sub'))
  assert code == 2 and 'cannot create output directory' in err and 'Not a directory' in err
  with pytest.raises(kubeflow.CompileError, match='must be a local directory'):
    kubeflow.prepare_out_dir('gs://bucket/out')


def test_compile_refuses_local_pipeline_root(tmp_path):
  with pytest.raises(kubeflow.CompileError, match="pipeline root '/tmp/x/pipeline_root' is a "
                                                  "local path"):
    kubeflow.compile_pipeline(kubeflow.PIPELINES['training'], _config(home='/tmp/x'), 'kfp',
                              str(tmp_path))


def test_parse_mysql_url():
  connection = metadata_connection.parse_mysql_url('mysql://ml%40user:p%3Ass@db.example:3307/meta')
  assert (connection.host, connection.port, connection.database, connection.username,
          connection.password) == ('db.example', 3307, 'meta', 'ml@user', 'p:ss')
  assert metadata_connection.parse_mysql_url('mysql://root@mysql/metadb').port == 3306
  with pytest.raises(ValueError, match='has no host'):
    metadata_connection.parse_mysql_url('mysql://u@/db')


@pytest.fixture(scope='module')
def kfp_package(compiled):
  return compiled['kfp'][0].path


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.parametrize('extra, message', [
    (['--param', 'epochs=3'], 'unknown runtime parameter(s) epochs'),
    (['--param', '=3'], 'must look like NAME=VALUE'),
    (['--pipeline-root', '/local/root'], 'must be an object-storage URI'),
])
def test_submit_bad_input(capsys, kfp_package, extra, message):
  code, _, err = _main(capsys, 'submit', kfp_package, '--host', 'http://127.0.0.1:9', *extra)
  assert code == 2 and message in err


def test_submit_refuses_missing_and_vertex_packages(capsys, compiled, tmp_path):
  code, _, err = _main(capsys, 'submit', str(tmp_path / 'nope.yaml'), '--host', 'http://x')
  assert code == 2 and 'does not exist' in err
  code, _, err = _main(capsys, 'submit', compiled['vertex'][0].path, '--host', 'http://x')
  assert code == 2 and 'pipeline.json is for Vertex AI' in err


def test_submit_reports_an_unreachable_cluster(capsys, kfp_package):
  host = f'http://127.0.0.1:{_closed_port()}'
  code, _, err = _main(capsys, 'submit', kfp_package, '--host', host, '--param',
                       'data_root=gs://b/spans', '--pipeline-root', 'gs://b/root')
  assert code == 1
  assert f'the KFP API at {host} failed' in err
  assert 'Connection refused' in err or 'Max retries' in err


def test_the_image_holds_what_the_compiled_spec_runs(compiled):
  """Every module the spec names and the default data and schema are copied into the image."""
  with open(os.path.join(REPO_ROOT, 'Dockerfile')) as f:
    dockerfile = f.read()
  with open(os.path.join(REPO_ROOT, '.dockerignore')) as f:
    ignored = {line.strip() for line in f if line.strip() and not line.startswith('#')}
  assert re.search(r'^FROM gcr\.io/tfx-oss-public/tfx:1\.16\.0$', dockerfile, re.MULTILINE)
  workdir = re.search(r'^WORKDIR (\S+)$', dockerfile, re.MULTILINE).group(1)
  assert workdir == kubeflow.IMAGE_REPO_ROOT
  copied = set(re.findall(r'^COPY (\S+)/ \1/$', dockerfile, re.MULTILINE))
  assert '-c constraints.txt .' in dockerfile and 'pip check' in dockerfile
  _, spec = compiled['kfp']
  modules = set()
  for task in spec.root.dag.tasks:
    container = _container(spec, task)
    args = list(container['args'])
    modules.add(args[args.index('--executor_class_path') + 1])
    modules.add(list(container['command'])[2])
  ours = {m.split('.')[0] for m in modules if not m.startswith('tfx.')}
  assert ours == {'components'}
  # Every package of every layer (ARCHITECTURE.md): the executors import downwards from there.
  packages = {p for _, layer in import_layers.LAYERS for p in layer} - {'notebooks'}
  for top in ours | packages:
    assert top in copied and top not in ignored, top
  for path in (kubeflow.IMAGE_DATA_ROOT, kubeflow.IMAGE_SCHEMA_PATH):
    relative = os.path.relpath(path, workdir)
    assert any(relative == c or relative.startswith(c + '/') for c in copied), relative
    assert os.path.exists(os.path.join(REPO_ROOT, relative)), relative
