"""Where inferences happen: in-process SavedModels (embedded) or a real TF Serving (gateway).

Both backends offer the same async interface to `serving.service`:
`resolve(target) -> handle` (a loaded or remote version with `.name`, `.version`,
`.signatures` and `.signature(name)`), `predict`, `classify`, `regress`, `status`,
`reload_config`, `labels`, `available`. Inference methods return the version that answered first.
"""
import asyncio
import concurrent.futures
import dataclasses
import os
import time

import grpc
import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from serving import metrics as metrics_lib
from serving import protos
from serving.batching import DynamicBatcher
from serving.config import ConfigError, ServerConfig, load_model_config_file, models_from_proto
from serving.errors import Code, ServingError, failed_precondition, invalid_argument
from serving.manager import ModelManager, VersionStatus
from serving.servable import Servable, Signature

RELEASE_WAIT_SECONDS = 0.1  # How often a release waiting on the event loop checks for a stop.


@dataclasses.dataclass(frozen=True)
class Target:
  """What a request addresses: a model, optionally one version or one label."""
  name: str
  version: int | None = None
  label: str | None = None


def _check_output_filter(signature: Signature, output_filter):
  unknown = [a for a in output_filter if a not in signature.outputs]
  if unknown:
    raise invalid_argument(f'output tensor alias not found in signature: {unknown[0]} Outputs '
                           f'expected to be in the set {{{",".join(sorted(signature.outputs))}}}.')


def _two_dimensional(array: np.ndarray, rows: int, what: str) -> np.ndarray:
  if array.size % max(rows, 1) or array.shape[:1] != (rows,):
    raise invalid_argument(f'Expected {what} tensor of shape [batch_size, ...] with batch_size '
                           f'{rows}, got {list(array.shape)}')
  return array.reshape(rows, -1)


