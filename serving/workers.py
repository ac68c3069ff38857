"""Worker processes: `loopline serve --workers N` serves from N processes sharing the ports.

One server process is bound by one interpreter lock. A pool runs N complete servers (each its own
models, batcher, event loop: a `ModelServer`) under a supervisor that serves nothing itself:

- **Ports.** The supervisor binds the REST and gRPC ports with SO_REUSEPORT without listening (so
  port 0 picks one port for the whole pool, and the ports stay the pool's while a worker is
  replaced); every worker listens on both with SO_REUSEPORT, and the kernel spreads new
  connections across the workers' listening sockets. A connection stays with the worker that
  accepted it.
- **One request-log writer.** Each worker hands its packed records to the supervisor on its own
  pipe (`RequestLogger(relay_pipes=...)`); the supervisor forwards them to the pool's only writer
  process (its own `RequestLogger`): no two processes ever write one log file.
- **Metrics.** prometheus_client's multiprocess mode (`serving.metrics`): the supervisor makes an
  empty directory for the run and sets `$PROMETHEUS_MULTIPROC_DIR` to it before prometheus_client
  is imported; every process of the pool writes its values there, and the worker answering
  `/monitoring/prometheus/metrics` sums every process's files: the pool's exact totals, at once.
  When a worker exits the supervisor marks it dead (`mark_process_dead`): its counters stay in the
  sums (they never go back), its queue-depth gauge leaves them.
- **Model changes.** Every worker polls the model directories and the `--model-config-file`
  itself. `HandleReloadConfigRequest` reaches every worker: the worker that receives it checks
  the config and sends it to the supervisor over its control pipe; the supervisor (one reload at
  a time) keeps it as the pool's config, sends it to every worker, including workers still
  starting, waits until each has applied it and answers with the first error (in worker order)
  or OK. A worker started later (a replacement) loads the pool's config, not the one it was
  started with; one that dies during a reload is replaced with the new config.
- **A worker that dies** (`kill -9`, a crash) is noticed by the supervisor, which starts a
  replacement. Connections the dead process had accepted are closed by the kernel: their
  clients see the connection reset or closed (REST) or UNAVAILABLE (gRPC), at once and never a
  hang; no other process can answer on a connection that only the dead process held, so no 503
  is possible there. New connections go to the remaining workers, once the dead process has
  finished exiting: until all its threads are gone (milliseconds for TensorFlow's many), its
  listening sockets are open, and a new connection the kernel hands one of them is reset
  (SO_REUSEPORT's limit; a client retry gets another worker). A replacement listens only once its
  versions are loaded and warmed up (`serving.warmup`).
- **SIGTERM / SIGINT** to the supervisor: every worker stops accepting, answers its in-flight
  requests and hands its last records over; then the writer finalizes its file; exit 0.
Workers die with the supervisor (a parent-death signal), draining as on SIGTERM.
"""
import argparse
import asyncio
import ctypes
import dataclasses
import itertools
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from tensorflow_serving.config import model_server_config_pb2

from serving import metrics as metrics_lib
from serving.config import ServerConfig
from serving.errors import Code, ServingError
from serving.lifecycle import run_until_signal
from serving.privacy import PrivacyFilter
from serving.request_log import MessageReader, RequestLogger, child_environment, frame_message

log = logging.getLogger('serving.workers')
RESTART_DELAY_SECONDS = 1.0
WORKER_START_SECONDS = 300.0
_PR_SET_PDEATHSIG = 1


