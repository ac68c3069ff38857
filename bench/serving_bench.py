"""Serving benchmark: throughput and p50/p99 latency of Loopline's model server.

Measures, in one run and against the same SavedModel (by default the newest version pushed under
$LOOPLINE_HOME/serving/big_tipper):
  - a naive baseline: a plain synchronous HTTP server (thread per connection) making one model
    call per request;
  - the embedded server over REST and gRPC, with batching on and off, request logging on (sampling
    1.0) and off;
  - the gRPC stack's ceiling: a grpc.aio server on the same event loop (uvloop) and the official
    PredictionService servicer class answering every Predict with a constant response, no model;
  - the gRPC floor with the model: the same servicer making one model call per request (nothing
    of Loopline: no batching, routing, metrics or logging): what any Python gRPC server serving
    this model pays at concurrency 1;
  - the gRPC floor with batching: the same servicer gathering requests into one model call (up to
    32 examples or 5 ms), still nothing of Loopline: what a minimal batching server reaches at
    concurrency 32, beside the stack's ceiling;
  - worker processes: `serve --workers 1` and `--workers 2` over REST at concurrency 32, the server
    pinned to one core and this load generator to another (`taskset`; needs 2 cores);
  - with `--baseline REV`: the embedded server (batching on, logging off) of another commit (its
    `git archive`, run from a temporary directory with this venv) beside this one, in the same
    rounds: before/after figures from one run;
at concurrency 1, 8 and 32 (one example per request, keep-alive connections / one gRPC channel).

`--sections first-request` (alone or with `throughput`, the default) measures instead the first
request after a version loads and after a worker is replaced (see `first_request_figures`), with
and without the version's warm-up file, and for the `--baseline` commit.
Every cell also records the server's CPU time per request (user + system of its processes, from
psutil), which the machine's other load hardly moves, unlike throughput.
Servers run in their own processes, all at once, and the cells alternate between them so that
comparisons are not skewed by the machine's load drifting (the servers of one protocol and
concurrency take turns being measured first: `in_turn`); the load generator (asyncio HTTP and
grpc.aio clients) runs here, on the same cores. Every cell is measured `--rounds` times, the
servers taking turns each round; the table shows each cell's median (and its range), and the
logging cost is the median over rounds of the cost measured within each round. Prints a table and
every target of the issue (target, value, met), and saves JSON (bench/results/serving.json).

  .venv/bin/python bench/serving_bench.py [--model-dir DIR] [--duration 5] [--rounds 3]
                                          [--concurrency 1,8,32] [--baseline REV]
                                          [--sections throughput,first-request]

Default run: 32 cells x 3 rounds x (1 s warm-up + 5 s), plus server start-ups and a 1 s warm-up
of every server, about 12 minutes.

Targets (issues 3 and 13), all medians of the rounds of one run: at concurrency 1, REST p50 <= the
naive server's p50 and gRPC p50 <= 1.2x REST p50; at concurrency 32, REST with batching >= 4x
naive with p99 < 50 ms, logging cost <= 10%, and gRPC >= 80% of the gRPC stack alone. The workers
cells are reported, not targeted. No test asserts these.
"""
import argparse
import asyncio
import base64
import csv
import functools
import glob
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from core import home as home_lib  # pylint: disable=wrong-import-position

MODEL_NAME = home_lib.MODEL_NAME
LABEL_KEY = 'big_tipper'


def newest_version_dir(path: str) -> str | None:
  """`path` itself if it is a SavedModel, else its newest integer-named child with one."""
  if os.path.isfile(os.path.join(path, 'saved_model.pb')):
    return path
  if not os.path.isdir(path):
    return None
  versions = [int(n) for n in os.listdir(path) if n.isdigit() and
              os.path.isfile(os.path.join(path, n, 'saved_model.pb'))]
  return os.path.join(path, str(max(versions))) if versions else None


def load_examples(csv_path: str | None, count: int = 256) -> list[bytes]:
  """Serialized tf.Examples typed by the project schema, from the newest span CSV (label dropped)."""
  from core import examples as examples_lib
  from google.protobuf import text_format
  from tensorflow_metadata.proto.v0 import schema_pb2
  if csv_path is None:
    candidates = sorted(glob.glob(os.path.join(REPO, 'data', 'spans', 'span-*', 'version-*',
                                               'data.csv')),
                        key=lambda p: [int(s) for s in p.split('/') if s.isdigit()] or [0])
    if not candidates:
      raise SystemExit('No span CSV under data/spans; pass --examples-csv FILE')
    csv_path = candidates[-1]
  with open(os.path.join(REPO, 'schema', 'schema.pbtxt'), encoding='utf-8') as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  types = examples_lib.feature_types(schema)
  types.pop(LABEL_KEY, None)
  with open(csv_path, encoding='utf-8') as f:
    rows = [row for _, row in zip(range(count), csv.DictReader(f))]
  return examples_lib.rows_to_serialized_examples(rows, types)


# ---- the naive baseline server (runs in its own process: --naive-server) ----------------------

