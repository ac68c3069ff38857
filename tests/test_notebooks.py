"""The notebooks, executed headless (nbclient) against the artifacts of a small end-to-end run.

Each notebook finds everything through ML Metadata of the run in `trained_home` (LOOPLINE_HOME);
a cell that raises fails the test, and each notebook's SUMMARY line must report what the run
really produced. The committed notebooks carry no outputs.
"""
import glob
import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

from pipeline import metadata_queries as mq
from tests.conftest import NOTEBOOKS_DIR, import_loopline_nb

pytestmark = pytest.mark.timeout(900)

NOTEBOOKS = ('01_data.ipynb', '02_model_analysis.ipynb', '03_lineage.ipynb')


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
                           'LOOPLINE_MLMD_URL': '', 'LOOPLINE_MODEL_VERSION': ''}


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
  from loopline import cli
  config, first = trained_home
  home = str(tmp_path_factory.mktemp('second') / 'home')
  shutil.copytree(config.home, home)
  second_config = dataclasses.replace(config, home=home, train_steps=config.train_steps // 2)
  return second_config, first, cli.train(second_config)


def test_model_analysis_compares_with_the_baseline(second_run):
  config, first, second = second_run
  store = mq.open_pipeline_store(config)
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
