"""ML Metadata on MySQL, as in a cluster: the quick training pipeline runs against a real
MySQL-compatible server on loopback (Debian's MariaDB, installed if missing and started with a
throwaway data directory by scripts/mariadb.sh, one server for the session: tests/conftest.py),
and the lineage is read back from it; then a small window of served traffic is monitored on the
same database, and a SELECT-only user reads everything back, all four notebooks included.

Nothing is skipped: if MariaDB cannot be installed or started, or MLMD's MySQL client cannot talk
to it, the test fails with that error.
"""
import dataclasses
import json
import os
import subprocess
import time

import pytest

from metadata import connection as metadata_connection
from metadata import queries as mq
from pipeline import training_pipeline
from pipeline import training_run
from pipeline.config import PipelineConfig
from tests.conftest import (MARIADB, free_port, import_loopline_nb, read_span, reader_url,
                            sample_spans)

pytestmark = pytest.mark.timeout(1200)

MONITORED_ROWS = 200          # the monitoring window of the select-only notebook test


@pytest.fixture(scope='module')
def mysql_run(mariadb_url, tmp_path_factory):
  """The quick pipeline on MySQL, run as `loopline train` runs it (LocalDagRunner), then read
  back with the run summary; the registry stages its pushed model later (a SELECT-only user first
  fails to)."""
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from pipeline import run_summary
  base = tmp_path_factory.mktemp('mysql_run')
  config = PipelineConfig.quick(
      str(base / 'home'), data_root=sample_spans(str(base / 'spans')), first_span=1,
      last_span=2, min_auc=0.6, max_ece=0.1, enable_tuning=False, train_steps=150,
      mysql=metadata_connection.parse_mysql_url(f'{mariadb_url}/loopline_mlmd'))
  training_run.check_inputs(config)
  LocalDagRunner().run(training_pipeline.create_pipeline(
      config, config.enable_tuning or training_pipeline.tuned_hyperparameters_exist(config)))
  return config, run_summary.collect(config)


def test_the_training_pipeline_records_to_mysql(mysql_run):
  config, summary = mysql_run
  assert not os.path.exists(config.metadata_path)        # nothing went to SQLite
  store = metadata_connection.open_pipeline_store(config)
  assert config.mysql.database == 'loopline_mlmd'
  runs = mq.run_contexts(store, config.pipeline_name)
  assert [r.name for r in runs] == [summary['run_id']]
  records = {r.node_id: r for r in mq.execution_records(store, runs[0])}
  assert {'SpanRangeCsvExampleGen', 'DataGate', 'Transform', 'Trainer', 'Evaluator',
          'AtomicPusher'} <= set(records)
  assert 'Tuner' not in records                           # tuning off, nothing tuned yet
  assert {r.state for n, r in records.items() if not n.endswith('resolver')} == {'COMPLETE'}
  report = records['DataGate'].outputs['report'][0]
  assert mq.custom_property(report, 'verdict') in ('clean', 'warnings')
  assert summary['blessed'] is True and summary['pushed_version']
  assert summary['hyperparameters_source'] == 'model defaults'


def test_lineage_of_the_served_model_read_back_from_mysql(mysql_run, mariadb_url, monkeypatch):
  config, summary = mysql_run
  nb = import_loopline_nb()
  monkeypatch.setenv('LOOPLINE_HOME', config.home)
  monkeypatch.setenv('LOOPLINE_MLMD_URL', f'{mariadb_url}/loopline_mlmd')
  monkeypatch.delenv('LOOPLINE_RUN_ID', raising=False)
  run = nb.open_run()
  assert run.config.mysql == config.mysql and run.run_id == summary['run_id']
  assert 'MySQL 127.0.0.1' in run.describe()
  assert nb.served_versions(config) == [summary['pushed_version']]
  pushed = nb.pushed_model(run, summary['pushed_version'])
  graph = nb.lineage(run, pushed)
  nodes = {r.node_id for r in graph.executions.values()}
  assert {'AtomicPusher', 'Trainer', 'Transform', 'Evaluator', 'SpanRangeCsvExampleGen',
          'ImportSchemaGen'} <= nodes
  examples = graph.execution('SpanRangeCsvExampleGen').outputs['examples'][0]
  assert mq.custom_property(examples, 'span_range') == '1-2'
  assert mq.custom_property(examples, 'span_versions') == '1:1,2:1'
  trainer = graph.execution('Trainer')
  assert trainer.outputs['model'][0].id == graph.execution('AtomicPusher').inputs['model'][0].id
  assert graph.artifacts_of_type('ModelEvaluation', run.store)
  # Every edge connects nodes of the graph, from the data to the pushed model.
  assert all(s in graph.nodes and t in graph.nodes for s, t in graph.edges)


