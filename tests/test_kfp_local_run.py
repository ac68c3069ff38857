"""The Kubeflow route executed, not only compiled: both pipelines compiled by `loopline compile
--target kfp` run task by task through their own container commands (tests/kfp_local_launcher.py,
a stand-in for KFP's driver and launcher), with ML Metadata in KFP's layout on the session's
MariaDB.

The training pipeline runs on the sample of `trained_home` with the same quick settings, so its
artifacts are compared with that local run's; the pushed version is staged and served, a window
of replayed traffic with its ground truth is monitored by the compiled monitoring pipeline, whose
TrainingBaselineResolver walks the training run's lineage in MySQL with the SELECT-only user
(`--metadata-service mysql://...`: no ML Metadata gRPC server can run here), and by the local
monitoring pipeline on the same window: same verdict, same realized metrics. The registry, `loopline
lineage` and the notebooks read it all back with the SELECT-only user.
"""
import dataclasses
import json
import os

import pytest
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2

from components.baseline_resolver import manifest as manifest_lib
from loopline import cli
from metadata import connection as metadata_connection
from metadata import layout
from metadata import lineage
from metadata import queries as mq
from pipeline import kubeflow
from pipeline import loop
from pipeline import monitoring_run
from pipeline.config import PipelineConfig
from tests import kfp_local_launcher as launcher
from tests.conftest import read_span, reader_url
from tests.test_notebooks import execute, summary_line

pytestmark = pytest.mark.timeout(2400)

DATABASE = 'loopline_kfp'
IMAGE = 'registry.example.com/loopline/pipeline:local-run'
MONITORED_ROWS = 200


def _stats(uri, split):
  return tfdv.load_stats_binary(os.path.join(uri, f'Split-{split}', 'FeatureStats.pb'))


# --- the harness's own pieces -------------------------------------------------------------------

def _spec(tasks):
  """A PipelineSpec whose root DAG has `tasks`: {name: [upstream task names]}."""
  spec = launcher.pipeline_spec_pb2.PipelineSpec()
  for name, upstream in tasks.items():
    task = spec.root.dag.tasks[name]
    task.dependent_tasks.extend(upstream[:1])
    for producer in upstream[1:]:                      # an input is a dependency too
      task.inputs.artifacts[producer].task_output_artifact.producer_task = producer
  return spec


def test_tasks_run_in_topological_order_and_a_broken_dag_is_named():
  assert launcher.topological_order(_spec({'c': ['a', 'b'], 'b': ['a'], 'a': [], 'd': []})) == [
      'a', 'd', 'b', 'c']
  with pytest.raises(ValueError, match=r"the DAG has a cycle among \['x', 'y'\]"):
    launcher.topological_order(_spec({'x': ['y'], 'y': ['x'], 'a': []}))
  with pytest.raises(ValueError, match=r"task b depends on unknown task\(s\) \['gone'\]"):
    launcher.topological_order(_spec({'b': ['gone']}))


