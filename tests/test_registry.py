"""Model registry against a real ML Metadata store: three quick runs (the session's trained_home,
then on a copy a second blessed, pushed model and a model the Evaluator does not bless), then
listing, lineage, stage/promote/rollback, every refusal, concurrent promotions, the CLI, and our
model server following a promotion without restart.

Each test that changes the registry works on its own copy of the home (MLMD + serving dir).
"""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest
from ml_metadata.proto import metadata_store_pb2

from loopline import cli
from pipeline import training_run
from pipeline.config import REPO_ROOT
from registry import api, catalog, checks, serving_config, stages
from registry.errors import ConcurrentChangeError, RefusedError, UnknownVersionError
from registry.store import TRANSITION_TYPE, VERSION_TYPE

pytestmark = pytest.mark.timeout(900)


@dataclasses.dataclass
class Setup:
  config: object            # PipelineConfig of the module's home (read-only use)
  v1: int                   # the trained_home push
  v2: int                   # second run: blessed and pushed
  dev_model_id: int         # third run: not blessed, not pushed
  summaries: tuple


@pytest.fixture(scope='module')
def setup(trained_home, tmp_path_factory):
  config, first = trained_home
  home = str(tmp_path_factory.mktemp('registry') / 'home')
  shutil.copytree(config.home, home)
  second = training_run.train(dataclasses.replace(config, home=home, train_steps=200,
                                                  max_auc_drop=1.0))
  third = training_run.train(dataclasses.replace(config, home=home, train_steps=150,
                                                 min_auc=0.999))
  assert second.get('blessed') and second.get('pushed_version'), second
  assert not third.get('blessed') and not third.get('pushed_version'), third
  v1, v2 = int(first['pushed_version']), int(second['pushed_version'])
  assert v2 > v1
  home_config = dataclasses.replace(config, home=home)
  model_uri = os.path.dirname(third['model_uri'])              # <uri>/Format-Serving
  (dev_model,) = [a for a in checks.open_store(home_config).get_artifacts_by_type('Model')
                  if a.uri == model_uri]
  return Setup(home_config, v1, v2, dev_model.id, (first, second, third))


def fresh(setup, tmp_path):
  """A private copy of the module's home; the config pointing at it."""
  home = str(tmp_path / 'home')
  shutil.copytree(setup.config.home, home)
  return dataclasses.replace(setup.config, home=home)


def config_text(config):
  return serving_config.read_text(api.Registry(config).config_path)


def served(config):
  """(labels, specific versions) of big_tipper in models.config, parsed by TF Serving's proto and
  accepted by our server's validation."""
  from serving.config import models_from_proto
  text = config_text(config)
  assert 'logging_config' not in text
  parsed = serving_config.parse(text)
  (model,) = [m for m in models_from_proto(parsed) if m.name == config.model_name]
  return model.label_map, tuple(model.policy.versions)


def transitions(config):
  store = checks.open_store(config)
  return sorted(store.get_executions_by_type(TRANSITION_TYPE), key=lambda e: e.id)


def hand_copy(config, version, new_version):
  """A version directory nobody pushed (as an operator copying files would make)."""
  source = os.path.join(config.serving_model_dir, str(version))
  target = os.path.join(config.serving_model_dir, str(new_version))
  shutil.copytree(source, target)
  return new_version


# ---- listing and lineage (read-only) ---------------------------------------------------------

def test_list_every_version_and_dev_model_without_writing(setup):
  metadata = setup.config.metadata_path
  before = (os.path.getsize(metadata), open(metadata, 'rb').read())
  records = api.list_models(setup.config)
  assert open(metadata, 'rb').read() == before[1], 'listing must not write to ML Metadata'
  assert [r.key for r in records] == [str(setup.v2), str(setup.v1), f'model:{setup.dev_model_id}']
  newest, oldest, dev = records
  first, second, third = setup.summaries
  for record, summary in ((oldest, first), (newest, second)):
    assert (record.stage, record.pushed, record.blessed, record.labels) == ('dev', True, True, [])
    assert record.spans == summary['spans'] and record.span_versions == summary['span_versions']
    assert record.hyperparameters == summary['hyperparameters']
    assert record.eval_metrics['auc'] == pytest.approx(summary['overall']['auc'])
    assert record.serving_dir == os.path.join(setup.config.serving_model_dir, record.key)
    assert record.pushed_at_ms and record.realized_metrics is None
  assert oldest.run_id == first['run_id'] and newest.run_id == second['run_id']
  assert (dev.version, dev.stage, dev.pushed, dev.blessed) == (None, 'dev', False, False)
  assert dev.run_id == third['run_id']
  assert dev.eval_metrics['auc'] == pytest.approx(third['overall']['auc'])


