"""ML Metadata on MySQL, as in a cluster: the quick training pipeline runs against a real
MySQL-compatible server on loopback (Debian's MariaDB, installed if missing and started with a
throwaway data directory by scripts/mariadb.sh), and the lineage is read back from it; then a small
window of served traffic is monitored on the same database, and a SELECT-only user reads
everything back, all four notebooks included.

Nothing is skipped: if MariaDB cannot be installed or started, or MLMD's MySQL client cannot talk
to it, the test fails with that error.
"""
import dataclasses
import json
import os
import socket
import subprocess

import pytest

from metadata import connection as metadata_connection
from metadata import queries as mq
from pipeline import training_pipeline
from pipeline import training_run
from pipeline.config import REPO_ROOT, PipelineConfig
from tests.conftest import import_loopline_nb, read_span, sample_spans

pytestmark = pytest.mark.timeout(1200)

MARIADB = os.path.join(REPO_ROOT, 'scripts', 'mariadb.sh')
MONITORED_ROWS = 200          # the monitoring window of the select-only notebook test


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def mysql_url(tmp_path_factory):
  """mysql://loopline:loopline@127.0.0.1:PORT of a MariaDB started for this module."""
  datadir = str(tmp_path_factory.mktemp('mariadb'))
  started = subprocess.run(['bash', MARIADB, 'start', datadir, str(_free_port())],
                           capture_output=True, text=True, timeout=900)
  if started.returncode != 0:
    pytest.fail(f'scripts/mariadb.sh could not start MariaDB:\n{started.stderr[-3000:]}')
  yield started.stdout.strip().splitlines()[-1]
  stopped = subprocess.run(['bash', MARIADB, 'stop', datadir], capture_output=True, text=True,
                           timeout=120)
  assert stopped.returncode == 0, stopped.stderr



@pytest.fixture(scope='module')
def mysql_run(mysql_url, tmp_path_factory):
  """The quick pipeline on MySQL, run as `loopline train` runs it (LocalDagRunner), then read
  back with the run summary; the registry stages its pushed model later (a SELECT-only user first
  fails to)."""
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from pipeline import run_summary
  base = tmp_path_factory.mktemp('mysql_run')
  config = PipelineConfig.quick(
      str(base / 'home'), data_root=sample_spans(str(base / 'spans')), first_span=1,
      last_span=2, min_auc=0.6, enable_tuning=False, train_steps=150, eval_steps=5,
      mysql=metadata_connection.parse_mysql_url(f'{mysql_url}/loopline_mlmd'))
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


def test_lineage_of_the_served_model_read_back_from_mysql(mysql_run, mysql_url, monkeypatch):
  config, summary = mysql_run
  nb = import_loopline_nb()
  monkeypatch.setenv('LOOPLINE_HOME', config.home)
  monkeypatch.setenv('LOOPLINE_MLMD_URL', f'{mysql_url}/loopline_mlmd')
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


def _reader_url(mysql_url: str) -> str:
  """The SELECT-only user scripts/mariadb.sh creates, on the module's database."""
  host = mysql_url.rpartition('@')[2]
  return f'mysql://loopline_reader:loopline_reader@{host}/loopline_mlmd'


def test_a_select_only_user_reads_the_registry_lineage_and_notebooks_but_cannot_write(
    mysql_run, mysql_url, monkeypatch, capsys):
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
      _reader_url(mysql_url)))
  monkeypatch.setenv('LOOPLINE_MLMD_URL', _reader_url(mysql_url))

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

  env = {'LOOPLINE_HOME': config.home, 'LOOPLINE_MLMD_URL': _reader_url(mysql_url)}
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
    mysql_monitoring_run, mysql_url):
  from tests.test_notebooks import execute, summary_line
  config, summary, monitored = mysql_monitoring_run
  version = str(summary['pushed_version'])
  store = metadata_connection.open_pipeline_store(config)
  runs = [r.name for r in mq.run_contexts(store, config.monitoring_pipeline_name)]
  assert runs == [monitored['run_id']]
  assert monitored['num_examples'] == monitored['num_labeled'] == MONITORED_ROWS
  _, text = execute('04_monitoring.ipynb', {
      'LOOPLINE_HOME': config.home, 'LOOPLINE_MLMD_URL': _reader_url(mysql_url),
      'LOOPLINE_RUN_ID': '', 'LOOPLINE_MONITORING_RUN_ID': ''})
  line = summary_line(text, 'monitoring')
  assert line.startswith(f'run {monitored["run_id"]}; 1 runs; '), line
  assert f'; verdicts {version}:{monitored["versions"][version]["verdict"]};' in line
  assert f'; window {MONITORED_ROWS} logged, {MONITORED_ROWS} labelled (' in line
  auc = monitored['versions'][version]['realized']['auc']
  assert line.endswith(f'; version {version} (stable) AUC {auc:.3f} on {MONITORED_ROWS}'), line


def test_bad_mysql_options_say_what_is_wrong(mysql_url, tmp_path):
  nb = import_loopline_nb()
  good = metadata_connection.parse_mysql_url(f'{mysql_url}/loopline_mlmd')
  wrong_password = metadata_connection.parse_mysql_url(
      f'mysql://{good.username}:not-the-password@{good.host}:{good.port}/loopline_mlmd')
  config = PipelineConfig(home=str(tmp_path), mysql=wrong_password)
  with pytest.raises(ConnectionError, match=r'cannot open ML Metadata on MySQL '
                                            r'loopline@127\.0\.0\.1:\d+/loopline_mlmd: the server '
                                            r'answers: check the user, password and database '
                                            r'\(MLMD: mysql_real_connect failed'):
    nb.open_run(config=config)
  closed = metadata_connection.parse_mysql_url(f'mysql://loopline@127.0.0.1:{_free_port()}/x')
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