class _ControlPipe:
  """One end of a worker's control pipes: pickled messages (tuples) framed as the log relay's,
  read on the event loop and handed to `on_message`, or `on_closed` at end of file."""

  def __init__(self, read_fd: int, write_fd: int, on_message, on_closed):
    self._read_fd, self._write_fd = read_fd, write_fd
    self._reader = MessageReader()
    self._on_message, self._on_closed = on_message, on_closed
    os.set_blocking(read_fd, False)
    self._loop = asyncio.get_running_loop()
    self._loop.add_reader(read_fd, self._readable)

  def send(self, *message) -> bool:
    """Write one message (a few hundred bytes: a pipe takes it whole); False if the other end is
    gone."""
    try:
      os.write(self._write_fd, frame_message(pickle.dumps(message)))
      return True
    except OSError:
      return False

  def _readable(self):
    try:
      data = os.read(self._read_fd, 1 << 16)
    except BlockingIOError:
      return
    if not data:
      self.close()
      self._on_closed()
      return
    for payload in self._reader.feed(data):
      self._on_message(pickle.loads(payload))

  def close(self):
    if self._read_fd is not None:
      self._loop.remove_reader(self._read_fd)
      os.close(self._read_fd)
      os.close(self._write_fd)
      self._read_fd = self._write_fd = None


# ---- a worker -----------------------------------------------------------------------------------

class _SupervisorLink:
  """A worker's side of its control pipes: config reloads to and from the supervisor."""

  def __init__(self, read_fd: int, write_fd: int):
    self._pipe = _ControlPipe(read_fd, write_fd, self._on_message, self._supervisor_gone)
    self._ids = itertools.count()
    self._waiting: dict[int, asyncio.Future] = {}
    self._tasks: set[asyncio.Task] = set()
    self.backend = None
    self.loaded = asyncio.Event()  # Set once the worker's own models are loaded.

  async def reload(self, config) -> None:
    """HandleReloadConfigRequest in a worker: every worker of the pool applies `config`."""
    self.backend.models_of(config)  # A bad config is refused here, before any worker changes.
    request_id = next(self._ids)
    future = self._waiting[request_id] = asyncio.get_running_loop().create_future()
    if not self._pipe.send('reload', request_id, config.SerializeToString()):
      del self._waiting[request_id]
      raise ServingError(Code.UNAVAILABLE, 'The worker pool supervisor is gone')
    code, message = await future
    if code != Code.OK:
      raise ServingError(code, message)

  def _on_message(self, message):
    kind, message_id, *rest = message
    if kind == 'apply':
      task = asyncio.get_running_loop().create_task(self._apply(message_id, rest[0]))
      self._tasks.add(task)
      task.add_done_callback(self._tasks.discard)
    elif kind == 'reloaded':
      future = self._waiting.pop(message_id, None)
      if future is not None and not future.done():
        future.set_result(tuple(rest))

  async def _apply(self, reload_id: int, config_bytes: bytes):
    await self.loaded.wait()  # After the worker's first load, never overwritten by it.
    try:
      await self.backend.reload_config(
          model_server_config_pb2.ModelServerConfig.FromString(config_bytes))
      self._pipe.send('applied', reload_id, Code.OK, '')
    except ServingError as e:
      self._pipe.send('applied', reload_id, e.code, e.message)

  def _supervisor_gone(self):
    for future in self._waiting.values():
      if not future.done():
        future.set_result((Code.UNAVAILABLE, 'The worker pool supervisor is gone'))
    self._waiting.clear()


def worker_main(control_pipes: tuple[int, int], log_pipes: tuple[int, int] | None):
  """A worker process: (config, the pool's reloaded config or None) from stdin, `ready` on stdout
  once serving, serve until SIGTERM."""
  import uvloop  # pylint: disable=import-outside-toplevel
  from serving.server import ModelServer  # pylint: disable=import-outside-toplevel  # TensorFlow.
  # SIGTERM (drain and exit) when the supervisor dies, even by kill -9.
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  # Fails (end of file) if the supervisor is gone.
  config, pool_model_config = pickle.load(sys.stdin.buffer)

  async def serve():
    link = _SupervisorLink(*control_pipes)
    server = ModelServer(config, metrics_lib.Metrics(multiprocess=True), log_pipes, link.reload)
    link.backend = server.backend
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(signum, stop.set)
    await server.start(pool_model_config)
    link.loaded.set()
    os.write(sys.stdout.fileno(), b'ready\n')
    await stop.wait()
    await server.stop()

  uvloop.run(serve())