def run_naive_server(model_dir: str, port: int):
  """A plain synchronous server (a thread per connection, like a Flask app) making one model call
  per request: the baseline."""
  import http.server
  import socket
  import tensorflow as tf
  function = tf.saved_model.load(model_dir).signatures['serving_default']

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def do_GET(self):  # pylint: disable=invalid-name
      self._answer(200, {'ready': True})

    def do_POST(self):  # pylint: disable=invalid-name
      body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
      examples = [base64.b64decode(i['b64']) for i in body['instances']]
      outputs = function(examples=tf.constant(examples))
      self._answer(200, {'predictions': outputs['probabilities'].numpy().tolist()})

    def setup(self):
      super().setup()
      self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self, status, doc):
      data = json.dumps(doc).encode()
      head = (f'HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n'
              f'Content-Length: {len(data)}\r\n\r\n').encode()
      self.wfile.write(head + data)  # One write: no Nagle / delayed-ACK stall.

    def log_message(self, *args):
      pass

  class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128  # Room for every benchmark connection to be accepted at once.

  Server(('127.0.0.1', port), Handler).serve_forever()


# The batched floor's batch: up to this many examples, or what arrived this long after the first.
FLOOR_MAX_BATCH = 32
FLOOR_BATCH_WAIT_SECONDS = 0.005


def run_grpc_ceiling_server(port: int, model_dir: str | None = None, batched: bool = False):
  """The gRPC stack alone: grpc.aio on uvloop (as the embedded server) and the official
  PredictionService servicer class, answering every Predict with one constant response. What no
  Python gRPC server can beat here, with this load generator on the same cores. With `model_dir`:
  the same servicer calls the model once per request (the stack plus the model, nothing else).
  With `batched` too: the servicer gathers the requests that arrive until FLOOR_MAX_BATCH examples
  wait or FLOOR_BATCH_WAIT_SECONDS have passed since the batch began, into one model call in one
  model thread: the stack plus batched model calls, with no routing, validation, metrics or
  logging. The 5 ms wait was the best of those tried at concurrency 32 (none, 0.2, 0.5, 1, 3 and
  5 ms): bigger batches mean fewer model calls for the two cores to run."""
  import grpc
  import uvloop
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_service_pb2_grpc
  if model_dir:
    import concurrent.futures
    import tensorflow as tf
    from serving import protos
    function = tf.saved_model.load(model_dir).signatures['serving_default']
    model_thread = concurrent.futures.ThreadPoolExecutor(1)

    def call_model(examples: list[bytes]) -> dict:
      return {alias: tensor.numpy()
              for alias, tensor in function(examples=tf.constant(examples, tf.string)).items()}

    def answer_of(outputs: dict):
      answer = predict_pb2.PredictResponse()
      for alias, array in outputs.items():
        answer.outputs[alias].CopyFrom(protos.tensor_from_array(array))
      return answer
  response = predict_pb2.PredictResponse()
  response.model_spec.name = MODEL_NAME
  response.model_spec.version.value = 1
  output = response.outputs['probabilities']
  output.dtype = 1  # DT_FLOAT
  output.tensor_shape.dim.add(size=1)
  output.tensor_shape.dim.add(size=1)
  output.float_val.append(0.5)

  class ConstantServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

    async def Predict(self, request, context):  # pylint: disable=invalid-name
      return response

  class ModelServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

    async def Predict(self, request, context):  # pylint: disable=invalid-name
      return answer_of(call_model(list(request.inputs['examples'].string_val)))

  class BatchedModelServicer(prediction_service_pb2_grpc.PredictionServiceServicer):

    def __init__(self):
      self.waiting = []  # (examples, future)
      self.arrived = asyncio.Event()
      self.batching = False

    async def Predict(self, request, context):  # pylint: disable=invalid-name
      loop = asyncio.get_running_loop()
      future = loop.create_future()
      self.waiting.append((list(request.inputs['examples'].string_val), future))
      self.arrived.set()
      if not self.batching:
        self.batching = True
        loop.create_task(self.run_batches())
      return answer_of(await future)

    async def run_batches(self):
      loop = asyncio.get_running_loop()
      while self.waiting:
        deadline = loop.time() + FLOOR_BATCH_WAIT_SECONDS
        while sum(len(e) for e, _ in self.waiting) < FLOOR_MAX_BATCH and loop.time() < deadline:
          self.arrived.clear()
          try:
            await asyncio.wait_for(self.arrived.wait(), deadline - loop.time())
          except asyncio.TimeoutError:
            break
        batch, self.waiting = self.waiting, []
        outputs = await loop.run_in_executor(model_thread, call_model,
                                             [e for examples, _ in batch for e in examples])
        offset = 0
        for examples, future in batch:
          future.set_result({a: v[offset:offset + len(examples)] for a, v in outputs.items()})
          offset += len(examples)
      self.batching = False

  if not model_dir:
    servicer = ConstantServicer()
  else:
    servicer = BatchedModelServicer() if batched else ModelServicer()

  async def serve():
    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    server.add_insecure_port(f'127.0.0.1:{port}')
    await server.start()
    await server.wait_for_termination()

  uvloop.run(serve())


# ---- load generators ----------------------------------------------------------------------------

async def http_worker(port: int, requests_: list[bytes], measure_from: float, stop_at: float,
                      latencies: list, errors: list, answered: list):
  """One keep-alive connection sending requests back to back; records those after measure_from
  (and counts every answer in `answered[0]`)."""
  reader, writer = await asyncio.open_connection('127.0.0.1', port)
  i = 0
  try:
    while time.perf_counter() < stop_at:
      request = requests_[i % len(requests_)]
      i += 1
      started = time.perf_counter()
      writer.write(request)
      head = await reader.readuntil(b'\r\n\r\n')
      length = 0
      for line in head.split(b'\r\n'):
        if line.lower().startswith(b'content-length:'):
          length = int(line.split(b':')[1])
      await reader.readexactly(length)
      answered[0] += 1
      if started < measure_from:
        continue
      if not head.startswith(b'HTTP/1.1 200') and not head.startswith(b'HTTP/1.0 200'):
        errors.append(head.split(b'\r\n')[0].decode())
      else:
        latencies.append(time.perf_counter() - started)
  finally:
    writer.close()