def test_lineage_goes_from_the_push_back_to_the_spans(setup):
  info = api.describe(setup.config, str(setup.v2))
  steps = info['lineage']
  roles = [s['role'] for s in steps]
  for role in ('data', 'schema', 'statistics', 'validation', 'data gate', 'transform', 'tuning',
               'training', 'evaluation', 'push'):
    assert role in roles, (role, roles)
  assert roles.index('data') < roles.index('transform') < roles.index('training') < \
      roles.index('evaluation') < roles.index('push')
  by_role = {s['role']: s for s in steps}
  examples = next(o for o in by_role['data']['outputs'] if o['key'] == 'examples')
  assert examples['properties']['span_range'] == '1-2'
  assert by_role['data gate']['outputs'][0]['properties']['verdict'] in ('clean', 'warnings')
  assert any(o['key'] == 'transform_graph' for o in by_role['transform']['outputs'])
  tuned = next(o for o in by_role['tuning']['outputs'] if o['key'] == 'best_hyperparameters')
  assert tuned['properties']['values'] == setup.summaries[1]['hyperparameters']
  # The model of this version, trained in the second run; the baseline (v1's model, from the first
  # run) is not followed: exactly one Trainer in the chain.
  assert [s['run'] for s in steps if s['role'] == 'training'] == [setup.summaries[1]['run_id']]
  blessing = next(o for o in by_role['evaluation']['outputs'] if o['key'] == 'blessing')
  assert blessing['properties']['blessed'] == 1
  pushed = next(o for o in by_role['push']['outputs'] if o['key'] == 'pushed_model')
  assert pushed['properties']['pushed_version'] == str(setup.v2)
  # `loopline lineage` and `loopline models show` print the same chain for people.
  text = cli_out(setup.config, 'lineage', str(setup.v2))[1]
  assert f'big_tipper version {setup.v2}' in text and 'span_range=1-2' in text
  assert '[training] Trainer' in text and '[push] AtomicPusher' in text
  assert text == cli_out(setup.config, 'models', 'show', str(setup.v2))[1]


# ---- stages ----------------------------------------------------------------------------------

def test_bootstrap_stage_promote_rollback_recorded_in_mlmd(setup, tmp_path):
  config = fresh(setup, tmp_path)
  v1, v2 = setup.v1, setup.v2
  first = api.stage_pushed_model(config, v1)
  assert (first.action, first.reason, first.to_stage) == (
      stages.BOOTSTRAP, stages.BOOTSTRAP_REASON, 'production')
  assert served(config) == ({'stable': v1}, (v1,))
  assert api.stage_pushed_model(config, v1) is None           # cached re-run: nothing changes

  staged = api.stage_pushed_model(config, v2)
  assert (staged.action, staged.from_stage, staged.to_stage) == ('stage', 'dev', 'staging')
  assert served(config) == ({'stable': v1, 'canary': v2}, (v1, v2))

  promoted = api.promote(config, v2, reason='canary held for a day', actor='alice')
  assert (promoted.from_stage, promoted.to_stage, promoted.actor) == (
      'staging', 'production', 'alice')
  assert served(config) == ({'stable': v2}, (v2,))

  rolled = api.rollback(config, reason='complaints about v2', actor='bob')
  assert (rolled.action, rolled.version, rolled.to_stage) == ('rollback', v1, 'production')
  assert served(config) == ({'stable': v1}, (v1,))
  with pytest.raises(RefusedError, match='no previous production version'):
    api.rollback(config, reason='again')
  assert api.stage_pushed_model(config, v2) is None   # a re-run re-pushing v2 does not revive it

  # The history is in MLMD, readable by any MLMD client (Kubeflow's UI included), after restarts.
  store = checks.open_store(config)
  executions = transitions(config)
  assert [(e.properties['action'].string_value, e.properties['version'].int_value,
           e.properties['actor'].string_value.split(' ')[0]) for e in executions] == [
      ('bootstrap', v1, 'loopline'), ('stage', v2, 'loopline'), ('promote', v2, 'alice'),
      ('rollback', v1, 'bob')]
  assert executions[2].properties['reason'].string_value == 'canary held for a day'
  promote_events = store.get_events_by_execution_ids([executions[2].id])
  inputs = {store.get_artifacts_by_id([e.artifact_id])[0].type for e in promote_events
            if e.type == metadata_store_pb2.Event.INPUT}
  assert inputs == {'PushedModel', 'Model'}                  # the transition sits in the lineage
  versions = {a.properties['version'].int_value: a for a in store.get_artifacts_by_type(VERSION_TYPE)}
  assert versions[v1].properties['stage'].string_value == 'production'
  assert versions[v2].properties['stage'].string_value == 'archived'
  assert versions[v1].custom_properties['stage_changed_by'].string_value == 'bob'
  assert versions[v1].custom_properties['eval_auc'].double_value == pytest.approx(
      setup.summaries[0]['overall']['auc'])
  records = {r.key: r for r in api.list_models(config, metrics=False)}
  assert (records[str(v1)].stage, records[str(v1)].labels) == ('production', ['stable'])
  assert (records[str(v2)].stage, records[str(v2)].labels) == ('archived', [])
  assert [t['action'] for t in api.describe(config, str(v2), metrics=False)['history']] == [
      'stage', 'promote', 'rollback']


