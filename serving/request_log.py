"""Sampled request logging to PredictionLog TFRecord files, off the serving interpreter.

The server's Python work shares one interpreter lock, so whatever logging costs there is taken
from serving. Requests only hand a `LogRecord` (plain Python/numpy values) to a bounded buffer.
Once per event-loop iteration, after the responses went out, everything that accumulated is packed
into one message of plain values (arrays as raw bytes, ~1 us a record; `pack_record`) and written
to a pipe. A writer process (`serving.log_writer`, started by `RequestLogger.start`) turns the
records into `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`s with the privacy rules
applied, and writes the rotated, finalized files; see that module.

Logging never delays or fails a prediction: when the buffer is full (the writer fell behind, or
is being restarted) records are dropped and counted. When the writer process dies, the records it
had received but not written are counted as dropped (`writer_exited`) and a new writer is started
after `RESTART_DELAY_SECONDS`; it salvages the dead one's unfinished file.

The request id has no field of its own in TF Serving's `LogMetadata`; it is stored in
`log_metadata.request_origin` as `request_id=<id>`, plus `;example=<i>` for the i-th example of a
split request (see `request_id_of`, `example_index_of`).
"""
import asyncio
import collections
import dataclasses
import fcntl
import logging
import os
import pickle
import random
import struct
import subprocess
import sys

import numpy as np

from serving import metrics as metrics_lib
from serving.log_encoding import pack_array
from serving.privacy import PrivacyFilter

log = logging.getLogger('serving.request_log')
REQUEST_ID_PREFIX = 'request_id='
RESTART_DELAY_SECONDS = 1.0
WRITER_START_SECONDS = 60.0
PIPE_BYTES = 1 << 20  # Asked of the kernel for the pipe to the writer (Linux's default cap).
_F_SETPIPE_SZ = 1031
_HEADER = struct.Struct('<II')  # Payload length, records in it.
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(slots=True)
class LogRecord:
  """One answered request, as plain values (arrays as numpy arrays in the server, packed in the
  writer process)."""
  kind: str  # 'predict', 'classify' or 'regress'.
  model_name: str
  version: int
  signature_name: str
  request_id: str
  timestamp: float
  inputs: dict | None = None  # predict
  output_filter: tuple = ()
  outputs: dict | None = None
  examples: list | None = None  # classify / regress: serialized tf.Examples
  classes: np.ndarray | None = None
  scores: np.ndarray | None = None
  values: np.ndarray | None = None


def _origin_fields(prediction_log) -> dict[str, str]:
  origin = prediction_log.log_metadata.request_origin
  return dict(part.partition('=')[::2] for part in origin.split(';') if '=' in part)


def request_id_of(prediction_log) -> str:
  """The request id a PredictionLog was written with ('' if none)."""
  return _origin_fields(prediction_log).get('request_id', '')


def example_index_of(prediction_log) -> int:
  """The position of the PredictionLog's example in its request (0 for one-example requests)."""
  return int(_origin_fields(prediction_log).get('example', '0'))


# ---- the wire format between the server and its writer process ---------------------------------

def _pack_arrays(arrays):
  return None if arrays is None else {alias: pack_array(a) for alias, a in arrays.items()}


def _pack_optional(array):
  return None if array is None else pack_array(array)


def pack_record(record: LogRecord) -> tuple:
  """The record's fields, arrays packed (`log_encoding.pack_array`): what goes to the writer,
  which rebuilds it as `LogRecord(*fields)` with its arrays left packed. Plain values pickle several
  times faster than numpy arrays do."""
  return (record.kind, record.model_name, record.version, record.signature_name,
          record.request_id, record.timestamp, _pack_arrays(record.inputs), record.output_filter,
          _pack_arrays(record.outputs), record.examples, _pack_optional(record.classes),
          _pack_optional(record.scores), _pack_optional(record.values))


def frame_message(payload: bytes, records: int = 0) -> bytes:
  """The payload behind its length and the number of records it carries (0 for settings)."""
  return _HEADER.pack(len(payload), records) + payload


class MessageReader:
  """Splits a byte stream of `frame_message`s back into messages."""

  def __init__(self):
    self._buffer = bytearray()

  @property
  def pending_bytes(self) -> int:
    return len(self._buffer)

  def pending_records(self) -> int:
    """Records of the message whose start was read but not its end (0 if unknown)."""
    if len(self._buffer) < _HEADER.size:
      return 0
    return _HEADER.unpack_from(self._buffer)[1]

  def feed(self, chunk: bytes) -> list[bytes]:
    return [payload for _, payload in self.feed_counted(chunk)]

  def feed_counted(self, chunk: bytes) -> list[tuple[int, bytes]]:
    """[(records, payload)] of the messages this chunk completes."""
    self._buffer += chunk
    messages, offset = [], 0
    while len(self._buffer) - offset >= _HEADER.size:
      size, records = _HEADER.unpack_from(self._buffer, offset)
      end = offset + _HEADER.size + size
      if end > len(self._buffer):
        break
      messages.append((records, bytes(self._buffer[offset + _HEADER.size:end])))
      offset = end
    del self._buffer[:offset]
    return messages