class EmbeddedBackend:
  """Loads SavedModels from disk, batches concurrent requests, runs them in worker threads."""

  def __init__(self, config: ServerConfig, metrics: metrics_lib.Metrics):
    self._config = config
    self._metrics = metrics
    self.manager = ModelManager(Servable, config.file_system_poll_wait_seconds, self._release)
    threads = config.batching.num_batch_threads if config.batching.enabled else 4
    self._executor = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix='model')
    self._batchers: dict[tuple, tuple[object, DynamicBatcher]] = {}
    self._loop = None
    self._stopping = False

  async def start(self, model_config=None):
    """Load the configured models, or those of `model_config` (a ModelServerConfig), waiting for
    them; then keep polling in the background."""
    models = (self._config.initial_models() if model_config is None else
              self.models_of(model_config))
    self._loop = asyncio.get_running_loop()
    await self._loop.run_in_executor(None, self.manager.apply_config, models)
    if self._config.model_config_file and self._config.model_config_file_poll_wait_seconds > 0:
      self.manager.watch_config_file(self._config.model_config_file,
                                     self._config.model_config_file_poll_wait_seconds,
                                     self._config.model_root)
    self.manager.start()

  async def stop(self):
    self._stopping = True  # A release waiting for the loop gives up: the loop waits for it here.
    self.manager.stop()
    await asyncio.gather(*(b.close() for _, b in self._batchers.values()))
    self._executor.shutdown(wait=True)

  async def resolve(self, target: Target):
    return self.manager.resolve(target.name, target.version, target.label)

  def _release(self, servable):
    """The manager unloads `servable` (in its thread): close and forget its batchers on the event
    loop, and wait for that, so the manager's reference is the last one."""
    done = asyncio.run_coroutine_threadsafe(self._close_batchers(servable), self._loop)
    while not self._stopping:
      try:
        done.result(timeout=RELEASE_WAIT_SECONDS)
        return
      except concurrent.futures.TimeoutError:
        continue

  async def _close_batchers(self, servable):
    stale = [key for key, (owner, _) in self._batchers.items() if owner is servable]
    await asyncio.gather(*(self._batchers.pop(key)[1].close() for key in stale))

  def _batcher(self, servable, signature: Signature) -> DynamicBatcher:
    key = (servable.name, servable.version, signature.name)
    entry = self._batchers.get(key)
    if entry is None or entry[0] is not servable:
      for stale_key, (stale, batcher) in list(self._batchers.items()):
        if not self.manager.is_current(stale):
          del self._batchers[stale_key]
          asyncio.get_running_loop().create_task(batcher.close())
      entry = (servable, DynamicBatcher(signature.run, self._config.batching, self._executor,
                                        self._metrics, signature.timer))
      self._batchers[key] = entry
    return entry[1]

  async def _run(self, servable, signature: Signature, inputs: dict) -> dict:
    if self._config.batching.enabled and signature.batchable:
      return await self._batcher(servable, signature).submit(inputs)
    self._metrics.batch_size().observe(next(iter(inputs.values())).shape[0])
    return await asyncio.get_running_loop().run_in_executor(self._executor, signature.run, inputs)

  async def predict(self, servable, signature_name: str, inputs: dict, output_filter=()) -> dict:
    signature = servable.signature(signature_name)
    _check_output_filter(signature, output_filter)
    outputs = await self._run(servable, signature, signature.validate(inputs))
    return servable.version, {a: outputs[a] for a in output_filter} if output_filter else outputs

  async def classify(self, servable, signature_name: str, examples: list[bytes]):
    signature, alias = servable.example_signature(signature_name, 'classify')
    outputs = await self._run(servable, signature, {alias: protos.string_array(examples)})
    classes, scores = outputs.get('classes'), outputs.get('scores')
    rows = len(examples)
    if classes is not None:
      classes = _two_dimensional(classes, rows, 'classes')
    if scores is not None:
      scores = _two_dimensional(scores, rows, 'scores')
    if classes is not None and scores is not None and classes.shape != scores.shape:
      raise invalid_argument(f'Tensors class and score should match in shape: '
                             f'{list(classes.shape)} vs {list(scores.shape)}')
    return servable.version, classes, scores

  async def regress(self, servable, signature_name: str, examples: list[bytes]) -> np.ndarray:
    signature, alias = servable.example_signature(signature_name, 'regress')
    outputs = await self._run(servable, signature, {alias: protos.string_array(examples)})
    values = outputs['outputs']
    if values.size != len(examples):
      raise invalid_argument('Expected output Tensor shape to be either [batch_size] or '
                             f'[batch_size, 1] but got {list(values.shape)}')
    return servable.version, values.reshape(-1)

  async def status(self, name: str, version: int | None) -> list[VersionStatus]:
    return self.manager.status(name, version)

  def models_of(self, config) -> list:
    """The validated models of a ModelServerConfig; INVALID_ARGUMENT naming what is wrong."""
    try:
      return models_from_proto(config, self._config.model_root)
    except ConfigError as e:
      raise invalid_argument(str(e)) from None

  async def reload_config(self, config) -> None:
    models = self.models_of(config)
    await asyncio.get_running_loop().run_in_executor(None, self.manager.apply_config, models)

  def labels(self, name: str) -> set[str] | None:
    return set(self.manager.labels(name))

  def available(self) -> dict[str, list[int]]:
    return self.manager.available()


class RemoteServable:
  """A version served by the upstream TF Serving, described by its metadata."""

  def __init__(self, target: Target, version: int, signature_defs: dict):
    self.name = target.name
    self.target = target  # Requests go to the target (label / latest), not a cached version.
    self.version = version
    self.signature_defs = signature_defs
    self.signatures = {k: Signature(k, d, None) for k, d in signature_defs.items()}

  def signature(self, name: str) -> Signature:
    if name not in self.signatures:
      raise failed_precondition(f'Serving signature key "{name}" not found.')
    return self.signatures[name]


def _upstream_error(error: grpc.RpcError) -> ServingError:
  """The upstream's status, passed through (an unreachable upstream reads as such)."""
  code = error.code()
  details = error.details() or code.name
  if code == grpc.StatusCode.UNAVAILABLE:
    details = f'Upstream TF Serving unavailable: {details}'
  return ServingError(Code[code.name], details)