def test_the_launchers_placeholders_and_the_images_paths():
  from google.protobuf import struct_pb2
  executor_input = launcher.pipeline_spec_pb2.ExecutorInput()
  executor_input.inputs.parameter_values['steps'].number_value = 300
  executor_input.inputs.parameter_values['name'].string_value = 'big tipper'
  executor_input.inputs.artifacts['examples'].artifacts.add(uri='/root/run/Gen/examples')
  executor_input.outputs.artifacts['model'].artifacts.add(uri='/root/run/Trainer/model')
  executor_input.outputs.parameters['auc'].output_file = '/tmp/task/outputs/auc'
  executor_input.outputs.output_file = '/tmp/task/output_metadata.json'
  container = struct_pb2.Struct()
  container['command'] = ['python', '-m', 'components.kfp_v2_entrypoint']
  container['args'] = [
      '{{$}}', "--steps={{$.inputs.parameters['steps']}}", "{{$.inputs.parameters['name']}}",
      "{{$.inputs.artifacts['examples'].uri}}", "{{$.outputs.artifacts['model'].path}}",
      "{{$.outputs.parameters['auc'].output_file}}", '{{$.outputs.output_file}}',
      '/loopline/schema/schema.pbtxt', '--beam_arg=/loopline-other']
  command = launcher.command_line(container, executor_input)
  assert command[:3] == [launcher.sys.executable, '-m', 'components.kfp_v2_entrypoint']
  parsed = launcher.pipeline_spec_pb2.ExecutorInput()
  launcher.json_format.Parse(command[3], parsed)
  assert parsed == executor_input
  assert command[4:] == [
      '--steps=300', 'big tipper', '/root/run/Gen/examples', '/root/run/Trainer/model',
      '/tmp/task/outputs/auc', '/tmp/task/output_metadata.json',
      os.path.join(launcher.REPO_ROOT, 'schema', 'schema.pbtxt'), '--beam_arg=/loopline-other']
  for unknown in ("{{$.inputs.parameters['missing']}}", '{{$.pipeline_job_name}}'):
    container['args'] = [unknown]
    with pytest.raises(ValueError, match='unsupported or unresolvable placeholder'):
      launcher.command_line(container, executor_input)


def test_a_tasks_environment_is_the_images_not_this_processs(monkeypatch):
  monkeypatch.setenv('TF_USE_LEGACY_KERAS', '1')       # what importing TFX here leaves behind
  env = launcher.container_env()
  assert 'TF_USE_LEGACY_KERAS' not in env
  assert env['TF_CPP_MIN_LOG_LEVEL'] == '2' and env['PYTHONUNBUFFERED'] == '1'   # Dockerfile
  assert env['PYTHONPATH'] == launcher.REPO_ROOT and env['PATH'] == os.environ['PATH']


def test_an_executor_the_harness_does_not_run_fails_the_run_by_name(tmp_path):
  """Importer and resolver executors are refused, not skipped: the run is recorded FAILED."""
  from google.protobuf import json_format as json_format_lib
  spec = _spec({'load_schema': []})
  spec.pipeline_info.name = 'tiny'
  spec.root.dag.tasks['load_schema'].component_ref.name = 'comp-load'
  spec.components['comp-load'].executor_label = 'exec-load'
  spec.deployment_spec['executors'] = {'exec-load': {'importer': {'artifactUri': {}}}}
  path = str(tmp_path / 'pipeline.yaml')
  kubeflow.write_pipeline_yaml(json_format_lib.MessageToDict(spec), path)
  connection = metadata_store_pb2.ConnectionConfig()
  connection.sqlite.filename_uri = str(tmp_path / 'metadata.sqlite')
  store = metadata_connection.open_store(connection)
  with pytest.raises(ValueError, match='task load_schema: executor exec-load is not a container '
                                       r'\(importer\); the harness runs containers'):
    launcher.run_compiled_pipeline(path, store, str(tmp_path / 'root'), str(tmp_path / 'work'),
                                   say=lambda _: None)
  (dag,) = store.get_executions()
  assert dag.last_known_state == metadata_store_pb2.Execution.FAILED


# --- both pipelines through the harness -----------------------------------------------------------

