"""`loopline loop` (the README's `make run`): the whole loop on the bundled data, no manual step.

 1. train on the training spans (1-5); the first blessed model becomes production (`stable`)
 2. serve it: the embedded TF-Serving-compatible server, REST + gRPC, request logging on
 3. replay clean traffic -> deliver its ground truth -> monitor: no alarm expected. Clean means
    the training distribution: rows of the training period the model never trained on (the eval
    split of its spans). The held-back future spans are not clean: 2015-2016 really differs from
    2013-2015 (more card payments, more big tippers, longer trips), and the monitor says so.
 4. replay drifted traffic (the future spans 7-8, with fares inflated on top) -> ground truth ->
    monitor: a critical alarm naming the shifted features
 5. the labelled serving window of the alarm becomes the next training span; retrain on it
 6. the new blessed model is pushed and staged as `canary` beside `stable`; the server picks the
    label up without restart and answers part of the traffic with it. That traffic (span 6, 2015
    H2, which neither model trained on, with the same fare inflation) goes the same way as in 3
    and 4: replay -> ground truth -> monitor, so the monitoring pipeline scores stable and canary
    each on its own labelled requests (drift and realized metrics per version), side by side
 7. a summary, and one HTML report linking every stage's results

The training spans live in `<home>/spans` (seeded from data/spans), so new spans never touch
the repository.
"""
import dataclasses
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional

from core import home as home_lib
from core import spans as spans_lib
from pipeline.config import PipelineConfig
from traffic import replay as replay_lib

CLEAN_SPLIT = 'eval'
DRIFT_SPANS = (7, 8)
DRIFT_SCENARIO = 'fare_inflation'
# Canary traffic: rows neither model trained on (the retrained one saw every replayed row of
# spans 7-8 with its label), in the scenario the canary was retrained for.
CANARY_SPANS = (6, 6)
CANARY_WEIGHTS = 'stable=80,canary=20'
# Reproducible canary split: each replayed row carries its position as the routing key, which the
# seed hashes; two loops on the same data send the same rows to the same label.
ROUTING_SEED = 11
LOG_FILE_AGE_SECONDS = 2