class UpstreamBackend:
  """Forwards everything to a real TensorFlow Serving over gRPC (gateway mode)."""

  METADATA_CACHE_SECONDS = 5.0

  def __init__(self, config: ServerConfig, metrics: metrics_lib.Metrics):
    self._config = config
    self._metadata_cache: dict[Target, tuple[float, RemoteServable]] = {}
    self._channel = None
    self._timeout = 30.0
    self._labels_cache = None  # (config file mtime, {model: labels})

  async def start(self, model_config=None):
    del model_config  # The upstream TF Serving loads the models.
    options = [('grpc.max_send_message_length', self._config.max_body_bytes),
               ('grpc.max_receive_message_length', -1)]
    self._channel = grpc.aio.insecure_channel(self._config.upstream_grpc, options=options)
    self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

  async def stop(self):
    if self._channel is not None:
      await self._channel.close()

  async def _call(self, method, request):
    try:
      return await method(request, timeout=self._timeout)
    except grpc.RpcError as e:
      raise _upstream_error(e) from None

  async def resolve(self, target: Target) -> RemoteServable:
    cached = self._metadata_cache.get(target)
    if cached is not None and time.monotonic() - cached[0] < self.METADATA_CACHE_SECONDS:
      return cached[1]
    request = get_model_metadata_pb2.GetModelMetadataRequest(
        model_spec=protos.model_spec(target.name, target.version, label=target.label),
        metadata_field=['signature_def'])
    response = await self._call(self._predictions.GetModelMetadata, request)
    servable = RemoteServable(target, response.model_spec.version.value,
                              protos.signature_defs_from_metadata(response))
    self._metadata_cache[target] = (time.monotonic(), servable)
    return servable

  @staticmethod
  def _spec(servable: RemoteServable, signature_name: str):
    target = servable.target
    return protos.model_spec(target.name, target.version, signature_name, target.label)

  async def predict(self, servable, signature_name: str, inputs: dict, output_filter=()):
    request = predict_pb2.PredictRequest(model_spec=self._spec(servable, signature_name),
                                         output_filter=list(output_filter))
    for alias, array in inputs.items():
      request.inputs[alias].CopyFrom(protos.tensor_from_array(array))
    response = await self._call(self._predictions.Predict, request)
    return response.model_spec.version.value, {
        alias: protos.array_from_tensor(alias, t) for alias, t in response.outputs.items()}

  async def classify(self, servable, signature_name: str, examples: list[bytes]):
    request = classification_pb2.ClassificationRequest(
        model_spec=self._spec(servable, signature_name), input=protos.example_list_input(examples))
    response = await self._call(self._predictions.Classify, request)
    return (response.model_spec.version.value,) + protos.classes_and_scores(response.result)

  async def regress(self, servable, signature_name: str, examples: list[bytes]):
    request = regression_pb2.RegressionRequest(
        model_spec=self._spec(servable, signature_name), input=protos.example_list_input(examples))
    response = await self._call(self._predictions.Regress, request)
    return response.model_spec.version.value, np.array(
        [r.value for r in response.result.regressions], np.float32)

  async def status(self, name: str, version: int | None) -> list[VersionStatus]:
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=protos.model_spec(name,
                                                                                      version))
    response = await self._call(self._models.GetModelStatus, request)
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    return [VersionStatus(s.version, state_name(s.state), Code(s.status.error_code),
                          s.status.error_message) for s in response.model_version_status]

  async def reload_config(self, config) -> None:
    request = model_management_pb2.ReloadConfigRequest(config=config)
    response = await self._call(self._models.HandleReloadConfigRequest, request)
    if response.status.error_code:
      raise ServingError(Code(response.status.error_code), response.status.error_message)
    self._metadata_cache.clear()

  def labels(self, name: str) -> set[str] | None:
    """Labels from the shared models.config when the gateway was given it (else: unknown)."""
    path = self._config.model_config_file
    if not path:
      return None
    try:
      mtime = os.stat(path).st_mtime_ns
      if self._labels_cache is None or self._labels_cache[0] != mtime:
        models = load_model_config_file(path)
        self._labels_cache = (mtime, {m.name: {label for label, _ in m.labels} for m in models})
    except (OSError, ConfigError):
      return None
    return self._labels_cache[1].get(name, set())

  def available(self) -> dict[str, list[int]]:
    return {}