def http_requests(examples: list[bytes], path: str) -> list[bytes]:
  out = []
  for example in examples:
    body = json.dumps({'instances': [{'b64': base64.b64encode(example).decode()}]}).encode()
    out.append(f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
               f'Content-Length: {len(body)}\r\n\r\n'.encode() + body)
  return out


async def grpc_worker(stub, requests_, measure_from: float, stop_at: float, latencies: list,
                      errors: list, answered: list):
  """Predict calls back to back on a shared channel; records those after measure_from (and counts
  every answer in `answered[0]`)."""
  import grpc
  i = 0
  while time.perf_counter() < stop_at:
    request = requests_[i % len(requests_)]
    i += 1
    started = time.perf_counter()
    try:
      await stub.Predict(request, timeout=30)
      answered[0] += 1
      if started >= measure_from:
        latencies.append(time.perf_counter() - started)
    except grpc.RpcError as e:
      if started >= measure_from:
        errors.append(e.code().name)


def grpc_requests(examples: list[bytes]):
  import tensorflow as tf
  from tensorflow_serving.apis import predict_pb2
  out = []
  for example in examples:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.inputs['examples'].CopyFrom(tf.make_tensor_proto([example]))
    out.append(request)
  return out


async def measure(protocol: str, port: int, examples: list[bytes], concurrency: int,
                  duration: float, warmup: float) -> dict:
  """Run `concurrency` closed-loop clients for warmup + duration; statistics of the measured part."""
  latencies, errors, answered = [], [], [0]
  if protocol == 'grpc':
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc
    channel = grpc.aio.insecure_channel(f'127.0.0.1:{port}')
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    requests_ = grpc_requests(examples)
    worker = functools.partial(grpc_worker, stub, requests_)
  else:
    requests_ = http_requests(examples, f'/v1/models/{MODEL_NAME}:predict')
    worker = functools.partial(http_worker, port, requests_)
  measure_from = time.perf_counter() + warmup
  stop_at = measure_from + duration
  await asyncio.gather(*(worker(measure_from, stop_at, latencies, errors, answered)
                         for _ in range(concurrency)))
  elapsed = max(time.perf_counter(), stop_at) - measure_from
  if protocol == 'grpc':
    await channel.close()
  latencies.sort()
  pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3
  return {'requests': len(latencies), 'answered_with_warmup': answered[0], 'errors': len(errors),
          'throughput_rps': round(len(latencies) / elapsed, 1),
          'p50_ms': round(pick(0.50), 2) if latencies else None,
          'p99_ms': round(pick(0.99), 2) if latencies else None,
          'mean_ms': round(statistics.fmean(latencies) * 1e3, 2) if latencies else None,
          'first_error': errors[0] if errors else None}


# ---- servers under test -------------------------------------------------------------------------

def free_port() -> int:
  import portpicker
  return portpicker.pick_unused_port()


class Server:
  """A server process (embedded Loopline server or naive baseline), started and stopped; `tree`:
  the source tree it runs from (this repository, or a --baseline commit's)."""

  def __init__(self, name: str, argv: list[str], rest_port: int | None, grpc_port: int | None,
               tree: str = REPO):
    self.name, self.rest_port, self.grpc_port = name, rest_port, grpc_port
    env = dict(os.environ, PYTHONPATH=tree)
    # Its output goes to a file: a pipe nobody reads would fill up and stall the server.
    self.output = tempfile.TemporaryFile(mode='w+')  # pylint: disable=consider-using-with
    self.process = subprocess.Popen(argv, cwd=tree, stdout=self.output,
                                    stderr=subprocess.STDOUT, text=True, env=env)

  def wait_ready(self, path: str | None, timeout: float = 180):
    """Until `path` answers over REST (or, without one, the gRPC port accepts a channel)."""
    deadline = time.monotonic() + timeout
    if path is None:
      import grpc
      with grpc.insecure_channel(f'127.0.0.1:{self.grpc_port}') as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)
      return
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise SystemExit(f'{self.name} exited:\n{self.log()}')
      try:
        with urllib.request.urlopen(f'http://127.0.0.1:{self.rest_port}{path}', timeout=2) as r:
          if b'AVAILABLE' in r.read() or path == '/':
            return
      except OSError:
        pass
      time.sleep(0.2)
    raise SystemExit(f'{self.name} did not become ready in {timeout} s')

  def cpu_seconds(self) -> float:
    """User + system CPU time of the server and its child processes (workers, log writer)."""
    import psutil
    total = 0.0
    root = psutil.Process(self.process.pid)
    for process in [root] + root.children(recursive=True):
      try:
        times = process.cpu_times()
        total += times.user + times.system
      except psutil.Error:
        pass
    return total

  def log(self) -> str:
    """What the server printed so far."""
    self.output.seek(0)
    return self.output.read()

  def stop(self):
    self.process.terminate()
    try:
      self.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
      self.process.kill()


