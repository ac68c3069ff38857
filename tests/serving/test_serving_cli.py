"""`serve` as a real process: start-up banner, clean SIGTERM shutdown, and kill -9 during logging
(of the server alone, whose request-log writer process then finishes the files, and of the whole
process group, whose leftovers the next start salvages)."""
import argparse
import base64
import os
import signal
import subprocess
import sys
import threading
import time

import portpicker
import pytest
import requests

from conftest import push
from serving import cli
from serving import log_files
from serving.config import ConfigError
from serving.log_writer import salvage_leftovers
import serving_test_models as tm

pytestmark = pytest.mark.timeout(240)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse(*argv, home=None):
  """Parse like the `loopline` script does: global --home, then the subcommand."""
  parser = argparse.ArgumentParser()
  parser.add_argument('--home')
  subparsers = parser.add_subparsers()
  cli.register(subparsers)
  return parser.parse_args((['--home', str(home)] if home else []) + ['serve', *argv])


def test_defaults_follow_the_home_layout_and_loopback_ports(tmp_path):
  args = parse(home=tmp_path)
  config = cli.config_from_args(args)
  assert (config.rest_host, config.rest_port, config.grpc_host, config.grpc_port) == (
      '127.0.0.1', 8501, '127.0.0.1', 8500)
  entry = config.model_config.model_config_list.config[0]
  assert (entry.name, entry.base_path) == ('big_tipper', str(tmp_path / 'serving' / 'big_tipper'))
  assert config.request_log.directory == str(tmp_path / 'request_logs')
  assert config.batching.enabled and args.func is cli.serve
  assert config.routing_seed is None           # unseeded routing unless asked


def test_the_registry_models_config_is_the_default_when_it_exists(tmp_path):
  registry_file = tmp_path / 'serving' / 'models.config'
  registry_file.parent.mkdir()
  registry_file.write_text('model_config_list { config { name: "big_tipper" base_path: '
                           f'"{tmp_path}/serving/big_tipper" model_platform: "tensorflow" }} }}')
  config = cli.config_from_args(parse(home=tmp_path))
  assert config.model_config is None
  assert config.model_config_file == str(registry_file)
  assert config.model_config_file_poll_wait_seconds == cli.REGISTRY_CONFIG_POLL_SECONDS
  assert cli.config_from_args(parse('--model-config-file-poll-wait-seconds', '0', home=tmp_path)
                              ).model_config_file_poll_wait_seconds == 0.0
  # An explicit choice wins: another file (read once unless asked), or a base path.
  other = tmp_path / 'other.config'
  other.write_text(registry_file.read_text())
  explicit = cli.config_from_args(parse('--model-config-file', str(other), home=tmp_path))
  assert (explicit.model_config_file, explicit.model_config_file_poll_wait_seconds) == (
      str(other), 0.0)
  by_path = cli.config_from_args(parse('--model-base-path', str(tmp_path / 'serving' / 'm'),
                                       home=tmp_path))
  assert by_path.model_config_file is None
  assert by_path.model_config.model_config_list.config[0].base_path == str(
      tmp_path / 'serving' / 'm')


def test_cli_options_reach_the_config(tmp_path):
  key_file = tmp_path / 'key'
  key_file.write_bytes(b'k' * 32)
  config = cli.config_from_args(parse(
      '--canary', 'big_tipper:stable=90,canary=10', '--no-batching',
      '--log-sampling-rate', '0.25', '--redact-feature', 'company', '--hash-feature', 'taxi_id',
      '--log-hash-key-file', str(key_file), '--rest-host', '0.0.0.0', '--routing-seed', '11',
      home=tmp_path))
  assert config.canary_weights == {'big_tipper': {'stable': 90.0, 'canary': 10.0}}
  assert config.routing_seed == 11
  assert not config.batching.enabled and config.request_log.sampling_rate == 0.25
  assert config.privacy.hash_key == b'k' * 32 and config.rest_host == '0.0.0.0'
  config.validate()


def test_bad_options_are_refused(tmp_path, capsys):
  with pytest.raises(SystemExit):
    parse('--canary', 'stable=90')
  with pytest.raises(SystemExit):
    parse('--log-sampling-rate', '2')
  config = cli.config_from_args(parse('--hash-feature', 'taxi_id', home=tmp_path))
  with pytest.raises(ConfigError, match='secret key'):
    config.validate()
  assert cli.serve(parse('--mode', 'gateway', home=tmp_path)) == 1
  assert '--upstream' in capsys.readouterr().err
  for bad in ('0', '-2', 'many'):
    with pytest.raises(SystemExit):
      parse('--workers', bad)
  assert 'positive integer or "auto"' in capsys.readouterr().err
  assert cli.serve(parse('--mode', 'gateway', '--upstream', 'tfs:8500', '--workers', '2',
                         home=tmp_path)) == 1
  assert 'embedded mode only' in capsys.readouterr().err


def test_workers_option(tmp_path):
  assert cli.config_from_args(parse(home=tmp_path)).workers == 1
  assert cli.config_from_args(parse('--workers', '3', home=tmp_path)).workers == 3
  auto = cli.config_from_args(parse('--workers', 'auto', home=tmp_path)).workers
  assert auto == len(os.sched_getaffinity(0))


