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
- **Metrics.** Every `SNAPSHOT_SECONDS` each process (and each worker at its end) writes its
  counters to `<runtime dir>/metrics-<pid>.pickle`; the worker answering
  `/monitoring/prometheus/metrics` adds the other processes' latest snapshots to its own live
  values (`PooledMetrics`), so the sums are at most that old for the other workers. A dead
  worker's last snapshot stays in the sum, so counters do not go back when it is replaced.
- **Model changes.** Every worker polls the model directories and the `--model-config-file`
  itself. `HandleReloadConfigRequest` is refused (FAILED_PRECONDITION): it would reach one worker.
- **A worker that dies** (`kill -9`, a crash) is noticed by the supervisor, which starts a
  replacement. Connections the dead process had accepted are closed by the kernel: their
  clients see the connection reset or closed (REST) or UNAVAILABLE (gRPC), at once and never a
  hang; no other process can answer on a connection that only the dead process held, so no 503
  is possible there. New connections go to the remaining workers, once the dead process has
  finished exiting: until all its threads are gone (milliseconds for TensorFlow's many), its
  listening sockets are open, and a new connection the kernel hands one of them is reset
  (SO_REUSEPORT's limit; a client retry gets another worker).
- **SIGTERM / SIGINT** to the supervisor: every worker stops accepting, answers its in-flight
  requests and hands its last records over; then the writer finalizes its file; exit 0.
Workers die with the supervisor (a parent-death signal), draining as on SIGTERM.
"""
import argparse
import asyncio
import ctypes
import dataclasses
import glob
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from serving import metrics as metrics_lib
from serving.config import ServerConfig
from serving.lifecycle import run_until_signal
from serving.privacy import PrivacyFilter
from serving.request_log import MessageReader, RequestLogger, child_environment

log = logging.getLogger('serving.workers')
SNAPSHOT_SECONDS = 0.5
RESTART_DELAY_SECONDS = 1.0
WORKER_START_SECONDS = 300.0
_PR_SET_PDEATHSIG = 1


class PooledMetrics(metrics_lib.Metrics):
  """A process's metrics that also writes snapshots for, and renders the sum of, the pool."""

  def __init__(self, directory: str):
    super().__init__()
    self._directory = directory
    self._path = os.path.join(directory, f'metrics-{os.getpid()}.pickle')

  def write_snapshot(self):
    temp = self._path + '.tmp'
    with open(temp, 'wb') as f:
      pickle.dump(self.snapshot(), f, pickle.HIGHEST_PROTOCOL)
    os.replace(temp, self._path)

  def render(self) -> str:
    snapshots = [self.snapshot()]
    for path in glob.glob(os.path.join(self._directory, 'metrics-*.pickle')):
      if path != self._path:
        try:
          with open(path, 'rb') as f:
            snapshots.append(pickle.load(f))
        except (OSError, EOFError, pickle.UnpicklingError):
          continue  # Replaced while read: the next scrape has it.
    return metrics_lib.render_snapshot(metrics_lib.merge(snapshots))


async def _write_snapshots(metrics: PooledMetrics):
  while True:
    metrics.write_snapshot()
    await asyncio.sleep(SNAPSHOT_SECONDS)


# ---- a worker -----------------------------------------------------------------------------------

def worker_main(runtime_dir: str, log_pipes: tuple[int, int] | None):
  """A worker process: config from stdin, `ready` on stdout once serving, serve until SIGTERM."""
  import uvloop  # pylint: disable=import-outside-toplevel
  from serving.server import ModelServer  # pylint: disable=import-outside-toplevel  # TensorFlow.
  # SIGTERM (drain and exit) when the supervisor dies, even by kill -9.
  ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  config = pickle.load(sys.stdin.buffer)  # Fails (end of file) if the supervisor is gone.

  async def serve():
    metrics = PooledMetrics(runtime_dir)
    server = ModelServer(config, metrics, log_pipes)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
      loop.add_signal_handler(signum, stop.set)
    await server.start()
    snapshots = loop.create_task(_write_snapshots(metrics))
    os.write(sys.stdout.fileno(), b'ready\n')
    await stop.wait()
    await server.stop()
    snapshots.cancel()
    metrics.write_snapshot()

  uvloop.run(serve())


# ---- the supervisor -----------------------------------------------------------------------------

@dataclasses.dataclass
class _Worker:
  index: int
  process: subprocess.Popen
  exited: asyncio.Future | None = None
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
    self.workers: dict[int, _Worker] = {}
    self.request_logger = None
    self._reserved: list[socket.socket] = []
    self._runtime_dir = None
    self._stopping = False
    self._tasks: set[asyncio.Task] = set()
    self.metrics = None
    self.rest_port = self.grpc_port = None

  async def start(self):
    config = self.config
    rest = _reserve_port(config.rest_host, config.rest_port)
    self._reserved.append(rest)
    grpc_ = _reserve_port(config.grpc_host, config.grpc_port)
    self._reserved.append(grpc_)
    self.rest_port, self.grpc_port = rest.getsockname()[1], grpc_.getsockname()[1]
    self._runtime_dir = tempfile.mkdtemp(prefix='loopline-serve-')
    self.metrics = PooledMetrics(self._runtime_dir)
    if config.request_log.directory:
      self.request_logger = RequestLogger(config.request_log,
                                          PrivacyFilter.from_config(config.privacy), self.metrics)
      await self.request_logger.start()
    self._spawn(_write_snapshots(self.metrics))
    try:
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
    argv = [sys.executable, '-m', 'serving.workers', '--runtime-dir', self._runtime_dir]
    child_fds = ()
    if self.request_logger is not None:
      records_read, records_write = os.pipe()
      reports_read, reports_write = os.pipe()
      child_fds = (records_write, reports_read)
      argv += ['--log-pipes', f'{records_write},{reports_read}']
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=child_fds,
        env=child_environment())
    for fd in child_fds:
      os.close(fd)
    worker = _Worker(index, process)
    loop = asyncio.get_running_loop()
    if child_fds:
      worker.records_fd, worker.reports_fd = records_read, reports_write
      os.set_blocking(records_read, False)
      loop.add_reader(records_read, self._relay, worker)
    else:
      worker.relay_done.set()
    process.stdin.write(pickle.dumps(worker_config))
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
      raise RuntimeError(f'Worker {index} did not start (exit code {code}; its error is above)')
    worker.exited = loop.run_in_executor(None, process.wait)
    worker.exited.add_done_callback(lambda _: self._worker_exited(worker))
    self.workers[index] = worker

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
        self.metrics.inc(metrics_lib.LOG_DROPPED, lost, reason='worker_exited')
      os.close(worker.records_fd)
      os.close(worker.reports_fd)
      worker.records_fd = worker.reports_fd = None
    worker.relay_done.set()

  def _worker_exited(self, worker: _Worker):
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


def main(argv=None):
  """`python -m serving.workers --runtime-dir D [--log-pipes W,R]`: one worker (the supervisor
  starts it)."""
  parser = argparse.ArgumentParser(prog='python -m serving.workers')
  parser.add_argument('--runtime-dir', required=True)
  parser.add_argument('--log-pipes')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO,
                      format=f'%(asctime)s worker {os.getpid()} %(levelname)s %(name)s: '
                      '%(message)s')
  pipes = tuple(int(fd) for fd in args.log_pipes.split(',')) if args.log_pipes else None
  worker_main(args.runtime_dir, pipes)


if __name__ == '__main__':
  main()