def embedded_server(base_dir: str, home: str, batching: bool, logging: bool, workers: int = 1,
                    cpu: int | None = None, tree: str = REPO, name: str | None = None,
                    extra: tuple = ()) -> Server:
  """`serve` (from `tree`) in its own process; `workers` processes, all pinned to core `cpu` if
  given."""
  rest, grpc_ = free_port(), free_port()
  argv = ['taskset', '-c', str(cpu)] if cpu is not None else []
  argv += [sys.executable, '-m', 'serving', '--home', home, 'serve', '--model-base-path',
           os.path.join(base_dir, MODEL_NAME), '--allow-any-base-path', '--rest-port', str(rest),
           '--grpc-port', str(grpc_), '--workers', str(workers), *extra]
  argv += [] if batching else ['--no-batching']
  argv += ['--request-log-dir', os.path.join(home, 'request_logs'), '--log-sampling-rate',
           '1.0'] if logging else ['--no-request-log']
  if name is None:
    name = f'embedded batching={"on" if batching else "off"} logging={"on" if logging else "off"}'
  if cpu is not None:
    name = f'{workers} worker(s) on core {cpu}'
  server = Server(name, argv, rest, grpc_, tree)
  server.wait_ready(f'/v1/models/{MODEL_NAME}')
  # A pool answers once one worker listens; it has started once it says so (every worker ready).
  deadline = time.monotonic() + 300
  while workers > 1 and 'worker processes' not in server.log():
    if time.monotonic() > deadline or server.process.poll() is not None:
      raise SystemExit(f'{name} did not start:\n{server.log()}')
    time.sleep(0.2)
  return server


def baseline_tree(revision: str, work: str) -> str:
  """The source tree of `revision` (`git archive`), under `work`."""
  tree = os.path.join(work, f'baseline-{revision}')
  archive = subprocess.run(['git', '-C', REPO, 'archive', revision], check=True,
                           capture_output=True).stdout
  with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
    tar.extractall(tree)
  return tree


def grpc_ceiling_server(model_dir: str | None = None, batched: bool = False) -> Server:
  port = free_port()
  name = 'gRPC stack alone (constant answer)'
  argv = [sys.executable, os.path.abspath(__file__), '--grpc-ceiling-server', '--port', str(port)]
  if model_dir:
    name = 'gRPC stack + batched model calls' if batched else 'gRPC stack + one model call a request'
    argv += ['--model-dir', model_dir] + (['--batched-floor'] if batched else [])
  server = Server(name, argv, None, port)
  server.wait_ready(None)
  return server


def naive_server(version_dir: str) -> Server:
  port = free_port()
  server = Server('naive baseline', [sys.executable, os.path.abspath(__file__), '--naive-server',
                                     '--port', str(port), '--model-dir', version_dir], port, None)
  server.wait_ready('/')
  return server


# ---- the first request after a load, and after a worker replacement -----------------------------

STEADY_REQUESTS = 50  # Requests whose median is the steady state a first request is compared to.
WARMUP_REQUESTS = 200  # In a version's warm-up file here: as many as the pusher writes.


def publish_version(version_dir: str, base: str, version: int, examples: list[bytes],
                    warm: bool) -> str:
  """The model as `<base>/<version>`, staged and renamed as the pusher does: with a warm-up file of
  WARMUP_REQUESTS Predict requests of `examples`, or without one (whatever the source had)."""
  from serving import warmup
  staged = os.path.join(base, f'.staging-{version}')
  shutil.copytree(version_dir, staged, ignore=lambda directory, names: (
      [warmup.WARMUP_FILE] if os.path.basename(directory) == warmup.ASSETS_EXTRA else []))
  if warm:
    warmup.write_warmup_file(staged, [warmup.prediction_log(r)
                                      for r in grpc_requests(examples[:WARMUP_REQUESTS])])
  final = os.path.join(base, str(version))
  os.rename(staged, final)
  return final


def _connect(port: int) -> socket.socket:
  sock = socket.create_connection(('127.0.0.1', port), timeout=120)
  sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
  return sock


def _exchange(sock: socket.socket, request: bytes) -> float:
  """Seconds from sending one REST request on an open connection to its whole answer (200)."""
  started = time.perf_counter()
  sock.sendall(request)
  data = b''
  while b'\r\n\r\n' not in data:
    chunk = sock.recv(65536)
    if not chunk:
      raise ConnectionError('connection closed before the answer')
    data += chunk
  head, body = data.split(b'\r\n\r\n', 1)
  length = next(int(line.split(b':')[1]) for line in head.split(b'\r\n')
                if line.lower().startswith(b'content-length:'))
  while len(body) < length:
    body += sock.recv(65536)
  elapsed = time.perf_counter() - started
  status_line = head.split(b'\r\n')[0]
  if not status_line.startswith(b'HTTP/1.1 200'):
    raise RuntimeError(f'answered {status_line!r}: {body[:200]!r}')
  return elapsed


def _steady_p50_ms(port: int, requests_: list[bytes]) -> float:
  """Median of STEADY_REQUESTS requests, each on a new connection (as the first ones are)."""
  times = []
  for i in range(STEADY_REQUESTS):
    with _connect(port) as sock:
      times.append(_exchange(sock, requests_[i % len(requests_)]))
  return statistics.median(times) * 1e3


def _wait_state(port: int, version: int, state: str, timeout: float = 300):
  """Until the server reports `version` in `state` (its status, which does not touch the model)."""
  deadline = time.monotonic() + timeout
  url = f'http://127.0.0.1:{port}/v1/models/{MODEL_NAME}/versions/{version}'
  while time.monotonic() < deadline:
    try:
      with urllib.request.urlopen(url, timeout=10) as answer:
        if f'"{state}"'.encode() in answer.read():
          return
    except OSError:
      pass
    time.sleep(0.02)
  raise SystemExit(f'version {version} did not become {state} in {timeout} s')