def test_refusals_write_nothing(setup, tmp_path):
  config = fresh(setup, tmp_path)
  api.stage_pushed_model(config, setup.v1)
  baseline = (config_text(config), len(transitions(config)))

  def refused(call, *words, forceable=None):
    with pytest.raises(RefusedError) as error:
      call()
    for word in words:
      assert word in str(error.value), str(error.value)
    if forceable is not None:
      assert error.value.forceable == forceable
    assert (config_text(config), len(transitions(config))) == baseline
    return error.value

  refused(lambda: api.promote(config, setup.v1), 'already in production')
  refused(lambda: api.promote(config, f'model:{setup.dev_model_id}'), 'never pushed')
  # A version directory nobody pushed: not pushed, no blessing.
  orphan = hand_copy(config, setup.v1, setup.v2 + 1000)
  refused(lambda: api.promote(config, orphan), 'not pushed', 'not blessed', forceable=True)
  refused(lambda: api.promote(config, orphan, force=True), 'needs a reason')
  # A pushed, blessed version whose files are broken: not loadable.
  with open(os.path.join(config.serving_model_dir, str(setup.v2), 'saved_model.pb'), 'wb') as f:
    f.write(b'not a SavedModel')
  error = refused(lambda: api.promote(config, setup.v2), 'not loadable', forceable=True)
  assert 'not pushed' not in str(error) and 'not blessed' not in str(error)
  with pytest.raises(RefusedError, match='not loadable'):     # nor can it be staged
    api.stage_pushed_model(config, setup.v2)
  # A pushed version whose directory is gone: nothing to serve, not even when forced.
  shutil.rmtree(os.path.join(config.serving_model_dir, str(setup.v2)))
  refused(lambda: api.promote(config, setup.v2, reason='r', force=True), 'nothing to serve',
          forceable=False)
  with pytest.raises(UnknownVersionError):
    api.promote(config, 12345)


def test_forced_promotion_is_recorded_and_listed(setup, tmp_path):
  config = fresh(setup, tmp_path)
  api.stage_pushed_model(config, setup.v1)
  orphan = hand_copy(config, setup.v1, setup.v2 + 1000)
  transition = api.promote(config, orphan, force=True, reason='hotfix copied by hand',
                           actor='carol')
  assert transition.forced and 'not pushed' in transition.overridden
  assert served(config) == ({'stable': orphan}, (orphan,))
  execution = transitions(config)[-1]
  assert execution.properties['forced'].int_value == 1
  assert 'not blessed' in execution.properties['overridden'].string_value
  record = {r.key: r for r in api.list_models(config, metrics=False)}[str(orphan)]
  assert (record.stage, record.forced, record.stage_changed_by) == ('production', True, 'carol')
  code, out, _ = cli_out(config, 'models', 'list', '--no-metrics')
  assert code == 0 and 'production (forced)' in out
  assert api.rollback(config, reason='back').version == setup.v1


