"""Assembles backend, request logger, service, REST and gRPC fronts into one server.

`ModelServer` runs inside an asyncio loop (uvloop's: the same API, a fraction of the per-request
cost of the standard loop in the REST hot path); `run(config)` is the blocking entry point of the CLI
(clean shutdown on SIGTERM / SIGINT); `ServerThread` runs a server in a background thread for tests
and the benchmark.
"""
import asyncio
import threading

import uvloop

from serving import metrics as metrics_lib
from serving.backend import EmbeddedBackend, UpstreamBackend
from serving.config import ServerConfig
from serving.grpc_service import GrpcServer
from serving.lifecycle import run_until_signal
from serving.privacy import PrivacyFilter
from serving.request_log import RequestLogger
from serving.rest import RestServer
from serving.routing import CanaryRouter
from serving.service import InferenceService


class ModelServer:
  """One configured server; start() binds both ports, stop() drains and flushes."""

  def __init__(self, config: ServerConfig, metrics: metrics_lib.Metrics | None = None,
               log_relay_pipes: tuple[int, int] | None = None, reload_config=None):
    """`metrics`, `log_relay_pipes` and `reload_config` (HandleReloadConfigRequest's work): given
    to a worker of a pool by `serving.workers`."""
    config.validate()
    self.config = config
    self._reload_config = reload_config
    self.metrics = metrics or metrics_lib.Metrics()
    backend_class = EmbeddedBackend if config.mode == 'embedded' else UpstreamBackend
    self.backend = backend_class(config, self.metrics)
    self.request_logger = None
    if config.request_log.directory:
      self.request_logger = RequestLogger(config.request_log,
                                          PrivacyFilter.from_config(config.privacy), self.metrics,
                                          relay_pipes=log_relay_pipes)
    self.service = InferenceService(self.backend, self.metrics,
                                    CanaryRouter(config.canary_weights, seed=config.routing_seed),
                                    self.request_logger)
    self.rest = None
    self.grpc = None
    self.rest_port = self.grpc_port = None
    self._stopped = False

  async def start(self, model_config=None):
    """Load the models (`model_config`, a ModelServerConfig, instead of the configured ones: a
    worker replacing one after a config reload), then listen."""
    await self.backend.start(model_config)
    if self.request_logger is not None:
      await self.request_logger.start()
    self.rest = RestServer(self.service, self.metrics, self.config)
    self.rest_port = await self.rest.start(self.config.rest_host, self.config.rest_port)
    self.grpc = GrpcServer(self.service, self.config, self._reload_config)
    self.grpc_port = await self.grpc.start(self.config.grpc_host, self.config.grpc_port)

  async def stop(self):
    """Stop listening, answer in-flight requests, then flush and finalize the request log.

    Calling it again does nothing."""
    if self._stopped:
      return
    self._stopped = True
    grace = self.config.shutdown_grace_seconds
    if self.rest is not None:
      await self.rest.stop(grace)
    if self.grpc is not None:
      await self.grpc.stop(grace)
    await self.backend.stop()
    if self.request_logger is not None:
      await self.request_logger.close()

  def describe(self) -> str:
    """Where the server listens and what it serves (printed at start-up)."""
    lines = [f'Loopline model server ({self.config.mode})',
             f'  REST: http://{self.config.rest_host}:{self.rest_port}/v1/models/<name>',
             f'  gRPC: {self.config.grpc_host}:{self.grpc_port}']
    if self.config.mode == 'gateway':
      lines.append(f'  upstream TF Serving gRPC: {self.config.upstream_grpc}')
    for name, versions in sorted(self.backend.available().items()):
      shown = ', '.join(str(v) for v in versions) or 'none yet (polling)'
      lines.append(f'  model {name}: AVAILABLE versions {shown}')
    if self.request_logger is not None:
      lines.append(f'  request log: {self.config.request_log.directory} '
                   f'(sampling {self.config.request_log.sampling_rate:g})')
    return '\n'.join(lines)


def run(config: ServerConfig, announce=print) -> None:
  """Serve until SIGTERM or SIGINT, then shut down cleanly."""
  run_until_signal(lambda: ModelServer(config), announce,
                   'Shutting down: answering in-flight requests, flushing the request log...')


class ServerThread:
  """A ModelServer on its own event loop in a daemon thread: `with ServerThread(cfg) as s:`."""

  def __init__(self, config: ServerConfig):
    self.server = ModelServer(config)
    self._loop = uvloop.new_event_loop()
    self._thread = threading.Thread(target=self._loop.run_forever, name='model-server',
                                    daemon=True)

  def start(self) -> 'ServerThread':
    self._thread.start()
    try:
      asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=120)
    except BaseException:
      self.stop()
      raise
    return self

  def stop(self):
    if self._thread.is_alive():
      asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=120)
      self._loop.call_soon_threadsafe(self._loop.stop)
      self._thread.join(timeout=30)

  def call(self, coroutine, timeout: float = 60):
    """Run a coroutine on the server's loop (e.g. a reload) and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=timeout)

  @property
  def rest_url(self) -> str:
    return f'http://{self.server.config.rest_host}:{self.server.rest_port}'

  @property
  def grpc_target(self) -> str:
    return f'{self.server.config.grpc_host}:{self.server.grpc_port}'

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc):
    self.stop()