def _first_after_loads(server: Server, version_dir, base, examples, warm, rounds) -> list[float]:
  """Push a new version `rounds` times; each time, the first request once the swap is done: the
  new version AVAILABLE, the previous one END (ms)."""
  requests_ = http_requests(examples, f'/v1/models/{MODEL_NAME}:predict')
  firsts = []
  for round_ in range(rounds):
    publish_version(version_dir, base, 2 + round_, examples, warm)
    _wait_state(server.rest_port, 2 + round_, 'AVAILABLE')
    _wait_state(server.rest_port, 1 + round_, 'END')
    with _connect(server.rest_port) as sock:
      firsts.append(_exchange(sock, requests_[round_]) * 1e3)
  return firsts


def _gone(process) -> bool:
  """Whether every thread of a killed process has exited (its listening sockets with them)."""
  import psutil
  try:
    return process.status() == psutil.STATUS_ZOMBIE and len(
        os.listdir(f'/proc/{process.pid}/task')) <= 1
  except (psutil.NoSuchProcess, FileNotFoundError):
    return True


def _first_after_replacements(server: Server, examples, rounds) -> list[float]:
  """Kill -9 a worker of the pool `rounds` times; each time, once its replacement listens, the
  first request a connection accepted by the replacement gets (ms). Connections the other worker
  accepts are closed unused."""
  import psutil
  requests_ = http_requests(examples, f'/v1/models/{MODEL_NAME}:predict')
  supervisor = psutil.Process(server.process.pid)

  def workers():  # The live ones (a killed one is a zombie until the supervisor reaps it).
    live = []
    for child in supervisor.children():
      try:
        if 'serving.workers' in child.cmdline():
          live.append(child)
      except psutil.Error:
        pass
    return live

  def connections(process):
    try:
      return process.net_connections('tcp')
    except psutil.Error:
      return []

  listens = lambda p: any(c.status == psutil.CONN_LISTEN and c.laddr.port == server.rest_port
                          for c in connections(p))
  firsts = []
  for round_ in range(rounds):
    before = workers()
    before[0].kill()
    deadline = time.monotonic() + 300
    while True:
      new = [p for p in workers() if p.pid not in {b.pid for b in before}]
      if new and _gone(before[0]) and listens(new[0]):
        break
      if time.monotonic() > deadline:
        raise SystemExit(f'no replacement worker listened within 300 s:\n{server.log()}')
      time.sleep(0.05)
    for _ in range(500):
      sock = _connect(server.rest_port)
      port = sock.getsockname()[1]
      holder = None
      for _ in range(200):  # Until a worker has accepted it.
        holder = next((p for p in workers() if any(c.raddr and c.raddr.port == port
                                                    for c in connections(p))), None)
        if holder is not None:
          break
        time.sleep(0.005)
      if holder is not None and holder.pid == new[0].pid:
        with sock:
          firsts.append(_exchange(sock, requests_[round_]) * 1e3)
        break
      sock.close()
    else:
      raise SystemExit(f'no connection reached the replacement worker:\n{server.log()}')
  return firsts


def first_request_figures(version_dir: str, examples: list[bytes], work: str, rounds: int,
                          baseline: tuple[str, str] | None) -> list[dict]:
  """The first request after a version loads and after a worker is replaced, against the steady
  state, for this tree with and without the version's warm-up file (and for the --baseline
  commit, without). Requests go one by one, each on a new connection, timed from sending to the
  whole answer; `rounds` loads (a new version pushed into a running single-process server) and
  `rounds` replacements (a worker of a `--workers 2` pool killed with kill -9)."""
  cases = [('this tree', REPO, False), ('this tree', REPO, True)]
  if baseline:
    cases.insert(0, (f'baseline {baseline[0]}', baseline[1], False))
  figures = []
  for index, (tree_name, tree, warm) in enumerate(cases):
    for event, workers in (('load', 1), ('worker replacement', 2)):
      root = os.path.join(work, f'first-{index}-{workers}')
      base = os.path.join(root, 'models', MODEL_NAME)
      os.makedirs(base)
      publish_version(version_dir, base, 1, examples, warm)
      label = f'{tree_name}, {"with" if warm else "without"} warm-up file, {event}'
      print(f'First request: {label}...', flush=True)
      server = embedded_server(os.path.dirname(base), os.path.join(root, 'home'), True, False,
                               workers=workers, tree=tree, name=label,
                               extra=('--file-system-poll-wait-seconds', '0.2'))
      try:
        steady = _steady_p50_ms(server.rest_port, http_requests(
            examples, f'/v1/models/{MODEL_NAME}:predict'))
        firsts = (_first_after_loads(server, version_dir, base, examples, warm, rounds)
                  if workers == 1 else _first_after_replacements(server, examples, rounds))
      finally:
        server.stop()
      first = statistics.median(firsts)
      figures.append({'tree': tree_name, 'warmup_file': warm, 'event': event,
                      'first_ms': [round(f, 2) for f in firsts], 'first_ms_median': round(first, 2),
                      'steady_p50_ms': round(steady, 2),
                      'first_over_steady': round(first / steady, 1)})
      print(f'  first request {first:.2f} ms (rounds: '
            f'{", ".join(f"{f:.1f}" for f in firsts)}), steady p50 {steady:.2f} ms: '
            f'{first / steady:.1f}x', flush=True)
  return figures


def print_first_requests(figures: list[dict]):
  print('\nFirst request (median of the rounds) against the steady p50, each on a new connection:')
  for f in figures:
    print(f'  {f["tree"]:18s} {"with" if f["warmup_file"] else "without":7s} warm-up file  '
          f'after a {f["event"]:18s} {f["first_ms_median"]:9.2f} ms  steady '
          f'{f["steady_p50_ms"]:6.2f} ms  {f["first_over_steady"]:6.1f}x')