class LoopError(RuntimeError):
  """A stage of the loop did not produce what the next one needs; the message says which."""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class EmbeddedServer:
  """`loopline serve` (as `python -m serving serve`) in a subprocess on free loopback ports,
  reading the home's models.config."""

  def __init__(self, home: str, model_name: str, log_file: str):
    self.home, self.model_name, self.log_file = home, model_name, log_file
    self.rest_port, self.grpc_port = _free_port(), _free_port()
    self.process: Optional[subprocess.Popen] = None

  def start(self, timeout: float = 120.0) -> None:
    command = [sys.executable, '-m', 'serving', '--home', self.home, 'serve',
               '--model-config-file', home_lib.serving_config_path(self.home),
               '--model-config-file-poll-wait-seconds', '1',
               '--rest-port', str(self.rest_port), '--grpc-port', str(self.grpc_port),
               '--canary', f'{self.model_name}:{CANARY_WEIGHTS}',
               '--sticky-header', replay_lib.ROUTING_KEY_HEADER,
               '--routing-seed', str(ROUTING_SEED),
               '--log-max-file-age-seconds', str(LOG_FILE_AGE_SECONDS)]
    os.makedirs(os.path.dirname(self.log_file), exist_ok=True)
    self._log = open(self.log_file, 'ab')
    self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise LoopError(f'the model server exited with {self.process.returncode}; see '
                        f'{self.log_file}')
      if self.available_versions():
        return
      time.sleep(0.5)
    raise LoopError(f'the model server did not serve a version within {timeout:.0f}s; see '
                    f'{self.log_file}')

  def status(self) -> Dict[str, Any]:
    connection = http.client.HTTPConnection('127.0.0.1', self.rest_port, timeout=5)
    try:
      connection.request('GET', f'/v1/models/{self.model_name}')
      response = connection.getresponse()
      return json.loads(response.read() or b'{}') if response.status == 200 else {}
    except (OSError, ValueError):
      return {}
    finally:
      connection.close()

  def available_versions(self) -> List[str]:
    return [v['version'] for v in self.status().get('model_version_status', [])
            if v.get('state') == 'AVAILABLE']

  def wait_for_versions(self, versions: List[str], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if set(versions) <= set(self.available_versions()):
        return
      time.sleep(0.5)
    raise LoopError(f'versions {versions} not AVAILABLE after {timeout:.0f}s (available: '
                    f'{self.available_versions()}); see {self.log_file}')

  def stop(self) -> None:
    if self.process and self.process.poll() is None:
      self.process.terminate()            # SIGTERM: in-flight answered, logs finalized
      try:
        self.process.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.process.kill()
    if self.process:
      self._log.close()


def wait_for_finalized_logs(log_dir: str, timeout: float = 30.0) -> None:
  """Waits until the server has renamed every open log file (only finalized ones are read)."""
  deadline = time.monotonic() + timeout
  time.sleep(LOG_FILE_AGE_SECONDS)
  while time.monotonic() < deadline:
    if os.path.isdir(log_dir) and not any(n.endswith('.tmp') for n in os.listdir(log_dir)):
      return
    time.sleep(0.5)
  raise LoopError(f'request log files under {log_dir} were not finalized within {timeout:.0f}s')


def seed_spans(source_root: str, target_root: str, first: int, last: int) -> None:
  """Copies the training spans into the home (once), so new spans are added beside them."""
  for span, version in spans_lib.check_span_range(source_root, first, last).items():
    target = spans_lib.span_path(target_root, span, version)
    if not os.path.exists(target):
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.copy(spans_lib.span_path(source_root, span, version), target)


@dataclasses.dataclass
class Stage:
  name: str
  text: str
  links: Dict[str, str] = dataclasses.field(default_factory=dict)


def replay_window(config: PipelineConfig, server: EmbeddedServer, rows, scenario: str,
                  seed: int = 0, say: Callable[[str], None] = print):
  """Replays `rows` through the server (REST) and delivers their ground truth. Returns (replay
  result, window start, window end): the window (unix seconds, end exclusive) of the replay's
  finalized request logs."""
  from traffic import runs as traffic_runs
  window_start = int(time.time())
  replayed = traffic_runs.run_replay(
      config.home, rows, scenario, 'rest', '127.0.0.1', server.rest_port, concurrency=8,
      rate=0.0, seed=seed, schema_path=config.schema_path)
  wait_for_finalized_logs(home_lib.request_log_dir(config.home))
  window_end = int(time.time()) + 1
  delivered = traffic_runs.deliver_feedback(config.home, replayed.replay_id)
  say(f'ground truth delivered: {delivered}')
  return replayed, window_start, window_end


def replay_and_monitor_window(config: PipelineConfig, server: EmbeddedServer, rows,
                              scenario: str, seed: int = 0, say: Callable[[str], None] = print):
  """`replay_window`, then the monitoring pipeline on the window of the replay. Returns (replay
  result, monitoring summary)."""
  from pipeline import monitoring_run
  replayed, window_start, window_end = replay_window(config, server, rows, scenario, seed, say)
  return replayed, monitoring_run.monitor(config, window_start, window_end)


def run_loop(config: PipelineConfig, say: Callable[[str], None] = print,
             replay_limit: Optional[int] = None) -> Dict[str, Any]:
  """Runs the whole loop (see module docstring); returns the results of every stage."""
  from pipeline import feedback_span, monitoring_run, loop_report, run_summary, training_run
  from traffic import runs as traffic_runs
  bundled_root = config.data_root
  home_spans = os.path.join(config.home, 'spans')
  seed_spans(bundled_root, home_spans, config.first_span, config.last_span)
  for first, last in (DRIFT_SPANS, CANARY_SPANS):    # the traffic of stages 4 and 6, checked now
    spans_lib.check_span_range(bundled_root, first, last)
  config = dataclasses.replace(config, data_root=home_spans)
  stages: List[Stage] = []
  results: Dict[str, Any] = {'stages': stages}

  def stage(name: str, text: str, **links) -> None:
    """Records a finished stage for the report and shows its result."""
    stages.append(Stage(name, text, links))
    say(text)

  say('== 1. train on the training spans')
  trained = training_run.train(config, holdout_spans=spans_lib.FUTURE_SPANS,
                               holdout_data_root=bundled_root)
  training_run.stage_in_registry(config, trained)
  stage('1. train', run_summary.format_summary(trained))
  if not trained.get('pushed_version'):
    raise LoopError('the first model was not blessed and pushed; nothing to serve')
  results['first_version'] = trained['pushed_version']

  server = EmbeddedServer(config.home, config.model_name,
                          os.path.join(config.home, 'logs', 'server.log'))
  say('\n== 2. serve')
  server.start()
  try:
    stage('2. serve', f'REST 127.0.0.1:{server.rest_port}, gRPC 127.0.0.1:{server.grpc_port}; '
                      f'AVAILABLE: {", ".join(server.available_versions())}')

    def replay_and_monitor(label: str, rows, scenario: str, seed: int = 0,
                           describe: Optional[Callable[[Any, Dict[str, Any]], str]] = None):
      """Replay -> ground truth -> monitoring pipeline on that window; records the stage.

      Returns (replay result, monitoring summary). `describe(replayed, monitored)`: extra text
      put first in the stage's text."""
      replayed, monitored = replay_and_monitor_window(
          config, server, rows[:replay_limit] if replay_limit else rows, scenario, seed, say)
      text = f'{replayed.summary()}\n{monitoring_run.format_monitoring(monitored)}'
      if describe:
        text = f'{describe(replayed, monitored)}\n{text}'
      stage(label, text,
            **{f'drift report, version {v}': info['report_html']
               for v, info in monitored['versions'].items() if info.get('report_html')})
      time.sleep(1)       # the next window starts on a later second
      return replayed, monitored

    columns = _span_columns(home_spans)
    say(f'\n== 3. replay clean traffic (the {CLEAN_SPLIT} split of spans '
        f'{config.first_span}-{config.last_span}), feedback, monitor')
    clean_rows = feedback_span.read_labeled_rows(trained['examples_uri'], columns, CLEAN_SPLIT)
    _, results['clean'] = replay_and_monitor('3. clean traffic', clean_rows, 'none')
    say(f'\n== 4. replay drifted traffic (spans {DRIFT_SPANS[0]}-{DRIFT_SPANS[1]}, '
        f'{DRIFT_SCENARIO}), feedback, monitor')
    drift_rows = traffic_runs.load_rows(bundled_root, *DRIFT_SPANS)
    _, drifted = replay_and_monitor('4. drifted traffic', drift_rows, DRIFT_SCENARIO)
    results['drifted'] = drifted
    if not drifted['retrain']:
      raise LoopError('the drifted window raised no critical alarm: nothing triggers retraining')

    say('\n== 5. the labelled serving window becomes the next span; retrain')
    rows = feedback_span.read_labeled_rows(drifted['examples_uri'], columns)
    span, path = feedback_span.write_next_span(home_spans, columns, rows)
    retrain_config = dataclasses.replace(config, last_span=span)
    retrained = training_run.train(retrain_config)
    training_run.stage_in_registry(retrain_config, retrained)
    stage('5. retrain', f'new span {span} ({len(rows)} labelled rows): {path}\n'
                        + run_summary.format_summary(retrained))
    results['new_span'] = span
    if not retrained.get('pushed_version') or retrained['pushed_version'] == trained[
        'pushed_version']:
      raise LoopError('the retrained model was not pushed as a new version')
    results['canary_version'] = retrained['pushed_version']

    say(f'\n== 6. serve the new version as canary; replay (span {CANARY_SPANS[0]}, '
        f'{DRIFT_SCENARIO}), feedback, monitor stable and canary')
    server.wait_for_versions([str(trained['pushed_version']), str(retrained['pushed_version'])])
    results['server_status'] = server.status()
    results['canary_labels'] = serving_labels(config)

    def canary_text(replayed, monitored) -> str:
      return (f'server status: {json.dumps(results["server_status"])}\n'
              + format_canary_comparison(canary_comparison(monitored, results['canary_labels'],
                                                           replayed.versions)))

    canary_rows = traffic_runs.load_rows(bundled_root, *CANARY_SPANS)
    canary_traffic, results['canary'] = replay_and_monitor(
        '6. canary', canary_rows, DRIFT_SCENARIO, seed=1, describe=canary_text)
    results['canary_replay'] = dataclasses.asdict(canary_traffic)
    results['canary_comparison'] = canary_comparison(
        results['canary'], results['canary_labels'], canary_traffic.versions)
  finally:
    server.stop()
  results['report'] = loop_report.write(config, stages)
  say(f'\nReport: {results["report"]}')
  return results


def serving_labels(config: PipelineConfig) -> Dict[str, int]:
  """{label: version} of the model in the home's models.config (as the registry wrote it)."""
  from registry import serving_config
  path = home_lib.serving_config_path(config.home)
  return serving_config.labels(serving_config.parse(serving_config.read_text(path), path),
                               config.model_name)


LABEL_ORDER = ('stable', 'canary')


def canary_comparison(monitored: Dict[str, Any], labels: Dict[str, int],
                      answered: Optional[Dict[str, int]] = None) -> List[Dict[str, Any]]:
  """One row per monitored version, stable first: label, requests answered (replay), logged and
  labelled rows (monitoring window), realized AUC, accuracy and expected calibration error, drift
  verdict."""
  label_of = {str(version): label for label, version in labels.items()}
  logged = dict(item.split(':') for item in (monitored.get('model_versions') or '').split(',')
                if ':' in item)
  rows = []
  for version, info in monitored['versions'].items():
    realized = info.get('realized') or {}
    rows.append({
        'version': version, 'label': label_of.get(version, '-'),
        'answered': (answered or {}).get(version, 0), 'logged': int(logged.get(version, 0)),
        'labelled': int(realized.get('example_count') or 0), 'auc': realized.get('auc'),
        'accuracy': realized.get('binary_accuracy'),
        'ece': realized.get('expected_calibration_error'), 'verdict': info.get('verdict'),
        'critical_features': info.get('critical_features') or '',
        'drifted_features': info.get('drifted_features') or ''})
  order = {label: i for i, label in enumerate(LABEL_ORDER)}
  return sorted(rows, key=lambda r: (order.get(r['label'], len(order)), r['version']))


def format_canary_comparison(rows: List[Dict[str, Any]]) -> str:
  """Canary vs stable side by side, each on its own labelled traffic of the same window."""
  def number(value):
    return 'n/a' if value is None else f'{value:.3f}'
  lines = ['canary vs stable, each on its own labelled requests of this window:',
           f'  {"label":<7} {"version":<11} {"answered":>8} {"logged":>7} {"labelled":>8} '
           f'{"realized AUC":>12} {"accuracy":>8} {"ECE":>6}  drift']
  for row in rows:
    critical = [f for f in row['critical_features'].split(',') if f]
    warning = [f for f in row['drifted_features'].split(',') if f and f not in critical]
    features = '; '.join(f'{name}: {",".join(names)}' for name, names in
                         (('critical', critical), ('warning', warning)) if names)
    lines.append(f'  {row["label"]:<7} {row["version"]:<11} {row["answered"]:>8} '
                 f'{row["logged"]:>7} {row["labelled"]:>8} {number(row["auc"]):>12} '
                 f'{number(row["accuracy"]):>8} {number(row["ece"]):>6}  {row["verdict"]}'
                 f'{" (" + features + ")" if features else ""}')
  by_label = {row['label']: row for row in rows}
  if by_label.get('stable', {}).get('auc') is not None and \
      by_label.get('canary', {}).get('auc') is not None:
    difference = by_label['canary']['auc'] - by_label['stable']['auc']
    lines.append(f'  canary - stable realized AUC: {difference:+.3f} (a review input for '
                 f'`loopline models promote`, not a decision)')
  return '\n'.join(lines)


def _span_columns(data_root: str) -> List[str]:
  first = min(spans_lib.list_spans(data_root))
  with open(spans_lib.span_path(data_root, first, spans_lib.list_spans(data_root)[first])) as f:
    return f.readline().strip().split(',')
