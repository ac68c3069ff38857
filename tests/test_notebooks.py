"""The notebooks, executed headless (nbclient) against the artifacts of small end-to-end runs.

Notebooks 1-3 find everything through ML Metadata of the training run in `trained_home`, notebook
4 (monitoring) through ML Metadata of the home where the whole loop ran (`loop_results`, shared
with tests/test_loop_e2e.py, its ML Metadata on MariaDB); LOOPLINE_HOME points at the home. A cell that raises fails the
test, and each notebook's SUMMARY line must report what the run really produced. The committed
notebooks carry no outputs.
"""
import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from metadata import connection as metadata_connection
from metadata import queries as mq
from tests.conftest import LOOP_DATABASE, NOTEBOOKS_DIR, import_loopline_nb, reader_url

pytestmark = pytest.mark.timeout(900)

NOTEBOOKS = ('01_data.ipynb', '02_model_analysis.ipynb', '03_lineage.ipynb',
             '04_monitoring.ipynb')


def execute(name, env):
  """Runs the notebook in a fresh kernel with `env` set; returns (notebook, printed text)."""
  book = nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    NotebookClient(book, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': NOTEBOOKS_DIR}}).execute()
  finally:
    for key, value in saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value
  text = ''.join(output.get('text', '') for cell in book.cells if cell.cell_type == 'code'
                 for output in cell.get('outputs', []) if output.get('output_type') == 'stream')
  return book, text


def summary_line(text, name):
  found = re.findall(rf'^SUMMARY {name}: (.*)$', text, flags=re.MULTILINE)
  assert len(found) == 1, text[-3000:]
  return found[0]


def _display_types(book):
  return {key for cell in book.cells if cell.cell_type == 'code'
          for output in cell.get('outputs', [])
          for key in output.get('data', {})}


@pytest.fixture(scope='module')
def home_env(trained_home):
  config, summary = trained_home
  return config, summary, {'LOOPLINE_HOME': config.home, 'LOOPLINE_RUN_ID': '',
                           'LOOPLINE_MLMD_URL': '', 'LOOPLINE_MODEL_VERSION': '',
                           'LOOPLINE_MONITORING_RUN_ID': ''}


def test_committed_notebooks_have_no_outputs():
  assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(NOTEBOOKS_DIR, '*.ipynb'))
                ) == sorted(NOTEBOOKS)
  for name in NOTEBOOKS:
    book = nbformat.read(os.path.join(NOTEBOOKS_DIR, name), as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
      if cell.cell_type == 'code':
        assert cell.outputs == [] and cell.execution_count is None, name
    # Inputs come from MLMD: no artifact path is written in a notebook.
    sources = '\n'.join(cell.source for cell in book.cells)
    assert 'pipeline_root' not in sources and 'loopline_home' not in sources, name


def test_data_notebook(home_env):
  config, summary, env = home_env
  book, text = execute('01_data.ipynb', env)
  line = summary_line(text, 'data')
  assert f'run {summary["run_id"]};' in line
  assert 'spans 1, 2;' in line
  rows = [int(r) for r in re.search(r'rows (\d+), (\d+);', line).groups()]
  assert all(r > 100 for r in rows)
  assert re.search(r'drift span 2 vs 1: \d+ features compared', line)
  assert int(re.search(r'(\d+) features compared', line).group(1)) >= 10
  assert 'schema: ' in text and 'data gate: verdict=' in text
  findings = summary['data_gate']['findings']          # the gate's findings, as the run saw them
  assert (findings[0]['description'] in text) if findings else ('  no finding' in text)
  assert re.search(r'span 2: \d+ rows, \d+ anomalies', text)   # SpanValidator, per span
  assert re.search(r'statistics train: \d+ examples', text)
  assert 'text/html' in _display_types(book)             # TFDV's visualizations


def test_model_analysis_notebook(home_env):
  config, summary, env = home_env
  book, text = execute('02_model_analysis.ipynb', env)
  line = summary_line(text, 'model')
  assert f'run {summary["run_id"]};' in line
  assert f'AUC {summary["overall"]["auc"]:.3f}' in line
  assert ('BLESSED' if summary['blessed'] else 'NOT BLESSED') in line
  assert 'no baseline: this is the first blessed model' in line
  assert f'pushed version {summary["pushed_version"]}' in line
  assert 'validation ok: True' in text
  for column in ('payment_type', 'trip_start_hour', 'company'):
    assert f'{column}: ' in text


def test_lineage_notebook(home_env):
  config, summary, env = home_env
  book, text = execute('03_lineage.ipynb', env)
  line = summary_line(text, 'lineage')
  assert line.startswith(f'big_tipper version {summary["pushed_version"]} <- Trainer <- spans '
                         f'1-2 (versions 1:1,2:1)')
  assert 'hyperparameters tuned' in line
  assert f'evaluation AUC {summary["overall"]["auc"]:.3f}, blessed' in line
  assert 'image/png' in _display_types(book)             # the drawn graph
  assert re.search(r'lineage: \d+ artifacts, \d+ executions', text)
  assert f'spans 1-2 (versions 1:1,2:1) from {config.data_root}' in text


def test_a_run_by_id_and_an_unknown_run(home_env, monkeypatch):
  config, summary, env = home_env
  nb = import_loopline_nb()
  monkeypatch.setenv('LOOPLINE_HOME', config.home)
  monkeypatch.setenv('LOOPLINE_RUN_ID', summary['run_id'])
  assert nb.list_runs() == [summary['run_id']]
  run = nb.open_run()
  assert run.run_id == summary['run_id'] and 'Trainer' in run.records
  monkeypatch.setenv('LOOPLINE_RUN_ID', 'no-such-run')
  with pytest.raises(LookupError, match=f"no run 'no-such-run' of 'loopline-training'; runs: "
                                        f"{re.escape(summary['run_id'])}"):
    nb.open_run()
  with pytest.raises(LookupError, match='no pushed model version 12345'):
    nb.pushed_model(run, '12345')


def test_a_home_without_metadata_says_so(tmp_path, monkeypatch):
  nb = import_loopline_nb()
  monkeypatch.delenv('LOOPLINE_MLMD_URL', raising=False)
  config = nb.config_from_env(str(tmp_path))
  with pytest.raises(FileNotFoundError, match='no ML Metadata at .*run `loopline train` first'):
    nb.open_run(config=config)
  monkeypatch.setenv('LOOPLINE_MLMD_URL', 'mysql://nobody@/db')
  with pytest.raises(ValueError, match='has no host'):
    nb.config_from_env(str(tmp_path))


@pytest.fixture(scope='module')
def second_run(trained_home, tmp_path_factory):
  """A copy of the trained home with a second run: a new model, evaluated against the first."""
  import dataclasses
  import shutil
  from pipeline import training_run
  config, first = trained_home
  home = str(tmp_path_factory.mktemp('second') / 'home')
  shutil.copytree(config.home, home)
  second_config = dataclasses.replace(config, home=home, train_steps=config.train_steps // 2)
  return second_config, first, training_run.train(second_config)


def test_model_analysis_compares_with_the_baseline(second_run):
  config, first, second = second_run
  store = metadata_connection.open_pipeline_store(config)
  run = mq.run_contexts(store, config.pipeline_name)[-1]
  records = {r.node_id: r for r in mq.execution_records(store, run)}
  baseline = records['Evaluator'].inputs['baseline_model'][0]
  candidate = records['Evaluator'].inputs['model'][0]
  assert baseline.id != candidate.id
  _, text = execute('02_model_analysis.ipynb', {'LOOPLINE_HOME': config.home,
                                                'LOOPLINE_RUN_ID': '', 'LOOPLINE_MLMD_URL': ''})
  line = summary_line(text, 'model')
  assert f'run {second["run_id"]};' in line
  assert (f"baseline model #{baseline.id} (the Evaluator's baseline): AUC "
          f'{first["overall"]["auc"]:.3f} -> {second["overall"]["auc"]:.3f}') in line
  assert ('BLESSED' if second.get('blessed') else 'NOT BLESSED') in line


# --- 4. monitoring, on the home where the whole loop ran ----------------------------------------

def _verdicts(summary, order):
  return ','.join(f'{v}:{summary["versions"][v]["verdict"]}' for v in order
                  if v in summary['versions'])


@pytest.mark.timeout(2400)        # the loop itself, when this test is the first to need it
def test_monitoring_notebook(loop_results, mariadb_url):
  """The loop's ML Metadata is on MariaDB: the notebook reads it with the SELECT-only user."""
  import registry.checks
  config, results, _ = loop_results
  stable, canary = str(results['first_version']), str(results['canary_version'])
  book, text = execute('04_monitoring.ipynb', {
      'LOOPLINE_HOME': config.home, 'LOOPLINE_RUN_ID': '',
      'LOOPLINE_MLMD_URL': reader_url(mariadb_url, LOOP_DATABASE),
      'LOOPLINE_MONITORING_RUN_ID': ''})
  line = summary_line(text, 'monitoring')
  latest = results['canary']
  store = metadata_connection.open_pipeline_store(config)
  runs = [r.name for r in mq.run_contexts(store, config.monitoring_pipeline_name)]
  assert runs == [results['clean']['run_id'], results['drifted']['run_id'], latest['run_id']]
  assert line.startswith(f'run {latest["run_id"]}; 3 runs; ')
  # Every run's verdicts, oldest first, stable before canary: clean, drifted, canary window.
  verdicts = ' | '.join(_verdicts(results[key], (stable, canary))
                        for key in ('clean', 'drifted', 'canary'))
  assert f'; verdicts {verdicts};' in line
  assert f' | {stable}:critical | {stable}:' in verdicts       # the drifted window's alarm
  other_windows = latest['skipped'].get('labels_outside_window', 0)
  # Ground truth of the two earlier replays is in the feedback directory too: counted, not used.
  assert other_windows == results['clean']['num_examples'] + results['drifted']['num_examples']
  unusable = sum(latest['skipped'].values()) - other_windows
  assert (f'; window {latest["num_examples"]} logged, {latest["num_labeled"]} labelled '
          f'({other_windows} labels of other windows, {unusable} records or labels '
          f'unusable);') in line
  # Each version's realized AUC on its own labelled requests, as the registry reads them from
  # MLMD (the newest RealizedMetrics per version: this window's).
  realized = registry.checks.realized_metrics(store, config.model_name)
  parts = []
  for version, label in ((stable, 'stable'), (canary, 'canary')):
    info = latest['versions'][version]['realized']
    assert realized[int(version)]['auc'] == pytest.approx(info['auc'])
    assert 0 < info['example_count'] == results['canary_replay']['versions'][version]
    parts.append(f'version {version} ({label}) AUC {info["auc"]:.3f} on '
                 f'{int(info["example_count"])}')
  assert line.endswith('; ' + ', '.join(parts)), line
  # The review's parts ran: history, per-version drift, realized, feedback.
  assert f'run 2 ({results["drifted"]["run_id"]}): version {stable} (stable) critical' in text
  assert f'drift report of version {canary} (canary): ' in text
  assert 'canary - stable realized AUC: ' in text
  assert 'version labels from the registry at the time of the run' in text
  assert 'labels outside window' in text and 'payment_type: ' in text
  assert {'image/png', 'text/html'} <= _display_types(book)


def test_monitoring_helpers_read_any_run_by_id(loop_results, monkeypatch):
  config, results, _ = loop_results
  nb = import_loopline_nb()
  monkeypatch.setenv('LOOPLINE_HOME', config.home)
  monkeypatch.setenv('LOOPLINE_MLMD_URL', metadata_connection.mysql_url(config.mysql))
  monkeypatch.setenv('LOOPLINE_MONITORING_RUN_ID', results['drifted']['run_id'])
  run = nb.open_monitoring_run()
  summary = nb.monitoring_summary(run)
  stable = str(results['first_version'])
  assert summary['run_id'] == results['drifted']['run_id']
  assert set(summary['versions']) == {stable}
  assert summary['versions'][stable]['label'] == 'stable'   # before the canary was staged
  assert summary['versions'][stable]['verdict'] == 'critical'
  report = nb.drift_report(run, stable)
  worst = nb.worst_measure(report)
  assert worst['status'] == 'critical' and worst['ratio'] >= 1.0
  assert 'fare' in set(nb.measures_table(report).query('status == "critical"').measure)
  # The latest run labels both versions as the registry had them then.
  latest = nb.monitoring_summary(nb.open_monitoring_run(results['canary']['run_id']))
  assert {v: i['label'] for v, i in latest['versions'].items()} == {
      stable: 'stable', str(results['canary_version']): 'canary'}
  # Realized performance sliced like the training evaluation, per version: canary and stable
  # compare slice by slice, and the per-version slices add up to the slice of both.
  slices = nb.realized_slices(nb.open_monitoring_run(results['canary']['run_id']))
  payment = slices[slices.column == 'payment_type']
  assert set(payment.version) == {'', stable, str(results['canary_version'])}
  for value in set(name.split('payment_type=')[1] for name in payment.index):
    rows = payment[[name.endswith(f'payment_type={value}') for name in payment.index]]
    together = rows[rows.version == ''].example_count.sum()
    assert rows[rows.version != ''].example_count.sum() == together, value


def test_monitoring_helpers_on_bad_input(loop_results, trained_home, tmp_path, monkeypatch):
  config, results, _ = loop_results
  nb = import_loopline_nb()
  monkeypatch.delenv('LOOPLINE_MLMD_URL', raising=False)
  monkeypatch.delenv('LOOPLINE_MONITORING_RUN_ID', raising=False)
  loop_config = config                        # the loop's ML Metadata is on MariaDB
  runs = nb.list_monitoring_runs(loop_config)
  assert runs == [results[k]['run_id'] for k in ('clean', 'drifted', 'canary')]
  with pytest.raises(LookupError, match=(
      f"no run 'no-such-run' of 'loopline-monitoring'; runs: {re.escape(', '.join(runs))}$")):
    nb.open_monitoring_run('no-such-run', config=loop_config)
  # A home where training ran but monitoring never did.
  with pytest.raises(LookupError, match=(
      r"no run of the monitoring pipeline 'loopline-monitoring' in ML Metadata at .*"
      r"metadata\.sqlite: run `loopline loop` or `loopline monitor` first")):
    nb.open_monitoring_run(config=nb.config_from_env(trained_home[0].home))
  # A home with no metadata at all.
  with pytest.raises(FileNotFoundError, match='no ML Metadata at'):
    nb.open_monitoring_run(config=nb.config_from_env(str(tmp_path)))
  # A version the run did not monitor.
  run = nb.open_monitoring_run(results['clean']['run_id'], config=loop_config)
  with pytest.raises(LookupError, match=(
      f"run {re.escape(run.run_id)} has no DriftDetector output 'report' for version 12345 "
      f"\\(versions: {results['first_version']}\\)")):
    nb.drift_report(run, '12345')
