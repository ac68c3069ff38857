"""Shared fixtures: a small, deterministic sample of the bundled spans, a trained home, one MariaDB
for the session, a home where the whole loop ran (ML Metadata on that MariaDB)."""
import csv
import os
import shutil
import socket
import subprocess
import sys

import pytest

from core import spans as spans_lib
from pipeline.config import REPO_ROOT

SPANS_DIR = os.path.join(REPO_ROOT, spans_lib.SPANS_DIR)
NOTEBOOKS_DIR = os.path.join(REPO_ROOT, 'notebooks')
MARIADB = os.path.join(REPO_ROOT, 'scripts', 'mariadb.sh')


def import_loopline_nb():
  """The notebooks' helper module (notebooks/loopline_nb.py), as the notebooks import it."""
  sys.path.insert(0, NOTEBOOKS_DIR)
  try:
    import loopline_nb  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(NOTEBOOKS_DIR)
  return loopline_nb


def read_span(span: int, spans_dir: str = SPANS_DIR):
  with open(spans_lib.span_path(spans_dir, span), newline='') as f:
    reader = csv.DictReader(f)
    return reader.fieldnames, list(reader)


def write_span(spans_dir: str, span: int, header, rows, version: int = 1) -> str:
  path = spans_lib.span_path(spans_dir, span, version)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=header, lineterminator='\n', extrasaction='ignore')
    writer.writeheader()
    writer.writerows(rows)
  return path


def sample_spans(target_dir: str, spans=(1, 2), every: int = 4) -> str:
  """Every `every`-th row of the given bundled spans, renumbered 1..n, under target_dir."""
  for new_span, span in enumerate(spans, start=1):
    header, rows = read_span(span)
    write_span(target_dir, new_span, header, rows[::every])
  return target_dir


@pytest.fixture
def sample_data_root(tmp_path):
  return sample_spans(str(tmp_path / 'spans'))


@pytest.fixture
def repo_schema(tmp_path):
  path = tmp_path / 'schema.pbtxt'
  shutil.copy(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'), path)
  return str(path)


# Thresholds for quick runs on samples (a few hundred eval rows, few training steps): the AUC of
# a quick model, blessed and realized, and an ECE whose sampling noise alone is several points
# on ~250 rows.
SAMPLE_THRESHOLDS = dict(min_auc=0.7, min_realized_auc=0.7, max_ece=0.1)


@pytest.fixture(scope='session')
def trained_home(tmp_path_factory):
  """One quick training run on the sample (spans 1-2), shared read-only by the whole session.

  Returns (PipelineConfig, run summary). Tests that change the home (promote a model, add runs)
  must work on a copy: `shutil.copytree(config.home, ...)` keeps MLMD's absolute artifact URIs
  pointing at this run's artifacts, which is fine for reading.
  """
  from pipeline import training_run
  from pipeline.config import PipelineConfig
  base = tmp_path_factory.mktemp('trained')
  config = PipelineConfig.quick(str(base / 'home'),
                                data_root=sample_spans(str(base / 'spans')),
                                first_span=1, last_span=2, **SAMPLE_THRESHOLDS)
  return config, training_run.train(config)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='session')
def mariadb_url(tmp_path_factory):
  """mysql://loopline:loopline@127.0.0.1:PORT of one MariaDB for the session (installed if
  missing and started with a throwaway data directory by scripts/mariadb.sh); each user names
  its own database. Nothing is skipped: a server that cannot start fails the tests that need it.
  """
  datadir = str(tmp_path_factory.mktemp('mariadb'))
  started = subprocess.run(['bash', MARIADB, 'start', datadir, str(free_port())],
                           capture_output=True, text=True, timeout=1800)
  if started.returncode != 0:
    pytest.fail(f'scripts/mariadb.sh could not start MariaDB:\n{started.stderr[-3000:]}')
  yield started.stdout.strip().splitlines()[-1]
  stopped = subprocess.run(['bash', MARIADB, 'stop', datadir], capture_output=True, text=True,
                           timeout=120)
  assert stopped.returncode == 0, stopped.stderr


def reader_url(mariadb_url: str, database: str = 'loopline_mlmd') -> str:
  """The SELECT-only user scripts/mariadb.sh creates, on `database` of the session's server."""
  host = mariadb_url.rpartition('@')[2]
  return f'mysql://loopline_reader:loopline_reader@{host}/{database}'


LOOP_SAMPLE = ((1, 4), (2, 4), (6, 4), (7, 1), (8, 1))   # (bundled span, keep every n-th row)
LOOP_DATABASE = 'loopline_loop'


def run_sample_loop(base: str, say=None, mysql_url=None):
  """The whole loop (`loopline loop`) on a sample of the bundled spans under `base`: training
  spans 1-2, span 6 (canary traffic, every 4th row), spans 7-8 (drifted traffic, every row);
  ML Metadata on MySQL at `mysql_url` (mysql://USER:PASSWORD@HOST:PORT/DB), else SQLite.

  Returns (PipelineConfig, the loop's results, its messages)."""
  from metadata import connection as metadata_connection
  from pipeline import loop
  from pipeline.config import PipelineConfig
  data_root = os.path.join(base, 'spans')
  for span, every in LOOP_SAMPLE:
    header, rows = read_span(span)
    write_span(data_root, span, header, rows[::every])
  config = PipelineConfig.quick(
      os.path.join(base, 'home'), data_root=data_root, first_span=1, last_span=2,
      mysql=metadata_connection.parse_mysql_url(mysql_url) if mysql_url else None,
      **SAMPLE_THRESHOLDS)
  messages = []

  def record(message):
    messages.append(message)
    if say:
      say(message)
  return config, loop.run_loop(config, say=record), messages


@pytest.fixture(scope='session')
def loop_results(tmp_path_factory, mariadb_url):
  """One run of the whole loop, shared read-only by the session (tests/test_loop_e2e.py and the
  monitoring notebook's test): several minutes, so it runs once, with ML Metadata on the
  session's MariaDB (database LOOP_DATABASE), as `LOOPLINE_MLMD_URL=mysql://... make run` runs
  it; SQLite is the store of every other run of the suite. Returns (PipelineConfig, results,
  messages)."""
  return run_sample_loop(str(tmp_path_factory.mktemp('loop')),
                         mysql_url=f'{mariadb_url}/{LOOP_DATABASE}')
