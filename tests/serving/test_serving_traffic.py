"""Canary routing, dynamic batching and version swaps under continuous load."""
import asyncio
import base64
import collections
import concurrent.futures
import os
import threading
import time

import numpy as np
import pytest
import requests

from conftest import add_warmup_file, make_config, push
from serving import metrics as metrics_lib
from serving.batching import FAST_PATH_AFTER_SINGLE_CALLS, CallTimer, DynamicBatcher
from serving.config import BatchingConfig, RequestLogConfig, parse_model_config_text
from serving.errors import Code, ServingError
from serving.server import ServerThread
import serving_test_models as tm

pytestmark = pytest.mark.timeout(180)


def b64(x, y=0.0):
  return {'b64': base64.b64encode(tm.example(x, y)).decode()}


def two_version_config(base: str, policy='specific { versions: 1 versions: 2 }', stable=1,
                       canary=2) -> str:
  labels = f'version_labels {{ key: "stable" value: {stable} }}'
  if canary is not None:
    labels += f' version_labels {{ key: "canary" value: {canary} }}'
  return (f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
          f'model_version_policy {{ {policy} }} {labels} }} }}')


@pytest.fixture
def two_versions(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  push(built_models, 'w2', base, 2)
  return base


def test_canary_weights_split_bare_name_requests(two_versions, tmp_path):
  config = make_config(two_versions, model_config=parse_model_config_text(
      two_version_config(two_versions)), canary_weights={'m': {'stable': 80, 'canary': 20}},
                       request_log=RequestLogConfig(directory=str(tmp_path / 'logs')))
  answered = collections.Counter()
  with ServerThread(config) as server, requests.Session() as session:
    for i in range(200):
      response = session.post(server.rest_url + '/v1/models/m:predict',
                              json={'instances': [b64(1.0)]}, headers={'X-Request-Id': f'r{i}'},
                              timeout=30)
      version = response.headers['X-Model-Version']
      assert response.json() == {'predictions': [[float(version)]]}  # weight == version here
      answered[version] += 1
    pinned = session.post(server.rest_url + '/v1/models/m/versions/1:predict',
                          json={'instances': [b64(1.0)]}, timeout=30)
    assert pinned.headers['X-Model-Version'] == '1'  # Explicit versions are never re-routed.
  assert 20 <= answered['2'] <= 70 and answered['1'] + answered['2'] == 200
  from test_serving_request_log import read_logs
  from serving.request_log import request_id_of
  logged = {request_id_of(l): l.log_metadata.model_spec.version.value
            for l in read_logs(tmp_path / 'logs')}
  assert collections.Counter(str(v) for k, v in logged.items() if k.startswith('r')) == answered


def test_sticky_routing_key_keeps_a_user_on_one_version(two_versions):
  config = make_config(two_versions, model_config=parse_model_config_text(
      two_version_config(two_versions)), canary_weights={'m': {'stable': 50, 'canary': 50}},
                       sticky_header='X-Routing-Key')
  with ServerThread(config) as server, requests.Session() as session:

    def version_for(key):
      return session.post(server.rest_url + '/v1/models/m:predict', json={'instances': [b64(1)]},
                          headers={'X-Routing-Key': key}, timeout=30).headers['X-Model-Version']

    assert len({version_for('user-7') for _ in range(10)}) == 1
    assert {version_for(f'user-{i}') for i in range(40)} == {'1', '2'}


def test_servers_with_one_routing_seed_route_a_request_sequence_identically(two_versions):
  """`--routing-seed`: two servers with the same seed answer the same sequence of bare-name
  requests with the same versions; another seed splits it differently."""

  def versions_answering(seed):
    config = make_config(two_versions, model_config=parse_model_config_text(
        two_version_config(two_versions)), canary_weights={'m': {'stable': 50, 'canary': 50}},
                         routing_seed=seed)
    with ServerThread(config) as server, requests.Session() as session:
      return [session.post(server.rest_url + '/v1/models/m:predict',
                           json={'instances': [b64(1)]}, timeout=30).headers['X-Model-Version']
              for _ in range(40)]

  first = versions_answering(11)
  assert set(first) == {'1', '2'}
  assert versions_answering(11) == first
  assert versions_answering(12) != first


def test_replays_of_the_same_rows_reach_the_same_labels_at_any_concurrency(two_versions,
                                                                           tmp_path):
  """What the loop relies on: a replay sends each row's position as the routing key, so with the
  sticky header and a routing seed, every replay of the same rows sends each row to one label."""
  from traffic import replay as replay_lib
  rows = [{'x': str(i), 'big_tipper': '0'} for i in range(80)]

  def replay_twice(seed):
    config = make_config(two_versions, model_config=parse_model_config_text(
        two_version_config(two_versions)), canary_weights={'m': {'stable': 50, 'canary': 50}},
                         sticky_header=replay_lib.ROUTING_KEY_HEADER, routing_seed=seed)
    runs = []
    with ServerThread(config) as server:
      sender = replay_lib.RestSender('127.0.0.1', server.server.rest_port, 'm')
      for run in ('a', 'b'):
        answered = {}

        def send(request_id, example, routing_key):
          status, version = sender.send(request_id, example, routing_key)
          answered[request_id.rsplit('-', 1)[1]] = version
          return status, version

        result = replay_lib.replay(rows, send, lambda row: tm.example(float(row['x'])),
                                   f'{seed}{run}', 'none', str(tmp_path / f'{seed}{run}'),
                                   concurrency=8)
        assert result.succeeded == len(rows)
        runs.append(answered)
    return runs

  first, second = replay_twice(11)
  assert first == second and set(first.values()) == {'1', '2'}
  assert replay_twice(12)[0] != first


def test_canary_falls_back_when_a_label_is_unassigned(two_versions):
  config = make_config(two_versions, model_config=parse_model_config_text(
      two_version_config(two_versions, canary=None)),
                       canary_weights={'m': {'stable': 10, 'canary': 90}})
  with ServerThread(config) as server, requests.Session() as session:
    versions = {session.post(server.rest_url + '/v1/models/m:predict',
                             json={'instances': [b64(1)]}, timeout=30).headers['X-Model-Version']
                for _ in range(20)}
  assert versions == {'1'}


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(two_versions):
  batching = BatchingConfig(max_batch_size=4, batch_timeout_micros=2_000_000)
  config = make_config(two_versions, batching=batching)
  with ServerThread(config) as server:

    def call(x):
      response = requests.post(server.rest_url + '/v1/models/m:predict',
                               json={'instances': [b64(x, 0.5)]}, timeout=30)
      return response.json()['predictions']

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      answers = list(pool.map(call, [1.0, 2.0, 3.0, 4.0]))
    assert answers == [[[2.5]], [[4.5]], [[6.5]], [[8.5]]]
    text = server.server.metrics.render()
  assert 'loopline_serving_batch_size_count 1' in text  # One model call for four requests.
  assert 'loopline_serving_batch_size_sum 4' in text


def test_a_bad_request_fails_alone_inside_a_batch(two_versions):
  batching = BatchingConfig(max_batch_size=3, batch_timeout_micros=2_000_000)
  with ServerThread(make_config(two_versions, batching=batching)) as server:

    def call(instance):
      return requests.post(server.rest_url + '/v1/models/m:predict',
                           json={'instances': [instance]}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      good, bad, good2 = pool.map(call, [b64(1.0), 'not a tf.Example', b64(2.0)])
  assert good.json() == {'predictions': [[2.0]]} and good2.json() == {'predictions': [[4.0]]}
  assert bad.status_code == 400 and 'parse' in bad.json()['error']


def test_batching_off_still_answers(two_versions):
  config = make_config(two_versions, batching=BatchingConfig(enabled=False))
  with ServerThread(config) as server:
    response = requests.post(server.rest_url + '/v1/models/m:predict',
                             json={'instances': [b64(3.0)]}, timeout=30)
  assert response.json() == {'predictions': [[6.0]]}


def test_full_batch_queue_answers_unavailable():
  release = threading.Event()
  released = []

  def blocking_run(inputs):
    released.append(release.wait(timeout=10))  # False: the event loop itself was blocked.
    return {'y': inputs['x'] * 2}

  async def scenario():
    # A timeout above 0 turns the low-load fast path off: the first request must block in the
    # model thread, not on the event loop (max_batch_size 1: no batch waits for the timeout).
    options = BatchingConfig(max_batch_size=1, batch_timeout_micros=1, num_batch_threads=1,
                             max_enqueued_batches=1)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    batcher = DynamicBatcher(blocking_run, options, executor, metrics_lib.Metrics())
    first = asyncio.ensure_future(batcher.submit({'x': np.array([1.0])}))
    await asyncio.sleep(0.2)  # The first request is now running (blocked) in the model thread.
    second = asyncio.ensure_future(batcher.submit({'x': np.array([2.0])}))  # Fills the queue.
    await asyncio.sleep(0)
    with pytest.raises(ServingError) as info:
      await batcher.submit({'x': np.array([3.0])})
    release.set()
    results = [(await first)['y'].tolist(), (await second)['y'].tolist()]
    await batcher.close()
    executor.shutdown()
    return info.value, results

  error, results = asyncio.run(scenario())
  assert error.code == Code.UNAVAILABLE and error.http_status == 503
  assert 'queue' in error.message and results == [[2.0], [4.0]]
  assert released == [True, True]


def test_requests_already_arriving_join_the_batch_without_a_timeout():
  """With batch_timeout_micros=0, requests that reach the queue within a few event-loop
  iterations (still being read and decoded) join the batch instead of the first running alone."""
  batches = []

  def run(inputs):
    batches.append(len(inputs['x']))
    return {'y': inputs['x'] * 2}

  async def arriving(batcher, value, iterations):
    for _ in range(iterations):       # Parsing and decoding take a few loop iterations.
      await asyncio.sleep(0)
    return (await batcher.submit({'x': np.array([value])}))['y'].tolist()

  async def scenario(delays):
    options = BatchingConfig(max_batch_size=32, batch_timeout_micros=0, num_batch_threads=1)
    executor = concurrent.futures.ThreadPoolExecutor(1)
    batcher = DynamicBatcher(run, options, executor, metrics_lib.Metrics())
    answers = await asyncio.gather(*(arriving(batcher, float(i), delay)
                                     for i, delay in enumerate(delays)))
    await batcher.close()
    executor.shutdown()
    return answers

  assert asyncio.run(scenario([0, 1, 1, 2, 0, 2, 1, 0])) == [[2.0 * i] for i in range(8)]
  assert batches == [8]
  # One that comes after idle iterations is not waited for: it gets a batch of its own.
  batches.clear()
  assert asyncio.run(scenario([0, 1, 1, 2, 0, 2, 1, 50])) == [[2.0 * i] for i in range(8)]
  assert batches == [7, 1]


def _answers_and_logs(server_config, log_dir, calls, concurrently: bool):
  """Answer `calls` [(request id, instance)] through a server: ({id: (status, json, headers)}, {id:
  logged PredictionLog without its timestamp}, the server's model-call counts by path)."""
  from test_serving_request_log import read_logs
  from serving.request_log import request_id_of
  with ServerThread(server_config) as server:

    def call(item):
      request_id, instance = item
      response = requests.post(server.rest_url + '/v1/models/m:predict',
                               json={'instances': [instance]},
                               headers={'X-Request-Id': request_id}, timeout=30)
      headers = {k: v for k, v in response.headers.items() if k != 'Connection'}
      return request_id, (response.status_code, response.json(), headers)

    if concurrently:
      with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(pool.map(call, calls))
    else:
      answers = dict(map(call, calls))
    metrics = server.server.metrics
    paths = {path: metrics.value(metrics_lib.MODEL_CALLS, path=path)
             for path in ('inline', 'batched')}
  logged = {}
  for prediction_log in read_logs(log_dir):
    prediction_log.log_metadata.ClearField('timestamp_secs')
    logged[request_id_of(prediction_log)] = prediction_log
  return answers, logged, paths


def test_fast_path_and_batches_answer_identically(two_versions, tmp_path):
  """At low load a request runs on the event-loop thread (no batch forming); under load it is
  batched. Same outputs, headers and log records either way."""
  calls = [(f'r{i}', b64(float(i), 0.5)) for i in range(6)]  # Same bytes for both servers.
  for version in (1, 2):  # Warmed up: the fast path knows the model's call time from the start.
    add_warmup_file(os.path.join(two_versions, str(version)))
  fast = make_config(two_versions, request_log=RequestLogConfig(directory=str(tmp_path / 'a')))
  one_by_one = _answers_and_logs(fast, tmp_path / 'a', calls, concurrently=False)
  # A batch timeout turns the fast path off: the six concurrent requests wait for each other.
  batched = make_config(two_versions, request_log=RequestLogConfig(directory=str(tmp_path / 'b')),
                        batching=BatchingConfig(max_batch_size=6, batch_timeout_micros=5_000_000))
  together = _answers_and_logs(batched, tmp_path / 'b', calls, concurrently=True)
  assert one_by_one[2] == {'inline': 6, 'batched': 0}
  assert together[2] == {'inline': 0, 'batched': 1}
  assert one_by_one[0] == together[0]
  assert one_by_one[0]['r3'] == (200, {'predictions': [[6.5]]},
                                 {'Content-Type': 'application/json', 'Content-Length': '23',
                                  'X-Model-Version': '2', 'X-Request-Id': 'r3'})
  assert one_by_one[1] == together[1] and sorted(one_by_one[1]) == [c[0] for c in calls]


def _recording_batcher(max_batch_size: int, timer: CallTimer | None = None, seconds: float = 0):
  """(batcher, its executor, calls), made inside a running event loop: the model doubles `x`
  (taking `seconds`), and each call records (ran on the event loop's thread, rows). Its calls are
  timed by `timer`, by default one that has timed one call and lets any call under 1 s run inline
  (the fast path's mechanics, whatever the machine's load)."""
  calls = []

  def run(inputs):
    calls.append((threading.current_thread() is threading.main_thread(), len(inputs['x'])))
    time.sleep(seconds)  # The model's own duration.
    return {'y': inputs['x'] * 2}

  if timer is None:
    timer = CallTimer(inline_max_seconds=1.0)
    timer.timed(lambda inputs: inputs, {}, 1)
  options = BatchingConfig(max_batch_size=max_batch_size, batch_timeout_micros=0,
                           num_batch_threads=1)
  executor = concurrent.futures.ThreadPoolExecutor(1)
  return DynamicBatcher(run, options, executor, metrics_lib.Metrics(), timer), executor, calls


def test_fast_path_only_when_alone_and_batching_resumes_under_load():

  async def scenario():
    batcher, executor, calls = _recording_batcher(32)
    alone = [(await batcher.submit({'x': np.array([float(i)])}))['y'].tolist() for i in range(3)]
    together = await asyncio.gather(*(batcher.submit({'x': np.array([float(i)])})
                                      for i in range(5)))
    # After a batch of several, lone requests go through the batcher until that many model calls
    # in a row served one request each; then the fast path again.
    after_load = [(await batcher.submit({'x': np.array([7.0])}))['y'].tolist()
                  for _ in range(FAST_PATH_AFTER_SINGLE_CALLS + 1)]
    await batcher.close()
    executor.shutdown()
    return alone, [t['y'].tolist() for t in together], after_load, calls

  alone, together, after_load, calls = asyncio.run(scenario())
  assert alone == [[0.0], [2.0], [4.0]] and together == [[2.0 * i] for i in range(5)]
  assert after_load == [[14.0]] * (FAST_PATH_AFTER_SINGLE_CALLS + 1)
  # (on the loop's thread, rows): three inline, one batch of five, batches of one, inline again.
  assert calls == ([(True, 1)] * 3 + [(False, 5)] + [(False, 1)] * FAST_PATH_AFTER_SINGLE_CALLS +
                   [(True, 1)])


def test_only_calls_timed_under_the_bound_run_on_the_event_loop():

  async def scenario(timer, seconds, requests):
    batcher, executor, calls = _recording_batcher(32, timer, seconds)
    for i in range(requests):
      assert (await batcher.submit({'x': np.array([float(i)])}))['y'].tolist() == [2.0 * i]
    await batcher.close()
    executor.shutdown()
    return calls

  # Never timed (no warm-up): the first call runs in the batch thread, which times it.
  timer = CallTimer(inline_max_seconds=1.0)
  assert asyncio.run(scenario(timer, 0, 3)) == [(False, 1), (True, 1), (True, 1)]
  # A model slower than the bound never blocks the loop, however long it has been served.
  slow = CallTimer(inline_max_seconds=0.005)
  assert asyncio.run(scenario(slow, 0.01, 4)) == [(False, 1)] * 4
  assert slow.calls == 4 and not slow.fast_enough(1)
  # The typical call time is scaled to the request's rows.
  timer = CallTimer(inline_max_seconds=1.0)
  timer.timed(lambda inputs: time.sleep(0.02), {}, 1)
  assert timer.fast_enough(1) and not timer.fast_enough(100)


def test_a_request_larger_than_a_batch_never_runs_on_the_event_loop():

  async def scenario():
    batcher, executor, calls = _recording_batcher(4)
    answers = [(await batcher.submit({'x': np.arange(rows, dtype=float)}))['y'].tolist()
               for rows in (1, 10, 4, 1)]
    await batcher.close()
    executor.shutdown()
    return answers, calls

  answers, calls = asyncio.run(scenario())
  assert answers == [[2.0 * i for i in range(rows)] for rows in (1, 10, 4, 1)]
  # (on the loop's thread, rows): the 10-row request in the batch thread, the others inline.
  assert calls == [(True, 1), (False, 10), (True, 4), (True, 1)]


def test_push_and_label_move_under_load_lose_no_request(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  config_file = tmp_path / 'models.config'
  config_file.write_text(two_version_config(base, policy='specific { versions: 1 }', canary=None))
  config = make_config(base, model_config=None, model_config_file=str(config_file),
                       model_config_file_poll_wait_seconds=0.1,
                       canary_weights={'m': {'stable': 1}})
  failures, answers = [], collections.Counter()
  stop = threading.Event()
  with ServerThread(config) as server:

    def load(path):
      with requests.Session() as session:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
          response = session.post(server.rest_url + path, json={'instances': [b64(1.0)]},
                                  timeout=30)
          if response.status_code != 200:
            failures.append((path, response.status_code, response.text))
          else:
            answers[response.json()['predictions'][0][0]] += 1

    threads = [threading.Thread(target=load, args=(p,)) for p in
               ('/v1/models/m:predict', '/v1/models/m/labels/stable:predict') * 2]
    for thread in threads:
      thread.start()

    def rewrite(text):
      config_file.write_text(text)
      os.utime(config_file, ns=(1, time.time_ns() + 10**9))

    def wait_for(condition):
      deadline = time.monotonic() + 30
      while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
      assert condition()

    time.sleep(0.3)
    push(built_models, 'w2', base, 2)
    rewrite(two_version_config(base, policy='specific { versions: 1 versions: 2 }', stable=2,
                               canary=None))  # Load 2, then move stable to it.
    wait_for(lambda: server.server.backend.manager.labels('m') == {'stable': 2})
    rewrite(two_version_config(base, policy='specific { versions: 2 }', stable=2, canary=None))
    wait_for(lambda: server.server.backend.available() == {'m': [2]})
    settled = sum(answers.values())
    wait_for(lambda: sum(answers.values()) > settled + 20)
    stop.set()
    for thread in threads:
      thread.join(timeout=60)
  assert failures == []
  assert answers[1.0] > 0 and answers[2.0] > 20 and set(answers) == {1.0, 2.0}


def test_new_latest_version_under_load_loses_no_request(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  failures, versions = [], collections.Counter()
  stop = threading.Event()
  with ServerThread(make_config(base)) as server:

    def load():
      with requests.Session() as session:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
          response = session.post(server.rest_url + '/v1/models/m:predict',
                                  json={'instances': [b64(1.0)]}, timeout=30)
          if response.status_code == 200:
            versions[response.headers['X-Model-Version']] += 1
          else:
            failures.append(response.text)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
      thread.start()
    time.sleep(0.3)
    push(built_models, 'w2', base, 2)
    deadline = time.monotonic() + 30
    while versions['2'] < 20 and time.monotonic() < deadline:
      time.sleep(0.05)
    stop.set()
    for thread in threads:
      thread.join(timeout=60)
    assert [(s.version, s.state) for s in server.server.backend.manager.status('m')] == [
        (2, 'AVAILABLE'), (1, 'END')]
  assert failures == [] and versions['1'] > 0 and versions['2'] >= 20


def test_corrupt_new_version_is_reported_and_the_old_one_keeps_serving(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  with ServerThread(make_config(base)) as server, requests.Session() as session:
    tm.corrupt_version(os.path.join(base, '2'))
    deadline = time.monotonic() + 30
    status = {}
    while time.monotonic() < deadline:
      status = session.get(server.rest_url + '/v1/models/m', timeout=30).json()
      if len(status['model_version_status']) == 2:
        break
      time.sleep(0.05)
    new, old = status['model_version_status']
    assert (new['version'], new['state'], new['status']['error_code']) == ('2', 'END', 'UNKNOWN')
    assert 'Failed to load servable m version 2' in new['status']['error_message']
    assert (old['version'], old['state']) == ('1', 'AVAILABLE')
    response = session.post(server.rest_url + '/v1/models/m:predict',
                            json={'instances': [b64(3.0)]}, timeout=30)
    assert response.json() == {'predictions': [[3.0]]} and response.headers[
        'X-Model-Version'] == '1'


def test_stopping_answers_requests_already_in_flight(two_versions):
  batching = BatchingConfig(max_batch_size=4, batch_timeout_micros=1_500_000)
  server = ServerThread(make_config(two_versions, batching=batching)).start()
  url = server.rest_url + '/v1/models/m/versions/2:predict'
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    pending = pool.submit(requests.post, url, json={'instances': [b64(5.0)]}, timeout=30)
    deadline = time.monotonic() + 10
    while 'loopline_serving_batch_queue_depth 1' not in server.server.metrics.render():
      assert time.monotonic() < deadline
      time.sleep(0.01)
    server.stop()  # The request is waiting in the batch queue (1.5 s timeout) right now.
    response = pending.result(timeout=30)
  assert response.status_code == 200 and response.json() == {'predictions': [[10.0]]}


def test_a_slow_model_never_blocks_health_checks_or_metrics(tmp_path):
  """A model whose calls are slow (timed at every call) runs in the batch thread, never on the
  event loop: while one of its calls runs, the loop answers metrics, status and health checks."""
  import grpc  # pylint: disable=import-outside-toplevel
  from grpc_health.v1 import health_pb2, health_pb2_grpc  # pylint: disable=import-outside-toplevel
  gate = tmp_path / 'gate'
  gate.touch()  # Open: a call takes its minimum, 50 ms.
  base = tmp_path / 'm'
  tm.save_gated_model(str(base / '1'), str(gate), min_seconds=0.05)
  with ServerThread(make_config(str(base))) as server, requests.Session() as session:
    predict = server.rest_url + '/v1/models/m:predict'
    for x in (1.0, 2.0, 3.0):  # Timed: the first in the batch thread, the others since too slow.
      assert session.post(predict, json={'instances': [b64(x)]}, timeout=30).json() == {
          'predictions': [[x]]}
    gate.unlink()  # The next call lasts until the gate is back.

    def batched_calls():
      text = session.get(server.rest_url + '/monitoring/prometheus/metrics', timeout=10).text
      return [line for line in text.splitlines()
              if line.startswith('loopline_serving_model_calls{path="batched"}')]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      pending = pool.submit(requests.post, predict, json={'instances': [b64(4.0)]}, timeout=60)
      deadline = time.monotonic() + 30
      # Each scrape is answered (10 s timeout) while the call runs; the 4th call has begun.
      while batched_calls() != ['loopline_serving_model_calls{path="batched"} 4.0']:
        assert time.monotonic() < deadline and not pending.done()
      status = session.get(server.rest_url + '/v1/models/m', timeout=10)
      assert status.json()['model_version_status'][0]['state'] == 'AVAILABLE'
      with grpc.insecure_channel(server.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                           timeout=10)
      assert health.status == health_pb2.HealthCheckResponse.SERVING
      assert not pending.done()  # All of that was answered while the model call still ran.
      gate.touch()
      assert pending.result(timeout=60).json() == {'predictions': [[4.0]]}
    assert server.server.metrics.value(metrics_lib.MODEL_CALLS, path='inline') == 0