def test_a_select_only_user_reads_the_registry_lineage_and_notebooks_but_cannot_write(
    mysql_run, mariadb_url, monkeypatch, capsys):
  """Reads need SELECT alone: the registry's list/show, `loopline models list|show`, `loopline
  lineage` and the notebooks. A write with that user fails naming the missing privilege and
  writes nothing; the full user then stages the version as `loopline train` does (the
  registry's records fit MLMD's MySQL schema, whose integer column is 32-bit)."""
  from loopline import cli
  import registry
  from tests.test_notebooks import execute, summary_line
  config, summary = mysql_run
  version = str(summary['pushed_version'])
  reader = dataclasses.replace(config, mysql=metadata_connection.parse_mysql_url(
      reader_url(mariadb_url)))
  monkeypatch.setenv('LOOPLINE_MLMD_URL', reader_url(mariadb_url))

  assert cli.main(['--home', config.home, 'models', 'stage', version]) == 1
  assert 'lacks the INSERT privilege' in capsys.readouterr().err
  with pytest.raises(registry.RegistryError, match='lacks the INSERT privilege'):
    registry.stage_pushed_model(reader, version)
  assert not registry.Registry(config).records.transitions()          # nothing was written

  training_run.stage_in_registry(config, summary)          # the full user, as `loopline train`
  assert summary['registry'].endswith(f'version {version} -> production')
  (record,) = [r for r in registry.list_models(config, metrics=False) if str(r.version) == version]
  assert record.stage == 'production' and record.stage_changed_at_ms > 1.7e12

  assert ([r.as_dict() for r in registry.list_models(reader, metrics=False)] ==
          [r.as_dict() for r in registry.list_models(config, metrics=False)])
  assert cli.main(['--home', config.home, 'models', 'list', '--json', '--no-metrics']) == 0
  listed = json.loads(capsys.readouterr().out)
  assert [(m['version'], m['stage']) for m in listed['models']] == [(int(version), 'production')]
  assert cli.main(['--home', config.home, 'lineage', version, '--json', '--no-metrics']) == 0
  traced = json.loads(capsys.readouterr().out)
  assert traced['lineage'] == json.loads(json.dumps(
      registry.describe(config, version, metrics=False)['lineage'], default=str))
  roles = [step['role'] for step in traced['lineage']]
  assert {'data', 'statistics', 'transform', 'training', 'evaluation', 'push'} <= set(roles)
  assert cli.main(['--home', config.home, 'models', 'show', version, '--json',
                   '--no-metrics']) == 0
  assert json.loads(capsys.readouterr().out)['lineage'] == traced['lineage']

  env = {'LOOPLINE_HOME': config.home, 'LOOPLINE_MLMD_URL': reader_url(mariadb_url)}
  for name, summary_name in (('01_data.ipynb', 'data'), ('02_model_analysis.ipynb', 'model'),
                             ('03_lineage.ipynb', 'lineage')):
    _, text = execute(name, env)
    assert summary_line(text, summary_name), f'{name} printed no SUMMARY line'


@pytest.fixture(scope='module')
def mysql_monitoring_run(mysql_run):
  """A small window of real traffic for the served version, monitored with MLMD on MySQL: the
  embedded server answers a few hundred replayed rows, their ground truth is delivered and the
  monitoring pipeline runs, as in `make run` (pipeline/loop.py)."""
  from pipeline import loop
  config, summary = mysql_run
  training_run.stage_in_registry(config, {'pushed_version': summary['pushed_version']})
  rows = read_span(1)[1][1::4][:MONITORED_ROWS]       # rows the training sample did not take
  server = loop.EmbeddedServer(config.home, config.model_name,
                               os.path.join(config.home, 'logs', 'server.log'))
  server.start()
  try:
    _, monitored = loop.replay_and_monitor_window(config, server, rows, 'none')
  finally:
    server.stop()
  return config, summary, monitored


def test_the_monitoring_notebook_reads_a_mysql_run_with_a_select_only_user(
    mysql_monitoring_run, mariadb_url):
  from tests.test_notebooks import execute, summary_line
  config, summary, monitored = mysql_monitoring_run
  version = str(summary['pushed_version'])
  store = metadata_connection.open_pipeline_store(config)
  runs = [r.name for r in mq.run_contexts(store, config.monitoring_pipeline_name)]
  assert runs == [monitored['run_id']]
  assert monitored['num_examples'] == monitored['num_labeled'] == MONITORED_ROWS
  _, text = execute('04_monitoring.ipynb', {
      'LOOPLINE_HOME': config.home, 'LOOPLINE_MLMD_URL': reader_url(mariadb_url),
      'LOOPLINE_RUN_ID': '', 'LOOPLINE_MONITORING_RUN_ID': ''})
  line = summary_line(text, 'monitoring')
  assert line.startswith(f'run {monitored["run_id"]}; 1 runs; '), line
  assert f'; verdicts {version}:{monitored["versions"][version]["verdict"]};' in line
  assert f'; window {MONITORED_ROWS} logged, {MONITORED_ROWS} labelled (' in line
  auc = monitored['versions'][version]['realized']['auc']
  assert line.endswith(f'; version {version} (stable) AUC {auc:.3f} on {MONITORED_ROWS}'), line