@pytest.fixture(scope='module')
def kfp(trained_home, mariadb_url, tmp_path_factory):
  """Both pipelines compiled for open-source KFP with a local root, and the training pipeline run
  through the harness on `trained_home`'s sample with its settings."""
  local_config, _ = trained_home
  base = tmp_path_factory.mktemp('kfp_local')
  writer = metadata_connection.parse_mysql_url(f'{mariadb_url}/{DATABASE}')
  # As `loopline compile --target kfp` builds it (config_from_args), rooted in a local directory;
  # the span data and the schema are the image's, which the harness maps to the working tree.
  config = dataclasses.replace(
      local_config, home=str(base / 'root'), data_root=kubeflow.IMAGE_DATA_ROOT,
      schema_path=kubeflow.IMAGE_SCHEMA_PATH, mysql=writer,
      metadata_service_url=reader_url(mariadb_url, DATABASE))
  compiled = {key: kubeflow.compile_pipeline(kubeflow.PIPELINES[key], config, 'kfp',
                                             str(base / 'compiled'), IMAGE, cluster_paths=False)
              for key in ('training', 'monitoring')}
  store = metadata_connection.open_pipeline_store(config)
  run = launcher.run_compiled_pipeline(
      compiled['training'].path, store, compiled['training'].pipeline_root, str(base / 'work'),
      {'data_root': local_config.data_root})
  # The home as the command line opens it after the cluster run (models.config, serving).
  home = PipelineConfig.quick(config.home, mysql=writer)
  return {'config': config, 'home': home, 'compiled': compiled, 'store': store, 'run': run,
          'base': base, 'reader': reader_url(mariadb_url, DATABASE)}


def test_every_compiled_task_ran_its_command_and_kfp_recorded_it(kfp):
  spec = launcher.load_spec(kfp['compiled']['training'].path)
  run = kfp['run']
  assert list(run.tasks) == launcher.topological_order(spec)
  assert set(run.tasks) == set(spec.root.dag.tasks)
  assert {'SpanRangeCsvExampleGen', 'DataGate', 'Transform', 'Tuner', 'Trainer', 'Evaluator',
          'AtomicPusher'} <= set(run.tasks)
  for name, task in run.tasks.items():
    container = launcher.command_line(
        spec.deployment_spec['executors'][spec.components[name].executor_label]['container'],
        launcher.pipeline_spec_pb2.ExecutorInput())
    with open(task.log_file) as f:
      ran = f.readline()
    module = container[2]       # python -m MODULE, as compiled
    assert ran.startswith(f'$ {container[0]} -m {module} --executor_class_path '), name
    assert module in ('components.kfp_v2_entrypoint', 'components.span_example_gen.kfp_v2_driver')
  store = kfp['store']
  pipeline = store.get_context_by_type_and_name(layout.KFP_PIPELINE_CONTEXT_TYPE,
                                                'loopline-training')
  run_context = store.get_context_by_type_and_name(layout.KFP_RUN_CONTEXT_TYPE, run.run_id)
  assert [c.id for c in store.get_parent_contexts_by_context(run_context.id)] == [pipeline.id]
  assert run_context.custom_properties['pipeline_root'].string_value == run.run_root
  executions = store.get_executions_by_context(run_context.id)
  types = {t.id: t.name for t in store.get_execution_types()}
  tasks = {layout.task_name(e): e for e in executions if layout.task_name(e)}
  assert set(tasks) == set(run.tasks)
  assert {types[e.type_id] for e in tasks.values()} == {launcher.CONTAINER_EXECUTION_TYPE}
  assert {e.last_known_state for e in executions} == {metadata_store_pb2.Execution.COMPLETE}
  (dag,) = [e for e in executions if not layout.task_name(e)]
  assert types[dag.type_id] == launcher.DAG_EXECUTION_TYPE
  assert {e.custom_properties['parent_dag_id'].int_value for e in tasks.values()} == {dag.id}
  assert tasks['Trainer'].custom_properties['image'].string_value == IMAGE
  # Artifacts typed by schema title, outputs under <root>/<pipeline>/<run>/<task>/<key>, events
  # keyed by the input/output name (what metadata/layout.py reads).
  records = {r.node_id: r for r in mq.execution_records(store, run_context)}
  model = records['Trainer'].outputs['model'][0]
  assert model.uri == f'{run.run_root}/Trainer/model'
  assert store.get_artifact_types_by_id([model.type_id])[0].name == 'tfx.Model'
  assert records['AtomicPusher'].inputs['model'][0].id == model.id
  assert mq.custom_property(model, 'display_name') == 'model'