# ---- main ---------------------------------------------------------------------------------------

def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--model-dir', help='A SavedModel version directory, or a base directory '
                      'of versions (default: $LOOPLINE_HOME/serving/big_tipper).')
  parser.add_argument('--examples-csv', help='Rows to send (default: the newest span CSV).')
  parser.add_argument('--concurrency', default='1,8,32')
  parser.add_argument('--duration', type=float, default=5.0,
                      help='Seconds measured per cell (the default run takes about 12 minutes).')
  parser.add_argument('--warmup', type=float, default=1.0)
  parser.add_argument('--rounds', type=int, default=3,
                      help='Times every cell is measured (the servers take turns each round).')
  parser.add_argument('--output', default=os.path.join(REPO, 'bench', 'results', 'serving.json'))
  parser.add_argument('--baseline', metavar='REV',
                      help='Also run the server of this commit (git archive) beside this one.')
  parser.add_argument('--sections', default='throughput',
                      help='throughput and/or first-request, comma-separated.')
  parser.add_argument('--first-request-rounds', type=int, default=3,
                      help='Loads and worker replacements measured per case.')
  parser.add_argument('--naive-server', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--grpc-ceiling-server', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--batched-floor', action='store_true', help=argparse.SUPPRESS)
  parser.add_argument('--port', type=int, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.grpc_ceiling_server:
    run_grpc_ceiling_server(args.port, args.model_dir, args.batched_floor)
    return

  default_dir = os.path.join(home_lib.serving_dir(home_lib.resolve_home()), MODEL_NAME)
  version_dir = newest_version_dir(args.model_dir or default_dir)
  if version_dir is None:
    raise SystemExit(f'No pushed model under {args.model_dir or default_dir}. Run `make run` '
                     'first (it trains and pushes the model), or pass --model-dir.')
  if args.naive_server:
    run_naive_server(version_dir, args.port)
    return
  if args.rounds < 1:
    raise SystemExit('--rounds must be at least 1')
  sections = set(args.sections.split(','))
  if not sections or sections - {'throughput', 'first-request'}:
    raise SystemExit('--sections: throughput and/or first-request')
  examples = load_examples(args.examples_csv)
  work = tempfile.mkdtemp(prefix='serving-bench-')
  baseline = (args.baseline, baseline_tree(args.baseline, work)) if args.baseline else None
  print(f'Model: {version_dir}\nExamples: {len(examples)} distinct, one per request\n'
        f'Load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} '
        f'(1, 5, 15 min averages) on {os.cpu_count()} cores\n', flush=True)
  output = {'model_dir': version_dir, 'cpu_count': os.cpu_count(), 'baseline': args.baseline,
            'load_average_at_start': os.getloadavg()}
  try:
    if 'first-request' in sections:
      output['first_request'] = first_request_figures(version_dir, examples, work,
                                                      args.first_request_rounds, baseline)
    if 'throughput' in sections:
      output.update(throughput(args, version_dir, examples, work, baseline))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  if 'first_request' in output:
    print_first_requests(output['first_request'])
  output['load_average_at_end'] = os.getloadavg()
  os.makedirs(os.path.dirname(args.output), exist_ok=True)
  with open(args.output, 'w', encoding='utf-8') as f:
    json.dump(output, f, indent=2)
  print(f'\nSaved {args.output}')


def throughput(args, version_dir: str, examples: list[bytes], work: str, baseline) -> dict:
  """Every server, every cell, `args.rounds` rounds (see the module docstring); printed, and
  returned for the JSON."""
  levels = [int(c) for c in args.concurrency.split(',')]
  shutil.copytree(version_dir, os.path.join(work, 'models', MODEL_NAME,
                                            os.path.basename(version_dir.rstrip('/'))
                                            if os.path.basename(version_dir).isdigit() else '1'))
  print(f'Cells: {args.duration:g} s each after {args.warmup:g} s warm-up, {args.rounds} '
        'round(s)\n', flush=True)
  cores = sorted(os.sched_getaffinity(0))
  setups = [('naive', None, None, None), ('embedded', True, False, None),
            ('embedded', False, False, None), ('embedded', True, True, None),
            ('grpc_ceiling', None, None, None), ('grpc_model_floor', None, None, None),
            ('grpc_batched_floor', None, None, None)]
  if baseline:
    setups.insert(2, ('baseline', True, False, None))
  if len(cores) >= 2:  # Workers: the server on one core, this load generator on another.
    setups += [('workers', True, False, 1), ('workers', True, False, 2)]
  else:
    print('One core only: no workers cells (they pin the server and the load generator apart).')
  samples, servers = [], []
  try:
    for index, (kind, batching, logging, workers) in enumerate(setups):
      print(f'Starting server {index + 1}/{len(setups)}...', flush=True)
      if kind == 'naive':
        server = naive_server(version_dir)
      elif kind == 'grpc_ceiling':
        server = grpc_ceiling_server()
      elif kind == 'grpc_model_floor':
        server = grpc_ceiling_server(version_dir)
      elif kind == 'grpc_batched_floor':
        server = grpc_ceiling_server(version_dir, batched=True)
      elif kind == 'baseline':
        server = embedded_server(os.path.join(work, 'models'), os.path.join(work, f'home-{index}'),
                                 True, False, tree=baseline[1],
                                 name=f'baseline {baseline[0]} batching=on logging=off')
      else:
        server = embedded_server(os.path.join(work, 'models'),
                                 os.path.join(work, f'home-{index}'), batching, logging,
                                 workers=workers or 1,
                                 cpu=cores[1] if kind == 'workers' else None)
      servers.append((kind, batching, logging, workers, server))
    # All servers run at once and the cells alternate between them, so every comparison at a
    # given protocol and concurrency is measured within seconds (the machine's load drifts).
    top = max(levels)
    cells = [(protocol, concurrency, kind, batching, logging, workers, server)
             for protocol in ('rest', 'grpc') for concurrency in levels
             for kind, batching, logging, workers, server in servers
             if (server.rest_port if protocol == 'rest' else server.grpc_port) is not None and
             (kind != 'workers' or (protocol == 'rest' and concurrency == top))]
    all_cores = os.sched_getaffinity(0)
    print('Warming every server up (first model calls trace the graph)...', flush=True)
    for protocol, concurrency, kind, batching, logging, workers, server in cells:
      if concurrency == top:  # Every worker of a pool gets connections, hence first calls.
        asyncio.run(measure(protocol, server.rest_port if protocol == 'rest' else
                            server.grpc_port, examples, concurrency, 1.0, 0.0))
    for round_ in range(1, args.rounds + 1):
      for protocol, concurrency, kind, batching, logging, workers, server in in_turn(cells, round_):
        port = server.rest_port if protocol == 'rest' else server.grpc_port
        os.sched_setaffinity(0, {cores[0]} if kind == 'workers' else all_cores)
        cpu_before = server.cpu_seconds()
        try:
          sample = asyncio.run(measure(protocol, port, examples, concurrency, args.duration,
                                       args.warmup))
        finally:
          os.sched_setaffinity(0, all_cores)
        # The server's CPU time per request (its processes', warm-up included): unlike throughput,
        # hardly moved by the machine's other load.
        answered = sample['answered_with_warmup']
        sample['cpu_us_per_request'] = (round((server.cpu_seconds() - cpu_before) / answered *
                                              1e6) if answered else None)
        sample.update(server=kind, batching=batching, logging=logging, protocol=protocol,
                      concurrency=concurrency, workers=workers, round=round_)
        samples.append(sample)
        print(f'  round {round_}/{args.rounds} {server.name:40s} {protocol:4s} '
              f'c={concurrency:<3d} {sample["throughput_rps"]:8.1f} req/s  '
              f'p50 {sample["p50_ms"]} ms  p99 {sample["p99_ms"]} ms  errors {sample["errors"]}',
              flush=True)
  finally:
    for *_, server in servers:
      server.stop()
  results = medians(samples)
  summary = summarize(results, samples)
  print_table(results, summary)
  return {'duration_seconds': args.duration, 'rounds': args.rounds, 'results': results,
          'summary': summary, 'samples': samples}


_CELL_KEYS = ('server', 'batching', 'logging', 'protocol', 'concurrency', 'workers')


def in_turn(cells: list, round_: int) -> list:
  """The cells in the order of round `round_`: the servers of one protocol and concurrency in
  turn, reversed every other round, so that no server is always measured first, right after
  another concurrency's cells (issue 21: with the order fixed, the server measured first made
  0.83-0.86x the gRPC throughput at c=32 of the one measured next in three runs, for the same CPU
  time per request; 0.96x in a run with the order alternating)."""
  groups = {}
  for cell in cells:
    groups.setdefault(cell[:2], []).append(cell)
  return [cell for group in groups.values()
          for cell in (group if round_ % 2 else group[::-1])]


def medians(samples) -> list[dict]:
  """One result per cell: the median of its rounds (throughput range and errors over all)."""
  cells = {}
  for sample in samples:
    cells.setdefault(tuple(sample[k] for k in _CELL_KEYS), []).append(sample)
  results = []
  for key, rounds in cells.items():
    median = lambda field: (round(statistics.median(r[field] for r in rounds), 2)
                            if all(r[field] is not None for r in rounds) else None)
    throughputs = [r['throughput_rps'] for r in rounds]
    results.append(dict(zip(_CELL_KEYS, key), throughput_rps=median('throughput_rps'),
                        throughput_range=[min(throughputs), max(throughputs)],
                        p50_ms=median('p50_ms'), p99_ms=median('p99_ms'),
                        cpu_us_per_request=median('cpu_us_per_request'),
                        errors=sum(r['errors'] for r in rounds), rounds=len(rounds)))
  return results


def _cell(results, **match):
  for cell in results:
    if all(cell.get(k) == v for k, v in match.items()):
      return cell
  return None


_BATCHED = {'server': 'embedded', 'batching': True, 'logging': False}


def _round_ratios(samples, protocol: str, level: int, reference: dict, other: dict,
                  field: str = 'throughput_rps') -> list:
  """Per round, `other`'s `field` / `reference`'s, the two measured within the round."""
  ratios = []
  for round_ in sorted({s['round'] for s in samples}):
    pick = lambda match: _cell(samples, protocol=protocol, concurrency=level, round=round_,
                               **match)
    first, second = pick(reference), pick(other)
    if first and second and first[field]:
      ratios.append(second[field] / first[field])
  return ratios


def _logging_cost(samples, protocol: str, level: int) -> float | None:
  """Median over rounds of 1 - logged / unlogged throughput, each pair measured in one round."""
  ratios = _round_ratios(samples, protocol, level, _BATCHED, dict(_BATCHED, logging=True))
  return 1 - statistics.median(ratios) if ratios else None


def _target(targets: list, name: str, value, unit: str, met: bool | None):
  targets.append({'target': name, 'value': value, 'unit': unit, 'met': met})


def summarize(results, samples) -> dict:
  """Every target of issues 3 and 13 as {target, value, unit, met}, and the workers figures."""
  targets = []
  cell = lambda **match: _cell(results, **match) or {}
  batched = lambda protocol, level: cell(server='embedded', batching=True, logging=False,
                                         protocol=protocol, concurrency=level)
  naive_1, rest_1, grpc_1 = cell(server='naive', concurrency=1), batched('rest', 1), batched(
      'grpc', 1)
  if naive_1.get('p50_ms') and rest_1.get('p50_ms'):
    _target(targets, 'c=1: REST p50 <= naive p50', round(rest_1['p50_ms'] / naive_1['p50_ms'], 3),
            f'x naive ({rest_1["p50_ms"]} vs {naive_1["p50_ms"]} ms)',
            rest_1['p50_ms'] <= naive_1['p50_ms'])
  if rest_1.get('p50_ms') and grpc_1.get('p50_ms'):
    ratio = grpc_1['p50_ms'] / rest_1['p50_ms']
    _target(targets, 'c=1: gRPC p50 <= 1.2x REST p50', round(ratio, 3),
            f'x REST ({grpc_1["p50_ms"]} vs {rest_1["p50_ms"]} ms)', ratio <= 1.2)
    floor = cell(server='grpc_model_floor', concurrency=1)
    if floor.get('p50_ms'):
      _target(targets, 'c=1: gRPC stack + model call alone (floor)',
              round(floor['p50_ms'] / rest_1['p50_ms'], 3),
              f'x REST ({floor["p50_ms"]} ms)', None)
  level = 32 if _cell(results, concurrency=32) else max(c['concurrency'] for c in results)
  naive = cell(server='naive', concurrency=level)
  rest, grpc_ = batched('rest', level), batched('grpc', level)
  if naive.get('throughput_rps') and rest.get('throughput_rps'):
    speedup = rest['throughput_rps'] / naive['throughput_rps']
    _target(targets, f'c={level}: REST >= 4x naive', round(speedup, 2), 'x naive', speedup >= 4)
    _target(targets, f'c={level}: REST p99 < 50 ms', rest['p99_ms'], 'ms', rest['p99_ms'] < 50)
  for protocol, limit in (('rest', 0.10), ('grpc', None)):
    cost = _logging_cost(samples, protocol, level)
    if cost is not None:
      _target(targets, f'c={level}: {protocol} logging cost' + (' <= 10%' if limit else
                                                                 ' (reported)'),
              round(cost, 3), 'fraction of throughput', cost <= limit if limit else None)
  ceiling = cell(server='grpc_ceiling', concurrency=level)
  if ceiling.get('throughput_rps') and grpc_.get('throughput_rps'):
    share = grpc_['throughput_rps'] / ceiling['throughput_rps']
    _target(targets, f'c={level}: gRPC >= 80% of the gRPC stack alone', round(share, 3),
            f'of {ceiling["throughput_rps"]:.0f} req/s', share >= 0.8)
    floor = cell(server='grpc_batched_floor', concurrency=level)
    if floor.get('throughput_rps'):
      _target(targets, f'c={level}: gRPC stack + batched model alone (floor)',
              round(floor['throughput_rps'] / ceiling['throughput_rps'], 3),
              f'of the stack alone ({floor["throughput_rps"]:.0f} req/s)', None)
  for protocol in ('rest', 'grpc'):  # --baseline: this tree against the other commit's.
    for field, what in (('throughput_rps', 'throughput'), ('cpu_us_per_request', 'CPU/request')):
      ratios = _round_ratios(samples, protocol, level, {'server': 'baseline'}, _BATCHED, field)
      if ratios:
        _target(targets, f'c={level}: {protocol} {what}, this tree / baseline',
                round(statistics.median(ratios), 3),
                'rounds ' + ' '.join(f'{r:.3f}' for r in ratios), None)
  summary = {'concurrency': level, 'targets': targets}
  pinned = {c['workers']: c for c in results if c['server'] == 'workers'}
  if pinned:
    summary['workers'] = {
        'concurrency': level, 'note': 'server pinned to one core, load generator to another',
        'throughput_rps': {str(k): c['throughput_rps'] for k, c in sorted(pinned.items())},
        'p99_ms': {str(k): c['p99_ms'] for k, c in sorted(pinned.items())}}
  return summary


def print_table(results, summary):
  print('\nserver       batching logging workers proto  conc   req/s (range)          p50 ms   '
        'p99 ms  CPU us/req  errors')
  for c in results:
    low, high = c['throughput_range']
    print(f'{c["server"]:12s} {str(c["batching"]):8s} {str(c["logging"]):7s} '
          f'{str(c["workers"]):7s} {c["protocol"]:5s} {c["concurrency"]:5d} '
          f'{c["throughput_rps"]:8.1f} ({low:.0f}-{high:.0f}) {c["p50_ms"]!s:>8} '
          f'{c["p99_ms"]!s:>8} {c["cpu_us_per_request"]!s:>11} {c["errors"]:7d}')
  print('\nTargets (medians of the rounds):')
  for t in summary['targets']:
    met = {True: 'met', False: 'NOT met', None: '-'}[t['met']]
    print(f'  {t["target"]:48s} {t["value"]!s:>8} {t["unit"]:34s} {met}')
  workers = summary.get('workers')
  if workers:
    rates = workers['throughput_rps']
    print(f'\nWorkers at c={workers["concurrency"]} ({workers["note"]}): ' +
          ', '.join(f'{k} worker(s) {v:.0f} req/s' for k, v in rates.items()))


if __name__ == '__main__':
  main()
