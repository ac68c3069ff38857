"""The protocol-neutral request path shared by the REST and gRPC fronts.

For every inference: canary routing of bare model names, resolution of the addressed version,
the backend call, TF Serving's metrics (request_count by status, request_latency on success) and,
when sampled, a request-log record carrying the request id.
"""
import dataclasses
import logging
import random
import time

from serving import metrics as metrics_lib
from serving.backend import Target
from serving.errors import Code, ServingError
from serving.request_log import LogRecord, RequestLogger
from serving.routing import CanaryRouter

log = logging.getLogger('serving.service')
MAX_REQUEST_ID_LENGTH = 128
# New request ids: 128 random bits from a generator seeded once by the OS. Not uuid.uuid4(): its
# os.urandom call is a system call that releases the GIL on every request, and under load
# getting it back behind the batch and log threads cost ~17 us a request (profiled).
_REQUEST_IDS = random.Random()
_API_NAMES = {'REST': {'predict': 'predict', 'classify': 'classify', 'regress': 'regress'},
              'GRPC': {'predict': 'Predict', 'classify': 'Classify', 'regress': 'Regress'}}


def request_id_or_new(given: str | None) -> str:
  """The caller's request id when it is 1-128 printable ASCII characters, else 32 new random hex
  digits (the form of a uuid4 hex)."""
  if given and len(given) <= MAX_REQUEST_ID_LENGTH and given.isascii() and given.isprintable():
    return given
  return '%032x' % _REQUEST_IDS.getrandbits(128)


@dataclasses.dataclass
class CallContext:
  """Per-request facts the fronts collect: where it came in, its id, its routing key."""
  entrypoint: str  # 'REST' or 'GRPC'
  request_id: str
  routing_key: str | None = None
  started: float = dataclasses.field(default_factory=time.perf_counter)


@dataclasses.dataclass
class Answer:
  """Which version answered, and what it answered."""
  model_name: str
  version: int
  signature_name: str
  outputs: dict | None = None  # predict
  classes: object = None  # classify
  scores: object = None
  values: object = None  # regress


class InferenceService:
  """Predict / classify / regress with routing, metrics and request logging."""

  def __init__(self, backend, metrics: metrics_lib.Metrics, router: CanaryRouter,
               request_logger: RequestLogger | None):
    self.backend = backend
    self._metrics = metrics
    self._router = router
    self._logger = request_logger

  def route(self, target: Target, ctx: CallContext) -> Target:
    """A bare model name goes to a label chosen by the canary weights (if configured)."""
    if target.version is not None or target.label is not None or not self._router.routes(
        target.name):
      return target
    label = self._router.choose_label(target.name, self.backend.labels(target.name),
                                      ctx.routing_key)
    if label is None:
      return target
    self._metrics.routed(target.name, label).inc()
    return dataclasses.replace(target, label=label)

  def _count(self, ctx: CallContext, kind: str, model_name: str, code: Code):
    self._metrics.request_count(model_name, code.name).inc()
    if code == Code.OK:
      self._metrics.request_latency(model_name, _API_NAMES[ctx.entrypoint][kind],
                                    ctx.entrypoint).observe(
                                        (time.perf_counter() - ctx.started) * 1e6)

  async def _serve(self, ctx: CallContext, kind: str, target: Target, work):
    try:
      servable = await self.backend.resolve(self.route(target, ctx))
      answer = await work(servable)
    except ServingError as e:
      self._count(ctx, kind, target.name, e.code)
      raise
    except Exception as e:  # pylint: disable=broad-except  # Becomes a 500, never a crash.
      log.exception('Unexpected error serving %s', target)
      self._count(ctx, kind, target.name, Code.INTERNAL)
      raise ServingError(Code.INTERNAL, f'Internal error: {type(e).__name__}') from e
    self._count(ctx, kind, target.name, Code.OK)
    return answer

  def _log(self, ctx: CallContext, kind: str, answer: Answer, **fields):
    if self._logger is not None and self._logger.sampled():
      self._logger.submit(LogRecord(kind, answer.model_name, answer.version,
                                    answer.signature_name, ctx.request_id, time.time(), **fields))

  async def predict(self, ctx: CallContext, target: Target, signature_name: str, decode_inputs,
                    output_filter=()) -> Answer:
    """`decode_inputs(signature)` turns the request payload into {alias: array}."""

    async def work(servable):
      inputs = decode_inputs(servable.signature(signature_name))
      version, outputs = await self.backend.predict(servable, signature_name, inputs,
                                                    output_filter)
      answer = Answer(servable.name, version, signature_name, outputs=outputs)
      self._log(ctx, 'predict', answer, inputs=inputs, output_filter=tuple(output_filter),
                outputs=outputs)
      return answer

    return await self._serve(ctx, 'predict', target, work)

  async def classify(self, ctx: CallContext, target: Target, signature_name: str,
                     examples: list[bytes]) -> Answer:

    async def work(servable):
      version, classes, scores = await self.backend.classify(servable, signature_name, examples)
      answer = Answer(servable.name, version, signature_name, classes=classes, scores=scores)
      self._log(ctx, 'classify', answer, examples=examples, classes=classes, scores=scores)
      return answer

    return await self._serve(ctx, 'classify', target, work)

  async def regress(self, ctx: CallContext, target: Target, signature_name: str,
                    examples: list[bytes]) -> Answer:

    async def work(servable):
      version, values = await self.backend.regress(servable, signature_name, examples)
      answer = Answer(servable.name, version, signature_name, values=values)
      self._log(ctx, 'regress', answer, examples=examples, values=values)
      return answer

    return await self._serve(ctx, 'regress', target, work)