# ---- the supervisor -----------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)  # Compared and hashed by identity (a set of them).
class _Worker:
  index: int
  process: subprocess.Popen
  exited: asyncio.Future | None = None
  control: _ControlPipe | None = None
  applying: dict = dataclasses.field(default_factory=dict)  # reload id -> Future((code, text))
  records_fd: int | None = None  # Its records, read here.
  reports_fd: int | None = None  # 'ready' / 'relayed N' lines to it.
  messages: MessageReader = dataclasses.field(default_factory=MessageReader)
  settings_seen: bool = False
  relay_done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)


def _reserve_port(host: str, port: int) -> socket.socket:
  """A bound, non-listening SO_REUSEPORT socket holding the port for the pool's workers."""
  family = socket.AF_INET6 if ':' in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    raise OSError(f'Cannot bind {host}:{port}: {e.strerror}') from None
  return sock


class WorkerPool:
  """The supervisor of `config.workers` worker processes (see the module docstring)."""

  def __init__(self, config: ServerConfig):
    config.validate()
    self.config = config
    self.workers: dict[int, _Worker] = {}  # The ready ones.
    self._linked: set[_Worker] = set()  # Every worker whose control pipes are open.
    self.request_logger = None
    self._reserved: list[socket.socket] = []
    self._runtime_dir = None
    self._stopping = False
    self._tasks: set[asyncio.Task] = set()
    self._model_config = None  # The last config reloaded through gRPC (a ModelServerConfig).
    self._reload_lock = asyncio.Lock()
    self._reload_ids = itertools.count()
    self.metrics = None
    self.rest_port = self.grpc_port = None

  async def start(self):
    config = self.config
    try:
      rest = _reserve_port(config.rest_host, config.rest_port)
      self._reserved.append(rest)
      grpc_ = _reserve_port(config.grpc_host, config.grpc_port)
      self._reserved.append(grpc_)
      self.rest_port, self.grpc_port = rest.getsockname()[1], grpc_.getsockname()[1]
      self._runtime_dir = tempfile.mkdtemp(prefix='loopline-serve-')
      metrics_dir = os.path.join(self._runtime_dir, 'metrics')
      os.mkdir(metrics_dir)  # Empty: this run's values only. The workers inherit the variable.
      os.environ[metrics_lib.MULTIPROCESS_DIR_VARIABLE] = metrics_dir
      self.metrics = metrics_lib.Metrics(multiprocess=True)
      if config.request_log.directory:
        self.request_logger = RequestLogger(config.request_log,
                                            PrivacyFilter.from_config(config.privacy),
                                            self.metrics)
        await self.request_logger.start()
      await asyncio.gather(*(self._start_worker(index) for index in range(config.workers)))
    except BaseException:
      await self.stop()
      raise

  def _spawn(self, coroutine):
    task = asyncio.get_running_loop().create_task(coroutine)
    self._tasks.add(task)
    task.add_done_callback(self._tasks.discard)

  async def _start_worker(self, index: int):
    worker_config = dataclasses.replace(self.config, rest_port=self.rest_port,
                                        grpc_port=self.grpc_port)
    to_worker_read, to_worker_write = os.pipe()
    from_worker_read, from_worker_write = os.pipe()
    child_fds = (to_worker_read, from_worker_write)
    argv = [sys.executable, '-m', 'serving.workers', '--control-pipes',
            f'{to_worker_read},{from_worker_write}']
    if self.request_logger is not None:
      records_read, records_write = os.pipe()
      reports_read, reports_write = os.pipe()
      child_fds += (records_write, reports_read)
      argv += ['--log-pipes', f'{records_write},{reports_read}']
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=child_fds,
        env=child_environment())
    for fd in child_fds:
      os.close(fd)
    worker = _Worker(index, process)
    worker.control = _ControlPipe(from_worker_read, to_worker_write,
                                  lambda message: self._on_control(worker, message),
                                  lambda: self._unlink(worker))
    self._linked.add(worker)
    loop = asyncio.get_running_loop()
    if self.request_logger is not None:
      worker.records_fd, worker.reports_fd = records_read, reports_write
      os.set_blocking(records_read, False)
      loop.add_reader(records_read, self._relay, worker)
    else:
      worker.relay_done.set()
    # The pool's reloaded config, if any: kept from here on, so this worker gets every reload
    # (this one at start, later ones over its control pipe).
    process.stdin.write(pickle.dumps((worker_config, self._model_config)))
    process.stdin.close()
    try:
      line = await asyncio.wait_for(loop.run_in_executor(None, process.stdout.readline),
                                    WORKER_START_SECONDS)
    except asyncio.TimeoutError:
      line = b''
      process.kill()
    if line != b'ready\n':
      code = await loop.run_in_executor(None, process.wait)
      self._end_relay(worker)
      worker.control.close()
      self._unlink(worker)
      self._mark_dead(process.pid)
      raise RuntimeError(f'Worker {index} did not start (exit code {code}; its error is above)')
    worker.exited = loop.run_in_executor(None, process.wait)
    worker.exited.add_done_callback(lambda _: self._worker_exited(worker))
    self.workers[index] = worker

  # ---- config reloads (HandleReloadConfigRequest) ------------------------------------------------

  def _on_control(self, worker: _Worker, message):
    kind, message_id, *rest = message
    if kind == 'reload':
      self._spawn(self._reload(worker, message_id, rest[0]))
    elif kind == 'applied':
      future = worker.applying.pop(message_id, None)
      if future is not None and not future.done():
        future.set_result(tuple(rest))

  async def _reload(self, origin: _Worker, request_id: int, config_bytes: bytes):
    """Apply a config a worker received on every worker; answer that worker with the first error
    (in worker order) or OK once all have applied it."""
    async with self._reload_lock:
      self._model_config = model_server_config_pb2.ModelServerConfig.FromString(config_bytes)
      reload_id = next(self._reload_ids)
      loop = asyncio.get_running_loop()
      pending = []
      for worker in sorted(self._linked, key=lambda w: (w.index, w.process.pid)):
        future = worker.applying[reload_id] = loop.create_future()
        if not worker.control.send('apply', reload_id, config_bytes):
          future.set_result((Code.OK, ''))  # Dying: its replacement starts with this config.
        pending.append(future)
      results = await asyncio.gather(*pending)
    code, message = next(((c, m) for c, m in results if c != Code.OK), (Code.OK, ''))
    log.info('Model config reloaded on %d workers: %s', len(results),
             'OK' if code == Code.OK else f'{Code(code).name}: {message}')
    origin.control.send('reloaded', request_id, code, message)

  def _unlink(self, worker: _Worker):
    """Its control pipe closed (it exited): a reload does not wait for it (a replacement starts
    with the pool's config)."""
    self._linked.discard(worker)
    for future in worker.applying.values():
      if not future.done():
        future.set_result((Code.OK, ''))
    worker.applying.clear()

  # ---- the request-log relay ---------------------------------------------------------------------

  def _relay(self, worker: _Worker):
    """Forward a worker's records to the pool's writer; tell it what was taken."""
    try:
      data = os.read(worker.records_fd, 1 << 20)
    except BlockingIOError:
      return
    if not data:
      self._end_relay(worker)
      return
    taken = 0
    for records, payload in worker.messages.feed_counted(data):
      if not worker.settings_seen:  # Its settings: the pool's writer has the same.
        worker.settings_seen = True
        self._tell(worker, b'ready 1\n')
        continue
      self.request_logger.forward(payload, records)
      taken += records
    if taken:
      self._tell(worker, b'relayed %d\n' % taken)

  @staticmethod
  def _tell(worker: _Worker, line: bytes):
    try:
      os.write(worker.reports_fd, line)
    except OSError:
      pass  # It died; its end of the relay is being closed.

  def _end_relay(self, worker: _Worker):
    """The worker closed its records pipe (it stopped, or died: then what it was sending is
    lost, and counted)."""
    if worker.records_fd is not None:
      asyncio.get_running_loop().remove_reader(worker.records_fd)
      lost = worker.messages.pending_records()
      if lost:
        self.metrics.log_dropped('worker_exited').inc(lost)
      os.close(worker.records_fd)
      os.close(worker.reports_fd)
      worker.records_fd = worker.reports_fd = None
    worker.relay_done.set()

  # ---- exits -------------------------------------------------------------------------------------

  @staticmethod
  def _mark_dead(pid: int):
    """prometheus_client's bookkeeping for an exited process of the pool (its live gauges)."""
    from prometheus_client import multiprocess  # pylint: disable=import-outside-toplevel
    multiprocess.mark_process_dead(pid)

  def _worker_exited(self, worker: _Worker):
    self._mark_dead(worker.process.pid)
    if self._stopping:
      return
    log.error('Worker %d (pid %d) exited with code %s; starting a replacement', worker.index,
              worker.process.pid, worker.process.returncode)
    self._spawn(self._replace(worker.index))

  async def _replace(self, index: int):
    while not self._stopping:
      try:
        await self._start_worker(index)
        log.info('Worker %d replaced (pid %d)', index, self.workers[index].process.pid)
        return
      except RuntimeError as e:
        log.error('%s; retrying in %g s', e, RESTART_DELAY_SECONDS)
        await asyncio.sleep(RESTART_DELAY_SECONDS)

  async def stop(self):
    """Drain every worker, then let the writer finalize the request log."""
    if self._stopping:
      return
    self._stopping = True
    for task in list(self._tasks):
      task.cancel()
    workers = list(self.workers.values())
    for worker in workers:
      if worker.process.poll() is None:
        worker.process.send_signal(signal.SIGTERM)
    for worker in workers:
      if worker.exited is not None:
        code = await worker.exited
        if code != 0:
          log.error('Worker %d exited with code %s while stopping', worker.index, code)
      await worker.relay_done.wait()
    for worker in list(self._linked) + workers:
      worker.control.close()
    if self.request_logger is not None:
      await self.request_logger.close()
    for sock in self._reserved:
      sock.close()
    if self._runtime_dir:
      shutil.rmtree(self._runtime_dir, ignore_errors=True)

  def describe(self) -> str:
    """Where the pool listens (printed at start-up)."""
    pids = ', '.join(str(w.process.pid) for _, w in sorted(self.workers.items()))
    lines = [f'Loopline model server ({self.config.mode}, {len(self.workers)} worker processes: '
             f'{pids})',
             f'  REST: http://{self.config.rest_host}:{self.rest_port}/v1/models/<name>',
             f'  gRPC: {self.config.grpc_host}:{self.grpc_port}']
    if self.request_logger is not None:
      lines.append(f'  request log: {self.config.request_log.directory} (sampling '
                   f'{self.config.request_log.sampling_rate:g}, one writer process: pid '
                   f'{self.request_logger.writer_pid})')
    return '\n'.join(lines)


def run(config: ServerConfig, announce=print) -> None:
  """Run the pool until SIGTERM or SIGINT, then drain it."""
  run_until_signal(lambda: WorkerPool(config), announce,
                   'Shutting down: every worker answers its in-flight requests, then the request '
                   'log is flushed...')


def _fd_pair(text: str) -> tuple[int, int]:
  read_fd, write_fd = (int(fd) for fd in text.split(','))
  return read_fd, write_fd


def main(argv=None):
  """`python -m serving.workers --control-pipes R,W [--log-pipes W,R]`: one worker (the
  supervisor starts it)."""
  parser = argparse.ArgumentParser(prog='python -m serving.workers')
  parser.add_argument('--control-pipes', required=True)
  parser.add_argument('--log-pipes')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format=f'%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: '
                      '%(message)s')
  pipes = tuple(int(fd) for fd in args.log_pipes.split(',')) if args.log_pipes else None
  worker_main(_fd_pair(args.control_pipes), pipes)


if __name__ == '__main__':
  main()