def test_stale_decision_and_hand_edited_config_are_rejected(setup, tmp_path):
  config = fresh(setup, tmp_path)
  api.stage_pushed_model(config, setup.v1)
  api.stage_pushed_model(config, setup.v2)
  late = api.Registry(config)
  stale = late.plan_promote(setup.v2, reason='late')              # decided on sequence 2
  winner = api.promote(config, setup.v2, reason='first', actor='alice')
  with pytest.raises(ConcurrentChangeError) as conflict:
    late.apply(stale, actor='bob')
  assert f'promote of version {setup.v2}' in str(conflict.value) and 'alice' in str(conflict.value)
  assert 'Nothing was written' in str(conflict.value)
  assert len(transitions(config)) == winner.sequence == 3

  pending = late.plan_rollback(reason='r')
  path = late.config_path
  with open(path, 'a') as f:
    f.write('# edited by hand\n')
  with pytest.raises(ConcurrentChangeError, match='models.config changed'):
    late.apply(pending)
  assert len(transitions(config)) == 3
  # A label moved by hand shows as a note; `models sync` puts the registry's labels back.
  with open(path, 'w') as f:
    f.write(config_text(config).replace(f'value: {setup.v2}', f'value: {setup.v1}'))
  registry = api.Registry(config)
  assert any('stable=' in n and 'models sync' in n for n in registry.notes(registry.snapshot()))
  assert cli_out(config, 'models', 'sync')[0] == 0
  assert served(config) == ({'stable': setup.v2}, (setup.v2,))
  assert registry.notes(registry.snapshot()) == []


def test_a_held_lock_times_out_with_the_holder_named(setup, tmp_path):
  config = fresh(setup, tmp_path)
  registry = api.Registry(config, lock_timeout_seconds=0.3)
  pending = registry.plan_stage(setup.v1)
  with serving_config.exclusive_lock(registry.config_path, 'promote 1 by someone else'):
    with pytest.raises(ConcurrentChangeError, match='promote 1 by someone else'):
      registry.apply(pending)
  assert transitions(config) == [] and config_text(config) is None
  assert registry.apply(pending).action == stages.BOOTSTRAP


CHILD = r'''
import json, os, sys, time
sys.path.insert(0, {repo!r})
import dataclasses
from pipeline.config import PipelineConfig
from registry import api
from registry.errors import RegistryError
config = PipelineConfig(home={home!r}, model_name={model!r}, pipeline_name={pipeline!r})
registry = api.Registry(config)
pending = registry.plan_promote({version}, reason='race', force=True)
open({ready!r}, 'w').close()
while not os.path.exists({go!r}):
  time.sleep(0.01)
try:
  t = registry.apply(pending, actor={actor!r})
  print(json.dumps({{'ok': t.version}}))
except RegistryError as e:
  print(json.dumps({{'error': type(e).__name__, 'message': str(e)}}))
'''


def test_concurrent_promotions_one_wins_the_other_is_told(setup, tmp_path):
  config = fresh(setup, tmp_path)
  api.stage_pushed_model(config, setup.v1)
  orphan = hand_copy(config, setup.v1, setup.v2 + 1000)
  go = str(tmp_path / 'go')
  children = []
  for version, actor in ((setup.v2, 'alice'), (orphan, 'bob')):
    ready = str(tmp_path / f'ready-{actor}')
    script = CHILD.format(repo=REPO_ROOT, home=config.home, model=config.model_name,
                          pipeline=config.pipeline_name, version=version, ready=ready, go=go,
                          actor=actor)
    children.append((ready, subprocess.Popen([sys.executable, '-c', script], cwd=REPO_ROOT,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True)))
  deadline = time.monotonic() + 300
  while not all(os.path.exists(r) for r, _ in children):
    assert time.monotonic() < deadline and all(p.poll() is None for _, p in children), \
        [p.communicate() for _, p in children if p.poll() is not None]
    time.sleep(0.05)
  seen, stop = [], threading.Event()

  def read_config_continuously():
    while not stop.is_set():
      seen.append(served(config))

  reader = threading.Thread(target=read_config_continuously)
  reader.start()
  open(go, 'w').close()
  results = []
  for _, process in children:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    results.append(json.loads(out.strip().splitlines()[-1]))
  stop.set()
  reader.join()
  winners = [r['ok'] for r in results if 'ok' in r]
  losers = [r for r in results if 'error' in r]
  assert len(winners) == 1 and len(losers) == 1, results
  assert losers[0]['error'] == 'ConcurrentChangeError'
  assert 'changed while this command was deciding' in losers[0]['message']
  assert f'version {winners[0]}' in losers[0]['message']
  assert served(config) == ({'stable': winners[0]}, (winners[0],))
  assert len(transitions(config)) == 2                       # bootstrap + the winner
  assert seen and all(labels['stable'] in (setup.v1, winners[0]) and versions == (labels['stable'],)
                      for labels, versions in seen)
  assert not [n for n in os.listdir(os.path.dirname(api.Registry(config).config_path))
              if n.startswith('.tmp-')]


# ---- command line ----------------------------------------------------------------------------

def cli_out(config, *argv):
  import contextlib
  import io
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    code = cli.main(['--home', config.home, *argv])
  return code, out.getvalue(), err.getvalue()


