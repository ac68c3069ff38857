"""One lineage walk for both layouts of ML Metadata: `loopline models list` and `loopline lineage`
read a training run Kubeflow Pipelines v2 recorded exactly as the same run recorded by TFX's
LocalDagRunner (the stores of tests/test_baseline_resolver.py)."""
import json

from loopline import cli
from tests.test_baseline_resolver import VERSION, KfpStore, TfxStore, kfp_training_run

HOME_DEPENDENT = ('serving_dir',)
TIME_DEPENDENT = ('started_ms', 'seconds')


def _read(home, capsys):
  """(models list --json, lineage VERSION --json) of a home, without what depends on the home's
  path or the clock."""
  assert cli.main(['--home', str(home), 'models', 'list', '--json', '--no-metrics']) == 0
  listed = json.loads(capsys.readouterr().out)['models']
  assert cli.main(['--home', str(home), 'lineage', VERSION, '--json', '--no-metrics']) == 0
  traced = json.loads(capsys.readouterr().out)
  for record in listed + [traced['record']]:
    for key in HOME_DEPENDENT + ('pushed_at_ms', 'trained_at_ms'):
      record.pop(key)
  for step in traced['lineage']:
    for key in TIME_DEPENDENT:
      step.pop(key)
  return listed, traced['record'], traced['lineage']


def test_models_list_and_lineage_read_kubeflows_layout_as_the_local_one(tmp_path, capsys):
  read = {}
  for name, store_class in (('kfp', KfpStore), ('local', TfxStore)):
    (tmp_path / name / 'metadata').mkdir(parents=True)
    kfp_training_run(str(tmp_path / name / 'metadata' / 'metadata.sqlite'),
                     store_class=store_class)
    read[name] = _read(tmp_path / name, capsys)
  listed, record, steps = read['kfp']
  assert [(m['version'], m['spans'], m['run_id']) for m in listed] == [(int(VERSION), '1-5',
                                                                        'run-1')]
  assert [(s['role'], s['node']) for s in steps] == [
      ('data', 'SpanRangeCsvExampleGen'), ('statistics', 'StatisticsGen'),
      ('transform', 'Transform'), ('training', 'Trainer'), ('push', 'AtomicPusher')]
  assert steps[-1]['outputs'][0]['type'] == 'PushedModel'
  assert steps[-1]['outputs'][0]['properties']['pushed'] == 1
  assert read['kfp'] == read['local']


def test_runs_and_their_executions_are_read_in_either_layout(tmp_path):
  """What the notebooks and the run summaries read (metadata.queries): the runs of a pipeline and
  each run's executions by component, in KFP's layout as in TFX's."""
  from metadata import queries as mq
  for store_class in (KfpStore, TfxStore):
    kfp, artifacts = kfp_training_run(str(tmp_path / f'{store_class.__name__}.sqlite'),
                                      store_class=store_class)
    (run,) = mq.run_contexts(kfp.store, 'loopline-training')
    assert run.name == 'run-1' and mq.latest_run(kfp.store, 'loopline-training').id == run.id
    records = {r.node_id: r for r in mq.execution_records(kfp.store, run)}
    assert list(records) == ['SpanRangeCsvExampleGen', 'StatisticsGen', 'Transform', 'Trainer',
                             'AtomicPusher'], store_class
    assert records['Trainer'].outputs['model'][0].id == artifacts['model'].id
    assert records['AtomicPusher'].inputs['model'][0].id == artifacts['model'].id
    assert mq.run_contexts(kfp.store, 'another-pipeline') == []


def test_a_store_with_runs_of_both_layouts_is_read_whole(tmp_path):
  """A cluster run and a local run of the same pipeline in one store (e.g. MLMD on MySQL used by
  both): the runs of both are listed, and the lineage graph holds the executions of both."""
  from metadata import graph as graph_lib
  from metadata import queries as mq
  path = str(tmp_path / 'metadata.sqlite')
  kfp, kfp_artifacts = kfp_training_run(path, store_class=KfpStore)
  local = TfxStore(path, run_id='run-local')
  local_model = local.task('Trainer', {'examples': kfp_artifacts['examples']}, {
      'model': local.artifact('tfx.Model', 'gs://bucket/local/Trainer/model')})['model']
  assert [r.name for r in mq.run_contexts(kfp.store, 'loopline-training')] == [
      'run-1', 'run-local']
  graph = graph_lib.Graph(kfp.store, 'loopline-training')
  trainers = [i for i, node in graph.node.items() if node == 'Trainer']
  assert len(trainers) == 2
  assert {graph.run[i] for i in trainers} == {'run-1', 'run-local'}
  local_trainer = graph.producer(local_model.id)
  assert local_trainer in trainers and graph.run[local_trainer] == 'run-local'
  # The local run's Trainer read the Examples the cluster run's ExampleGen wrote.
  assert graph.consuming(kfp_artifacts['examples'].id, 'examples', node='Trainer') == [
      local_trainer]
  assert graph.producer(kfp_artifacts['examples'].id) not in trainers


def test_a_components_parameters_are_read_in_either_layout():
  from ml_metadata.proto import metadata_store_pb2
  from metadata import queries as mq
  tfx_execution, kfp_execution = metadata_store_pb2.Execution(), metadata_store_pb2.Execution()
  tfx_execution.custom_properties['input_base'].string_value = '/data/spans'
  tfx_execution.custom_properties['min_auc'].double_value = 0.85
  inputs = kfp_execution.custom_properties['inputs'].struct_value      # KFP: one struct
  inputs.fields['input_base'].string_value = '/data/spans'
  inputs.fields['min_auc'].number_value = 0.85
  inputs.fields['model_version'].number_value = 1795759493.0
  for execution in (tfx_execution, kfp_execution):
    assert mq.execution_property(execution, 'input_base') == '/data/spans'
    assert mq.execution_property(execution, 'min_auc') == 0.85
    assert mq.execution_property(execution, 'missing') is None
  assert mq.execution_property(kfp_execution, 'model_version') == 1795759493
  assert isinstance(mq.execution_property(kfp_execution, 'model_version'), int)


def test_the_local_monitoring_pipeline_imports_a_kubeflow_baseline_with_its_splits(tmp_path):
  """A model trained on the cluster, monitored by the local pipeline: the Importers of its
  baseline carry the split names (KFP records them as a custom property), so the DriftDetector
  takes the model's baseline predictions on the held-out eval split, as on the cluster."""
  from metadata import lineage
  for store_class in (KfpStore, TfxStore):
    kfp, _ = kfp_training_run(str(tmp_path / f'{store_class.__name__}.sqlite'),
                              store_class=store_class)
    importers = lineage.baseline_importers(lineage.resolve_training_baseline(kfp.store, VERSION))
    for key in ('examples', 'statistics'):
      assert importers[key].outputs['result'].additional_properties == {
          'split_names': '["train", "eval"]'}, (store_class, key)