class ServeProcess:
  """`python -m serving serve` on free loopback ports, its output collected by a thread."""

  def __init__(self, home, *extra):
    self.rest_port, self.grpc_port = portpicker.pick_unused_port(), portpicker.pick_unused_port()
    self.process = subprocess.Popen(
        [sys.executable, '-m', 'serving', '--home', str(home), 'serve',
         '--rest-port', str(self.rest_port), '--grpc-port', str(self.grpc_port), *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # Its own process group: the server and its log writer.
    self.lines = []
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.process.stdout:
      self.lines.append(line)

  @property
  def output(self) -> str:
    return ''.join(self.lines)

  def wait_ready(self, timeout=120):
    deadline = time.monotonic() + timeout
    while 'AVAILABLE versions' not in self.output:
      assert self.process.poll() is None, self.output
      assert time.monotonic() < deadline, self.output
      time.sleep(0.1)

  def predict(self, x, request_id):
    return requests.post(f'http://127.0.0.1:{self.rest_port}/v1/models/big_tipper:predict',
                         json={'instances': [{'b64': base64.b64encode(tm.example(x)).decode()}]},
                         headers={'X-Request-Id': request_id}, timeout=30)

  def kill(self):
    """SIGKILL to the server alone."""
    if self.process.poll() is None:
      self.process.kill()
      self.process.wait(timeout=30)

  def signal_group(self, signum):
    """`signum` to the server and its log writer at once, as a terminal or systemd does."""
    try:
      os.killpg(self.process.pid, signum)
    except ProcessLookupError:
      pass


@pytest.fixture
def home(built_models, tmp_path):
  push(built_models, 'w2', str(tmp_path / 'serving' / 'big_tipper'), 1700000000)
  return tmp_path


def test_sigterm_answers_in_flight_requests_and_finalizes_logs(home):
  server = ServeProcess(home)
  try:
    server.wait_ready()
    assert f'127.0.0.1:{server.grpc_port}' in server.output
    assert 'model big_tipper: AVAILABLE versions 1700000000' in server.output
    for i in range(5):
      assert server.predict(float(i), f'req-{i}').json() == {'predictions': [[2.0 * i]]}
    server.signal_group(signal.SIGTERM)  # The writer ignores it and ends when the server does.
    assert server.process.wait(timeout=60) == 0, server.output
  finally:
    server.signal_group(signal.SIGKILL)
  server._reader.join(timeout=10)  # Until the writer, holding the same output, has ended too.
  assert 'Stopped.' in server.output
  log_dir = home / 'request_logs'
  names = os.listdir(log_dir)
  assert names and all(log_files.is_log_file(n) for n in names)  # Nothing left half-written.
  assert len(log_files.read_log_directory(str(log_dir))) == 5


def fill_log_files(server, log_dir, files: int) -> int:
  """Requests until `files` log files are finalized, then a few more; the number sent."""
  sent = 0
  deadline = time.monotonic() + 60
  while (len([n for n in os.listdir(log_dir) if log_files.is_log_file(n)]) < files and
         time.monotonic() < deadline):
    assert server.predict(1.0, f'k{sent}').status_code == 200
    sent += 1
  for _ in range(5):  # Some more, likely still in the open file or a buffer.
    server.predict(1.0, f'k{sent}')
    sent += 1
  return sent


def test_kill_9_of_the_server_leaves_only_whole_files_which_its_writer_finishes(home):
  log_dir = home / 'request_logs'
  server = ServeProcess(home, '--log-max-file-mb', '0.002')  # ~2 KB files: frequent rotation.
  try:
    server.wait_ready()
    sent = fill_log_files(server, log_dir, 3)
    server.kill()  # SIGKILL to the server: its buffer is lost, the writer reads to the end.
    server._reader.join(timeout=60)  # The writer shares the server's output: it has ended.
    assert not server._reader.is_alive()
  finally:
    server.signal_group(signal.SIGKILL)
  names = os.listdir(log_dir)
  assert len(names) >= 3 and all(log_files.is_log_file(n) for n in names), names
  for name in names:
    assert not log_files.read_records(str(log_dir / name)).truncated, name
  assert len(log_files.read_log_directory(str(log_dir))) <= sent


def test_kill_9_of_server_and_writer_loses_at_most_the_open_file_which_is_then_salvaged(home):
  log_dir = home / 'request_logs'
  server = ServeProcess(home, '--log-max-file-mb', '0.002')
  try:
    server.wait_ready()
    sent = fill_log_files(server, log_dir, 3)
  finally:
    server.signal_group(signal.SIGKILL)  # No clean-up of any kind.
  server.process.wait(timeout=30)
  server._reader.join(timeout=30)
  finalized = [n for n in os.listdir(log_dir) if log_files.is_log_file(n)]
  assert len(finalized) >= 3
  for name in finalized:
    assert not log_files.read_records(str(log_dir / name)).truncated, name
  before = len(log_files.read_log_directory(str(log_dir)))
  salvage_leftovers(str(log_dir))  # What the next start does.
  after = len(log_files.read_log_directory(str(log_dir)))
  assert before <= after <= sent
  assert not [n for n in os.listdir(log_dir) if n.startswith('.')]