def test_bad_mysql_options_say_what_is_wrong(mariadb_url, tmp_path):
  nb = import_loopline_nb()
  good = metadata_connection.parse_mysql_url(f'{mariadb_url}/loopline_mlmd')
  wrong_password = metadata_connection.parse_mysql_url(
      f'mysql://{good.username}:not-the-password@{good.host}:{good.port}/loopline_mlmd')
  config = PipelineConfig(home=str(tmp_path), mysql=wrong_password)
  with pytest.raises(ConnectionError, match=r'cannot open ML Metadata on MySQL '
                                            r'loopline@127\.0\.0\.1:\d+/loopline_mlmd: the server '
                                            r'answers: check the user, password and database '
                                            r'\(MLMD: mysql_real_connect failed'):
    nb.open_run(config=config)
  closed = metadata_connection.parse_mysql_url(f'mysql://loopline@127.0.0.1:{free_port()}/x')
  with pytest.raises(ConnectionError, match=r'nothing answers on 127\.0\.0\.1:\d+ \('
                                            r'Connection refused\)'):
    nb.open_run(config=PipelineConfig(home=str(tmp_path), mysql=closed))


def test_mariadb_script_rejects_bad_arguments(tmp_path):
  bad_port = subprocess.run(['bash', MARIADB, 'start', str(tmp_path), 'port'],
                            capture_output=True, text=True, timeout=60)
  assert bad_port.returncode != 0 and "port must be a number, got 'port'" in bad_port.stderr
  usage = subprocess.run(['bash', MARIADB, 'restart'], capture_output=True, text=True,
                         timeout=60)
  assert usage.returncode != 0 and 'usage:' in usage.stderr


def _holding(holder, path, timeout=30):
  """Waits until the process `holder` has `path` open (its lock taken)."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      if any(os.readlink(os.path.join(f'/proc/{holder.pid}/fd', fd)) == str(path)
             for fd in os.listdir(f'/proc/{holder.pid}/fd')):
        return
    except OSError:
      pass
    time.sleep(0.05)
  raise AssertionError(f'{holder.args} never opened {path}')


def test_mariadb_script_waits_for_debians_package_lock(tmp_path):
  """Another apt/dpkg run holding the package lock (unattended upgrades): installing waits for it
  (`wait-apt-lock`, which `install` runs before apt-get), then goes on; past APT_LOCK_TIMEOUT it
  fails naming the holder. The lock files are temporary ones here, held with flock(1)."""
  lock = tmp_path / 'lock-frontend'
  lock.write_text('')
  env = dict(os.environ, APT_LOCK_FILES=f'{tmp_path / "absent"} {lock}', APT_LOCK_TIMEOUT='120')
  holder = subprocess.Popen(['flock', str(lock), 'sleep', '3'])
  try:
    _holding(holder, lock)
    waited = subprocess.run(['bash', MARIADB, 'wait-apt-lock'], env=env, capture_output=True,
                            text=True, timeout=180)
    assert holder.poll() is not None        # it returned only once the holder had let go
  finally:
    holder.kill()
  assert waited.returncode == 0, waited.stderr
  assert f'waiting for {lock}, held by {holder.pid} (flock {lock} sleep 3)' in waited.stderr

  holder = subprocess.Popen(['flock', str(lock), 'sleep', '300'])
  try:
    _holding(holder, lock)
    timed_out = subprocess.run(['bash', MARIADB, 'wait-apt-lock'],
                               env=dict(env, APT_LOCK_TIMEOUT='1'), capture_output=True,
                               text=True, timeout=60)
    assert holder.poll() is None
  finally:
    holder.kill()
  assert timed_out.returncode != 0
  assert (f'another package manager run still holds {lock} after 1s: {holder.pid} (flock'
          in timed_out.stderr)
  bad = subprocess.run(['bash', MARIADB, 'wait-apt-lock'],
                       env=dict(env, APT_LOCK_TIMEOUT='soon'), capture_output=True, text=True,
                       timeout=60)
  assert bad.returncode != 0
  assert "APT_LOCK_TIMEOUT must be a number of seconds, got 'soon'" in bad.stderr