def test_training_artifacts_equal_the_local_runs(kfp, trained_home):
  local_config, local_summary = trained_home
  store = kfp['store']
  records = {r.node_id: r for r in mq.execution_records(
      store, mq.latest_run(store, 'loopline-training'))}
  local_store = metadata_connection.open_pipeline_store(local_config, read_only=True)
  local = {r.node_id: r for r in mq.execution_records(
      local_store, mq.latest_run(local_store, local_config.pipeline_name))}
  # The same schema (the image's schema file is the curated one).
  schemas = [tfdv.load_schema_text(os.path.join(r['ImportSchemaGen'].outputs['schema'][0].uri,
                                                'schema.pbtxt')) for r in (records, local)]
  assert schemas[0] == schemas[1]
  # The same span range and versions, so the same examples: statistics agree feature by feature.
  examples = [r['SpanRangeCsvExampleGen'].outputs['examples'][0] for r in (records, local)]
  for name in ('span_range', 'span_versions'):
    assert mq.custom_property(examples[0], name) == mq.custom_property(examples[1], name), name
  for split in ('train', 'eval'):
    kfp_stats, local_stats = (_stats(r['StatisticsGen'].outputs['statistics'][0].uri,
                                     split).datasets[0] for r in (records, local))
    assert kfp_stats.num_examples == local_stats.num_examples > 0, split
    local_features = {f.path.step[0]: f for f in local_stats.features}
    assert {f.path.step[0] for f in kfp_stats.features} == set(local_features)
    for feature in kfp_stats.features:
      other = local_features[feature.path.step[0]]
      if feature.HasField('num_stats'):
        assert feature.num_stats.mean == pytest.approx(other.num_stats.mean, rel=1e-6)
        assert feature.num_stats.std_dev == pytest.approx(other.num_stats.std_dev, rel=1e-6)
      else:
        assert feature.string_stats.unique == other.string_stats.unique
  gate = records['DataGate'].outputs['report'][0]
  assert mq.custom_property(gate, 'verdict') == mq.custom_property(
      local['DataGate'].outputs['report'][0], 'verdict')
  # Blessed (on the absolute threshold: open-source KFP runs no baseline resolver) and pushed.
  blessing = records['Evaluator'].outputs['blessing'][0]
  assert layout.number(mq.custom_property(blessing, 'blessed')) == 1
  assert local_summary['blessed'] is True
  pushed = records['AtomicPusher'].outputs['pushed_model'][0]
  version = str(layout.number(mq.custom_property(pushed, 'pushed_version')))
  assert os.path.isfile(os.path.join(kfp['config'].serving_model_dir, version, 'saved_model.pb'))
  assert lineage.served_versions(store, 'big_tipper') == [version]


@pytest.fixture(scope='module')
def kfp_monitoring(kfp):
  """The pushed version staged by the registry and served; a window of replayed rows
  with their ground truth; the compiled monitoring pipeline run through the harness for that
  version, then the local monitoring pipeline on the same window."""
  import registry
  home = kfp['home']
  (version,) = lineage.served_versions(kfp['store'], home.model_name)
  transition = registry.stage_pushed_model(home, version)    # `loopline models stage VERSION`
  assert (transition.action, transition.to_stage) == ('bootstrap', 'production')
  rows = read_span(1)[1][1::4][:MONITORED_ROWS]       # rows the training sample did not take
  server = loop.EmbeddedServer(home.home, home.model_name,
                               os.path.join(home.home, 'logs', 'server.log'))
  server.start()
  try:
    _, window_start, window_end = loop.replay_window(home, server, rows, 'none')
  finally:
    server.stop()
  compiled = kfp['compiled']['monitoring']
  run = launcher.run_compiled_pipeline(compiled.path, kfp['store'], compiled.pipeline_root,
                                       str(kfp['base'] / 'work'), {'model_version': int(version)})
  kfp_summary = monitoring_run.collect(home)
  local_summary = monitoring_run.monitor(home, window_start, window_end)
  return {'version': version, 'run': run, 'kfp': kfp_summary, 'local': local_summary}


