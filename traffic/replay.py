"""`loopline replay`: send held-back spans to the model server as production traffic would.

Rows of the chosen spans (by default the "future" spans 6-8) go through a breakage scenario
(traffic/scenarios.py), become serialized tf.Examples the way the upstream service builds them
(typed by the curated schema, except the columns the scenario sends as text), and are sent one
request per row over REST or gRPC with a request id and a routing key (the row's position: a
server with a sticky routing header and a routing seed then sends the same rows to the same label
on every replay, whatever the concurrency), at a bounded rate and concurrency. The label is never
sent: it is kept in the replay's ground-truth manifest,
`<home>/replays/<replay id>/ground_truth.csv`, which `loopline feedback` delivers later.
"""
import base64
import concurrent.futures
import csv
import dataclasses
import http.client
import json
import os
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from models import features

MANIFEST_FILE = 'ground_truth.csv'
ROUTING_KEY_HEADER = 'X-Routing-Key'   # the row's position in the replay
SUMMARY_FILE = 'replay.json'


class ReplayError(RuntimeError):
  """The replay cannot start (server unreachable, no rows); the message says why."""


@dataclasses.dataclass
class ReplayResult:
  replay_id: str
  scenario: str
  sent: int = 0
  succeeded: int = 0
  failed_by_status: Dict[str, int] = dataclasses.field(default_factory=dict)
  versions: Dict[str, int] = dataclasses.field(default_factory=dict)
  seconds: float = 0.0

  def summary(self) -> str:
    failed = sum(self.failed_by_status.values())
    rate = self.sent / self.seconds if self.seconds else 0.0
    versions = ', '.join(f'{v}: {n}' for v, n in sorted(self.versions.items())) or 'none'
    errors = ', '.join(f'{k}: {n}' for k, n in sorted(self.failed_by_status.items()))
    return (f'replay {self.replay_id} ({self.scenario}): {self.sent} requests in '
            f'{self.seconds:.1f}s ({rate:.0f}/s), {self.succeeded} ok, {failed} failed'
            f'{" (" + errors + ")" if errors else ""}; answered by version(s) {versions}')


class _RateLimiter:
  """At most `rate` calls per second across threads (0: unlimited)."""

  def __init__(self, rate: float):
    self._interval = 1.0 / rate if rate > 0 else 0.0
    self._next = time.monotonic()
    self._lock = threading.Lock()

  def wait(self) -> None:
    if not self._interval:
      return
    with self._lock:
      now = time.monotonic()
      delay = self._next - now
      self._next = max(self._next, now) + self._interval
    if delay > 0:
      time.sleep(delay)


class RestSender:
  """One keep-alive HTTP connection per thread to TF Serving's REST predict API."""

  def __init__(self, host: str, port: int, model_name: str, timeout: float = 10.0):
    self._host, self._port, self._timeout = host, port, timeout
    self._path = f'/v1/models/{model_name}:predict'
    self._local = threading.local()

  def _connection(self) -> http.client.HTTPConnection:
    if getattr(self._local, 'connection', None) is None:
      self._local.connection = http.client.HTTPConnection(self._host, self._port,
                                                          timeout=self._timeout)
    return self._local.connection

  def send(self, request_id: str, serialized_example: bytes, routing_key: str = ''):
    """Returns (status text, answering version or None)."""
    body = json.dumps({'instances': [{'b64': base64.b64encode(serialized_example).decode()}]})
    for attempt in (1, 2):                       # one retry on a connection the server closed
      connection = self._connection()
      try:
        connection.request('POST', self._path, body=body, headers={
            'Content-Type': 'application/json', 'X-Request-Id': request_id,
            ROUTING_KEY_HEADER: routing_key})
        response = connection.getresponse()
        response.read()
        return ('ok' if response.status == 200 else f'http_{response.status}',
                response.getheader('X-Model-Version'))
      except (ConnectionError, http.client.HTTPException, OSError):
        connection.close()
        self._local.connection = None
        if attempt == 2:
          return 'connection_error', None


class GrpcSender:
  """TF Serving's gRPC PredictionService, request id in the `x-request-id` metadata."""

  def __init__(self, host: str, port: int, model_name: str, timeout: float = 10.0):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
    self._grpc, self._tf, self._predict_pb2 = grpc, tf, predict_pb2
    self._channel = grpc.insecure_channel(f'{host}:{port}')
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._model_name, self._timeout = model_name, timeout

  def send(self, request_id: str, serialized_example: bytes, routing_key: str = ''):
    request = self._predict_pb2.PredictRequest()
    request.model_spec.name = self._model_name
    request.model_spec.signature_name = features.SERVING_SIGNATURE
    request.inputs[features.SERVING_INPUT_KEY].CopyFrom(
        self._tf.make_tensor_proto([serialized_example], dtype=self._tf.string))
    try:
      response = self._stub.Predict(request, timeout=self._timeout,
                                    metadata=(('x-request-id', request_id),
                                              (ROUTING_KEY_HEADER.lower(), routing_key)))
      return 'ok', str(response.model_spec.version.value)
    except self._grpc.RpcError as e:
      return f'grpc_{e.code().name}', None


def replay(rows: Sequence[Dict[str, str]], send: Callable[[str, bytes, str], tuple],
           to_example: Callable[[Dict[str, str]], bytes], replay_id: str, scenario: str,
           out_dir: str, concurrency: int = 8, rate: float = 0.0,
           progress: Optional[Callable[[str], None]] = None) -> ReplayResult:
  """Sends every row (label removed) and writes the ground-truth manifest; returns the counts.

  The manifest is written before the first request: ground truth exists for every request id
  that was sent, whether or not the server answered.
  """
  if not rows:
    raise ReplayError('nothing to replay: no rows')
  os.makedirs(out_dir, exist_ok=True)
  request_ids = [f'{replay_id}-{i:06d}' for i in range(len(rows))]
  with open(os.path.join(out_dir, MANIFEST_FILE), 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(['request_id', features.LABEL_KEY])
    for request_id, row in zip(request_ids, rows):
      writer.writerow([request_id, row.get(features.LABEL_KEY, '')])
  result = ReplayResult(replay_id, scenario)
  limiter = _RateLimiter(rate)
  lock = threading.Lock()

  def send_one(index: int) -> None:
    row = {k: v for k, v in rows[index].items() if k != features.LABEL_KEY}
    limiter.wait()
    status, version = send(request_ids[index], to_example(row), f'{index:06d}')
    with lock:
      result.sent += 1
      if status == 'ok':
        result.succeeded += 1
        result.versions[version or '?'] = result.versions.get(version or '?', 0) + 1
      else:
        result.failed_by_status[status] = result.failed_by_status.get(status, 0) + 1
      if progress and result.sent % 500 == 0:
        progress(f'  {result.sent}/{len(rows)} sent')

  started = time.monotonic()
  with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
    list(pool.map(send_one, range(len(rows))))
  result.seconds = time.monotonic() - started
  with open(os.path.join(out_dir, SUMMARY_FILE), 'w') as f:
    json.dump(dataclasses.asdict(result), f, indent=2, sort_keys=True)
  return result


def read_ground_truth(out_dir: str) -> List[Dict[str, str]]:
  with open(os.path.join(out_dir, MANIFEST_FILE), newline='') as f:
    return list(csv.DictReader(f))