def test_cli_table_json_exit_codes(setup, tmp_path):
  config = fresh(setup, tmp_path)
  assert cli_out(config, 'models', 'stage', str(setup.v1))[0] == 0
  code, out, _ = cli_out(config, 'models', 'stage', str(setup.v2))
  assert code == 0 and 'stage' in out and f'canary={setup.v2}' in out
  code, out, _ = cli_out(config, 'models', 'list')
  assert code == 0
  lines = out.splitlines()
  assert lines[1].split()[:4] == ['VERSION', 'STAGE', 'LABEL', 'BLESSED']
  row = next(line for line in lines if line.startswith(str(setup.v1)))
  assert row.split()[1:4] == ['production', 'stable', 'yes']
  assert f"{setup.summaries[0]['overall']['auc']:.3f}" in row
  row = next(line for line in lines if line.startswith(f'model:{setup.dev_model_id}'))
  assert row.split()[1:4] == ['dev', '-', 'no']
  code, out, _ = cli_out(config, 'models', 'list', '--json')
  listing = json.loads(out)
  assert (listing['production'], listing['staging']) == (setup.v1, setup.v2)
  assert listing['labels'] == {'stable': setup.v1, 'canary': setup.v2}
  assert [m['key'] for m in listing['models']][:2] == [str(setup.v2), str(setup.v1)]
  code, out, err = cli_out(config, 'models', 'promote', f'model:{setup.dev_model_id}')
  assert code == 1 and 'never pushed' in err and out == ''
  code, _, err = cli_out(config, 'models', 'promote', '999')
  assert code == 2 and 'no version 999' in err
  code, out, _ = cli_out(config, 'models', 'promote', str(setup.v2), '--reason', 'ok', '--by', 'dan')
  assert code == 0 and 'by dan: ok' in out and f'stable={setup.v2}' in out
  code, out, _ = cli_out(config, 'models', 'rollback', '--reason', 'nope')
  assert code == 0 and f'version {setup.v1}' in out
  code, out, _ = cli_out(config, 'models', 'history', '--json')
  assert [t['action'] for t in json.loads(out)] == ['bootstrap', 'stage', 'promote', 'rollback']


def test_realized_metrics_are_shown_when_the_feedback_loop_recorded_them(setup, tmp_path):
  config = fresh(setup, tmp_path)
  store = checks.open_store(config)
  type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(
      name=checks.REALIZED_METRICS_TYPE))
  artifact = metadata_store_pb2.Artifact(type_id=type_id, uri='/feedback/window-1')
  artifact.custom_properties['model_name'].string_value = config.model_name
  artifact.custom_properties['model_version'].int_value = setup.v1
  artifact.custom_properties['auc'].double_value = 0.881
  artifact.custom_properties['example_count'].int_value = 1200
  store.put_artifacts([artifact])
  records = {r.key: r for r in api.list_models(config, metrics=False)}
  assert records[str(setup.v1)].realized_metrics == {'auc': 0.881, 'example_count': 1200.0}
  assert records[str(setup.v2)].realized_metrics is None
  out = cli_out(config, 'models', 'list', '--no-metrics')[1]
  assert '0.881' in next(line for line in out.splitlines() if line.startswith(str(setup.v1)))


def test_model_server_follows_a_promotion_without_restart(setup, tmp_path):
  import requests
  from serving.config import ServerConfig
  from serving.server import ServerThread
  config = fresh(setup, tmp_path)
  api.stage_pushed_model(config, setup.v1)
  api.stage_pushed_model(config, setup.v2)
  registry = api.Registry(config)
  server_config = ServerConfig(
      model_config_file=registry.config_path, model_config_file_poll_wait_seconds=0.2,
      file_system_poll_wait_seconds=0.2, model_root=os.path.dirname(registry.config_path),
      rest_port=0, grpc_port=0, shutdown_grace_seconds=2.0)
  server_config.batching.enabled = False

  def label_version(server, label):
    url = f'{server.rest_url}/v1/models/{config.model_name}/labels/{label}'
    response = requests.get(url, timeout=30)
    return int(response.json()['model_version_status'][0]['version']) if response.ok else None

  with ServerThread(server_config) as server:
    assert (label_version(server, 'stable'), label_version(server, 'canary')) == (
        setup.v1, setup.v2)
    api.promote(config, setup.v2, reason='serve it')
    deadline = time.monotonic() + 60
    while label_version(server, 'stable') != setup.v2:
      assert time.monotonic() < deadline, 'the server did not pick up the promotion'
      time.sleep(0.2)
    assert label_version(server, 'canary') is None