def child_environment() -> dict:
  """The environment for a child process running `python -m serving.*`: this copy of `serving`
  first on its path."""
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get('PYTHONPATH')) if p)
  return env


class _Supervisor:
  """In a pool's worker, the supervisor's ends of the relay pipes, in place of a writer process."""

  def __init__(self, records_fd: int, reports_fd: int):
    self.stdin = os.fdopen(records_fd, 'wb', buffering=0)
    self.stdout = os.fdopen(reports_fd, 'rb', buffering=0)
    self.pid = os.getppid()

  @staticmethod
  def wait() -> int:
    return 0


# ---- the server side ----------------------------------------------------------------------------

class RequestLogger:
  """Bounded buffer in the server, writer process behind a pipe (see the module docstring).

  `submit` (on the event loop) only appends to a list; `start` and `close` run on the event loop
  too, which also reads the writer's counter reports into the metrics.
  """

  def __init__(self, config, privacy: PrivacyFilter, metrics: metrics_lib.Metrics,
               rng: random.Random | None = None, relay_pipes: tuple[int, int] | None = None):
    """`config`: a `serving.config.RequestLogConfig` with a directory. `relay_pipes`: in a worker
    of a pool (`serving.workers`), the pipes (records out, reports in) to the pool's supervisor,
    which relays the records to the pool's one writer process: no writer is started here."""
    self.config = config
    self._relay_pipes = relay_pipes
    self._privacy = privacy
    self._metrics = metrics
    self._rng = rng or random.Random()
    self._pending: list[LogRecord] = []
    self._outgoing: collections.deque[list] = collections.deque()  # [bytes view, records]
    self._head_started = False  # Whether part of the first outgoing message went out.
    self._queued = 0  # Records pending or in outgoing messages.
    self._unsettled = 0  # Records handed to the writer, not yet reported written or dropped.
    self._flush_scheduled = False
    self._loop = None
    self._process = None
    self._writing = False  # Whether the loop watches the pipe for room.
    self._reports = b''
    self._restart = None
    self._closing = False
    self._ready = None  # Set when the writer says it is ready (or dies first).
    self._started = False  # Whether start() succeeded: from then on a dead writer is replaced.

  @property
  def writer_pid(self) -> int | None:
    return None if self._process is None else self._process.pid

  async def start(self):
    """Create the directory and start the writer; errors surface here, at start-up.

    Returns once the writer is ready, which it says after it stopped listening to SIGINT and
    SIGTERM: a signal to the server's process group from then on leaves ending it to the server.
    """
    os.makedirs(self.config.directory, exist_ok=True)
    self._loop = asyncio.get_running_loop()
    self._start_writer()
    try:
      await asyncio.wait_for(self._ready.wait(), WRITER_START_SECONDS)
    except asyncio.TimeoutError:
      raise RuntimeError('The request-log writer process did not start within '
                         f'{WRITER_START_SECONDS:g} s') from None
    if self._process is None:
      raise RuntimeError('The request-log writer process exited at start-up (its error is above)')
    self._started = True

  def sampled(self) -> bool:
    return self.config.sampling_rate >= 1.0 or self._rng.random() < self.config.sampling_rate

  def submit(self, record: LogRecord) -> bool:
    """Queue a record (call on the event loop); False, and counted, when the buffer is full."""
    if self._queued >= self.config.buffer_records:
      self._metrics.log_dropped('buffer_full').inc()
      return False
    self._pending.append(record)
    self._queued += 1
    if not self._flush_scheduled:
      self._flush_scheduled = True
      asyncio.get_running_loop().call_soon(self._flush_pending)
    return True

  async def close(self):
    """Hand everything buffered to the writer, let it finalize its file, wait for it to end."""
    if self._loop is None or self._closing:
      return
    self._closing = True
    if self._restart is not None:
      self._restart.cancel()
    if self._process is None:  # Between a writer's death and its replacement.
      unsent = len(self._pending) + sum(count for _, count in self._outgoing)
      if not unsent:
        return
      if self._relay_pipes is not None:  # The pool's supervisor is gone; no writer to start.
        self._metrics.log_dropped('writer_exited').inc(unsent)
        return
      self._start_writer()
    self._flush_pending()
    process = self._process
    self._stop_watching(process)
    os.set_blocking(process.stdin.fileno(), True)
    os.set_blocking(process.stdout.fileno(), True)
    reports = await self._loop.run_in_executor(None, self._finish, process)
    self._read_reports(reports)
    self._process = None
    # What the writer ended without accounting for, or never got: it died.
    unsent = sum(count for _, count in self._outgoing)
    lost = self._unsettled + unsent
    if lost > 0:
      self._metrics.log_dropped('writer_exited').inc(lost)
    self._queued -= unsent
    self._unsettled = 0
    self._outgoing.clear()

  def _finish(self, process) -> bytes:
    """Blocking (the pipe now is): send the rest, close the pipe, collect the last reports."""
    self._send()
    process.stdin.close()
    reports = process.stdout.read()
    code = process.wait()
    if code != 0:
      log.error('The request log writer exited with code %s', code)
    return reports

  def _start_writer(self):
    self._restart = None
    self._ready = asyncio.Event()
    if self._relay_pipes is not None:
      self._process = _Supervisor(*self._relay_pipes)
    else:
      self._process = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, '-m', 'serving.log_writer'], stdin=subprocess.PIPE,
          stdout=subprocess.PIPE, env=child_environment())
    try:
      fcntl.fcntl(self._process.stdin.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
      pass  # A smaller pipe only means a smaller buffer.
    os.set_blocking(self._process.stdin.fileno(), False)
    os.set_blocking(self._process.stdout.fileno(), False)
    settings = pickle.dumps((dataclasses.asdict(self.config), self._privacy))
    self._outgoing.appendleft([memoryview(frame_message(settings)), 0])
    self._head_started = False
    if not self._closing:
      process = self._process
      self._loop.add_reader(process.stdout.fileno(), self._on_reports, process)
      self._send()

  def forward(self, payload: bytes, records: int) -> bool:
    """Queue a message of `records` packed records that a worker of the pool sent (the
    supervisor's side of `relay_pipes`); False, and counted, when the buffer is full."""
    if self._queued + records > self.config.buffer_records:
      self._metrics.log_dropped('buffer_full').inc(records)
      return False
    self._outgoing.append([memoryview(frame_message(payload, records)), records])
    self._queued += records
    if self._process is not None and not self._closing:
      self._send()
    return True

  def _flush_pending(self):
    """Pack what accumulated during this loop iteration into one message and send it."""
    self._flush_scheduled = False
    if not self._pending:
      return
    records, self._pending = self._pending, []
    payload = pickle.dumps([pack_record(r) for r in records], pickle.HIGHEST_PROTOCOL)
    self._outgoing.append([memoryview(frame_message(payload, len(records))), len(records)])
    if self._process is not None and not self._closing:
      self._send()

  def _send(self):
    """Write outgoing messages while the pipe has room; wait for room otherwise (never, once
    `close` made the pipe blocking)."""
    process = self._process
    fd = process.stdin.fileno()
    while self._outgoing:
      head = self._outgoing[0]
      try:
        written = os.write(fd, head[0])
      except BlockingIOError:
        written = 0
      except BrokenPipeError:
        return  # The writer died; its reports pipe ends too, and _on_reports takes over.
      self._head_started = self._head_started or written > 0
      if written < len(head[0]):
        head[0] = head[0][written:]
        if not self._writing:
          self._writing = True
          self._loop.add_writer(fd, self._send)
        return
      self._outgoing.popleft()
      self._head_started = False
      self._queued -= head[1]
      self._unsettled += head[1]
    if self._writing:
      self._writing = False
      self._loop.remove_writer(fd)

  def _stop_watching(self, process):
    self._loop.remove_reader(process.stdout.fileno())
    if self._writing:
      self._writing = False
      self._loop.remove_writer(process.stdin.fileno())

  def _on_reports(self, process):
    try:
      data = os.read(process.stdout.fileno(), 65536)
    except BlockingIOError:
      return
    if data:
      self._read_reports(data)
    elif not self._closing:
      self._writer_died(process)

  def _read_reports(self, data: bytes):
    """Counter lines from the writer (`written N`, `dropped REASON N`, `files N`) into metrics."""
    lines = (self._reports + data).split(b'\n')
    self._reports = lines.pop()
    for line in lines:
      kind, *labels, amount = line.decode('ascii').split()
      if kind == 'ready':
        self._ready.set()
      elif kind == 'relayed':  # The supervisor took them; the pool's writer counts them.
        self._unsettled -= int(amount)
      elif kind == 'written':
        self._metrics.log_written().inc(int(amount))
        self._unsettled -= int(amount)
      elif kind == 'dropped':
        self._metrics.log_dropped(labels[0]).inc(int(amount))
        self._unsettled -= int(amount)
      elif kind == 'files':
        self._metrics.log_files().inc(int(amount))

  def _writer_died(self, process):
    self._stop_watching(process)
    code = process.wait()
    for pipe in (process.stdin, process.stdout):
      try:
        pipe.close()
      except OSError:
        pass
    lost = self._unsettled
    if self._outgoing and self._head_started:  # Half of it went to the dead writer.
      half_sent = self._outgoing.popleft()[1]
      self._queued -= half_sent
      lost += half_sent
    # Settings go first to every writer; the next one gets its own.
    self._outgoing = collections.deque(m for m in self._outgoing if m[1])
    self._unsettled = 0
    self._process = None
    if self._relay_pipes is not None:  # The supervisor is gone: nothing to restart from here.
      log.error('The worker pool supervisor is gone; %d records lost', lost)
      self._metrics.log_dropped('writer_exited').inc(lost)
      return
    if not self._started:  # Died at start-up: start() reports it, no restart.
      self._ready.set()
      return
    if lost:
      self._metrics.log_dropped('writer_exited').inc(lost)
    log.error('The request log writer exited (code %s); %d records lost; restarting it in %g s',
              code, lost, RESTART_DELAY_SECONDS)
    self._restart = self._loop.call_later(RESTART_DELAY_SECONDS, self._start_writer)