def test_the_monitoring_pipeline_runs_on_the_cluster_route_like_the_local_one(kfp,
                                                                             kfp_monitoring):
  version = kfp_monitoring['version']
  run, kfp_summary, local = (kfp_monitoring[k] for k in ('run', 'kfp', 'local'))
  spec = launcher.load_spec(kfp['compiled']['monitoring'].path)
  assert set(run.tasks) == set(spec.root.dag.tasks)
  assert kfp_summary['run_id'] == run.run_id != local['run_id']
  assert kfp_summary['num_examples'] == kfp_summary['num_labeled'] == MONITORED_ROWS
  # The resolver walked the training run's lineage in MySQL (KFP's layout, SELECT-only user).
  store = kfp['store']
  resolver = run.tasks['TrainingBaselineResolver'].outputs['baseline']
  manifest = manifest_lib.read(resolver.uri)
  baseline = lineage.resolve_training_baseline(store, version, 'big_tipper')
  assert manifest.model_version == int(version)
  assert manifest.artifact_ids == {'pushed_model': baseline.pushed_model.id,
                                   'model': baseline.model.id,
                                   'examples': baseline.examples.id,
                                   'statistics': baseline.statistics.id}
  assert manifest.statistics_uri.startswith(kfp['run'].run_root)
  # The verdict and the realized metrics of the compiled pipeline are the local pipeline's.
  assert set(kfp_summary['versions']) == set(local['versions']) == {version}
  ours, theirs = kfp_summary['versions'][version], local['versions'][version]
  assert ours['verdict'] == theirs['verdict'] in ('no_drift', 'warning', 'critical')
  assert ours['drifted_features'] == theirs['drifted_features']
  assert ours['realized']['example_count'] == theirs['realized']['example_count'] == (
      MONITORED_ROWS)
  for metric in ('auc', 'binary_accuracy'):
    assert ours['realized'][metric] == pytest.approx(theirs['realized'][metric], abs=1e-6)
  assert os.path.isfile(ours['report_html'])


def test_registry_lineage_and_notebooks_read_the_kfp_runs_with_a_select_only_user(
    kfp, kfp_monitoring, monkeypatch, capsys):
  home, version = kfp['home'], kfp_monitoring['version']
  monkeypatch.setenv('LOOPLINE_MLMD_URL', kfp['reader'])
  assert cli.main(['--home', home.home, 'models', 'list', '--json', '--no-metrics']) == 0
  listed = json.loads(capsys.readouterr().out)['models']
  assert [(str(m['version']), m['stage']) for m in listed] == [(version, 'production')]
  assert cli.main(['--home', home.home, 'lineage', version, '--json', '--no-metrics']) == 0
  steps = json.loads(capsys.readouterr().out)['lineage']
  assert {'data', 'statistics', 'transform', 'training', 'evaluation', 'push'} <= {
      s['role'] for s in steps}
  assert all(kfp['run'].run_id in json.dumps(s) for s in steps if s['role'] == 'training')
  env = {'LOOPLINE_HOME': home.home, 'LOOPLINE_MLMD_URL': kfp['reader'], 'LOOPLINE_RUN_ID': '',
         'LOOPLINE_MODEL_VERSION': '',
         'LOOPLINE_MONITORING_RUN_ID': kfp_monitoring['run'].run_id}
  for name, summary_name in (('01_data.ipynb', 'data'), ('02_model_analysis.ipynb', 'model'),
                             ('03_lineage.ipynb', 'lineage'),
                             ('04_monitoring.ipynb', 'monitoring')):
    _, text = execute(name, env)
    line = summary_line(text, summary_name)
    expected = (kfp_monitoring['run'].run_id if summary_name == 'monitoring'
                else version if summary_name == 'lineage' else kfp['run'].run_id)
    assert expected in line, (name, line)
