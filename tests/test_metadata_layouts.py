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
