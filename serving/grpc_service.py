"""TF Serving's gRPC API on the official servicer classes of `tensorflow-serving-api` (grpc.aio).

PredictionService: Predict, Classify, Regress, MultiInference, GetModelMetadata. ModelService:
GetModelStatus, HandleReloadConfigRequest. Plus grpc.health.v1.
Request ids travel in the `x-request-id` metadata (echoed or generated, sent back in the
trailing metadata with `x-model-version`).

Request bytes that do not parse as the method's request message are answered INTERNAL, naming the
message type, as TF Serving's C++ gRPC server answers them (see `_parse_or_mark`), where grpc's
Python server would answer UNKNOWN ("Unexpected DecodeError").
"""
import functools

import grpc
from google.protobuf import symbol_database
from google.protobuf.message import DecodeError
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from serving import protos
from serving.backend import Target
from serving.config import DEFAULT_SIGNATURE, ServerConfig
from serving.errors import Code, ServingError, invalid_argument
from serving.service import Answer, CallContext, InferenceService, request_id_or_new

PREDICTION_SERVICE = 'tensorflow.serving.PredictionService'
MODEL_SERVICE = 'tensorflow.serving.ModelService'


def _metadata(context) -> dict:
  return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


class _UnparsedRequest:
  """What a servicer method receives for request bytes that are not its request message."""
  __slots__ = ('type_name',)

  def __init__(self, type_name: str):
    self.type_name = type_name


def _parse_or_mark(message_class):
  """The request deserializer: the message, or an `_UnparsedRequest` (never an exception: grpc's
  Python server answers a deserializer's exception UNKNOWN "Unexpected DecodeError").

  TF Serving is a C++ gRPC server. There a request that fails to parse never reaches the service:
  the generated method handler's Deserialize (grpc's RpcMethodHandler, through
  SerializationTraits) returns `Status(StatusCode::INTERNAL, msg->InitializationErrorString())`
  and RunHandler sends that status without calling the method. Source: the grpc that TensorFlow
  2.16 (and TF Serving 2.16) builds with, as installed with TensorFlow here:
  tensorflow/include/external/com_github_grpc_grpc/include/grpcpp/impl/codegen/proto_utils.h
  lines 86-87 (GenericDeserialize), method_handler_impl.h lines 94-108 (Deserialize) and 63-89
  (RunHandler); today's grpc has the same in include/grpcpp/impl/generic_serialize.h
  (GenericDeserialize). So the code is INTERNAL. The C++ text is empty for a proto3 message (no
  required fields to list); ours names the message type, and never quotes the caller's bytes.
  """
  unparsed = _UnparsedRequest(message_class.DESCRIPTOR.full_name)
  parse = message_class.FromString

  def deserialize(data: bytes):
    try:
      return parse(data)
    except DecodeError:  # Malformed wire data, or a string field that is not UTF-8.
      return unparsed

  return deserialize


def _add_servicer(server, servicer, service) -> None:
  """Register `servicer` for `service` (a ServiceDescriptor of tensorflow-serving-api) as the
  generated `add_*Servicer_to_server` does, with `_parse_or_mark` as every request
  deserializer."""
  symbols = symbol_database.Default()
  handlers = {
      method.name: grpc.unary_unary_rpc_method_handler(
          getattr(servicer, method.name),
          request_deserializer=_parse_or_mark(symbols.GetSymbol(method.input_type.full_name)),
          response_serializer=symbols.GetSymbol(method.output_type.full_name).SerializeToString)
      for method in service.methods}
  server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name,
                                                                       handlers),))


def _with_status(method):
  """Turn ServingErrors into the matching gRPC status (never an unexpected UNKNOWN), and answer
  an unparsable request INTERNAL (see `_parse_or_mark`)."""

  @functools.wraps(method)
  async def wrapper(self, request, context):
    if request.__class__ is _UnparsedRequest:
      await context.abort(grpc.StatusCode.INTERNAL,
                          f'Failed to parse the request as a {request.type_name} message')
    try:
      return await method(self, request, context)
    except ServingError as e:
      await context.abort(grpc.StatusCode[e.code.name], e.message)

  return wrapper


def _target(spec) -> Target:
  if not spec.name:
    raise invalid_argument('Missing ModelSpec name')
  choice = spec.WhichOneof('version_choice')
  if choice == 'version':
    return Target(spec.name, version=spec.version.value)
  if choice == 'version_label':
    return Target(spec.name, label=spec.version_label)
  return Target(spec.name)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """tensorflow.serving.PredictionService over an InferenceService."""

  def __init__(self, service: InferenceService, config: ServerConfig):
    self._service = service
    self._sticky_key = config.sticky_header.lower() if config.sticky_header else None

  async def _begin(self, context) -> CallContext:
    metadata = _metadata(context)
    ctx = CallContext('GRPC', request_id_or_new(metadata.get('x-request-id')),
                      metadata.get(self._sticky_key) if self._sticky_key else None)
    context.set_trailing_metadata((('x-request-id', ctx.request_id),))
    return ctx

  @staticmethod
  def _announce(context, ctx: CallContext, answer: Answer):
    """Request id and answering version in the trailing metadata (no extra send operation)."""
    context.set_trailing_metadata((('x-request-id', ctx.request_id),
                                   ('x-model-version', str(answer.version))))

  @_with_status
  async def Predict(self, request, context):
    ctx = await self._begin(context)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE

    def decode(signature):
      del signature  # TensorProtos carry their own dtype and shape.
      return {alias: protos.array_from_tensor(alias, t) for alias, t in request.inputs.items()}

    answer = await self._service.predict(ctx, _target(request.model_spec), signature_name, decode,
                                         list(request.output_filter))
    response = predict_pb2.PredictResponse(
        model_spec=protos.model_spec(answer.model_name, answer.version, signature_name))
    for alias, array in answer.outputs.items():
      response.outputs[alias].CopyFrom(protos.tensor_from_array(array))
    self._announce(context, ctx, answer)
    return response

  # Classify and Regress differ only in the service call and the response (`duplicates` pairs
  # them by shape); TF Serving has two RPCs, and so do we.
  @_with_status
  async def Classify(self, request, context):
    ctx = await self._begin(context)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    answer = await self._service.classify(ctx, _target(request.model_spec), signature_name,
                                          protos.examples_from_input(request.input))
    self._announce(context, ctx, answer)
    return classification_pb2.ClassificationResponse(
        model_spec=protos.model_spec(answer.model_name, answer.version, signature_name),
        result=protos.classification_result(answer.classes, answer.scores))

  @_with_status
  async def Regress(self, request, context):
    ctx = await self._begin(context)
    signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
    answer = await self._service.regress(ctx, _target(request.model_spec), signature_name,
                                         protos.examples_from_input(request.input))
    self._announce(context, ctx, answer)
    return regression_pb2.RegressionResponse(
        model_spec=protos.model_spec(answer.model_name, answer.version, signature_name),
        result=protos.regression_result(answer.values))

  @_with_status
  async def MultiInference(self, request, context):
    """Classify and/or regress one input with several signatures of one model.

    Each task is served (and logged) like the matching Classify / Regress call.
    """
    ctx = await self._begin(context)
    if not request.tasks:
      raise invalid_argument('MultiInferenceRequest has no tasks')
    names = {task.model_spec.name for task in request.tasks}
    if len(names) != 1:
      raise invalid_argument('All ModelSpecs in a MultiInferenceRequest must access the same '
                             'model name')
    signatures = [task.model_spec.signature_name or DEFAULT_SIGNATURE for task in request.tasks]
    if len(set(signatures)) != len(signatures):
      raise invalid_argument('Duplicate evaluation of signature: '
                             f'{[s for s in signatures if signatures.count(s) > 1][0]}')
    examples = protos.examples_from_input(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, signature_name in zip(request.tasks, signatures):
      target = _target(task.model_spec)
      result = response.results.add()
      if protos.inference_kind(task.method_name) == 'classify':
        answer = await self._service.classify(ctx, target, signature_name, examples)
        result.classification_result.CopyFrom(
            protos.classification_result(answer.classes, answer.scores))
      else:
        answer = await self._service.regress(ctx, target, signature_name, examples)
        result.regression_result.CopyFrom(protos.regression_result(answer.values))
      result.model_spec.CopyFrom(
          protos.model_spec(answer.model_name, answer.version, signature_name))
    self._announce(context, ctx, answer)
    return response

  @_with_status
  async def GetModelMetadata(self, request, context):
    if not request.metadata_field:
      raise invalid_argument('GetModelMetadataRequest must specify at least one metadata_field')
    unsupported = [f for f in request.metadata_field if f != 'signature_def']
    if unsupported:
      raise invalid_argument(f'Metadata field {unsupported[0]} is not supported')
    servable = await self._service.backend.resolve(_target(request.model_spec))
    return protos.metadata_response(servable.name, servable.version, servable.signature_defs)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService: status and config reloads."""

  def __init__(self, service: InferenceService, reload_config=None):
    """`reload_config(ModelServerConfig)`: a coroutine applying a new config (default: the
    backend's; in a worker pool, the pool's: every worker applies it)."""
    self._backend = service.backend
    self._reload_config = reload_config or service.backend.reload_config

  @_with_status
  async def GetModelStatus(self, request, context):
    target = _target(request.model_spec)
    version = target.version
    if target.label is not None:
      version = (await self._backend.resolve(target)).version
    return protos.status_response(await self._backend.status(target.name, version))

  @_with_status
  async def HandleReloadConfigRequest(self, request, context):
    if not request.HasField('config'):
      raise invalid_argument('ReloadConfigRequest has no config')
    await self._reload_config(request.config)
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = int(Code.OK)
    return response


class GrpcServer:
  """The grpc.aio server with both services and health checking."""

  def __init__(self, service: InferenceService, config: ServerConfig, reload_config=None):
    self._config = config
    self._server = grpc.aio.server(options=[
        ('grpc.max_receive_message_length', config.max_body_bytes),
        ('grpc.max_send_message_length', -1),
        ('grpc.so_reuseport', int(config.workers > 1)),  # A pool's workers share the port.
    ])
    _add_servicer(self._server, PredictionServicer(service, config),
                  prediction_service_pb2.DESCRIPTOR.services_by_name['PredictionService'])
    _add_servicer(self._server, ModelServicer(service, reload_config),
                  model_service_pb2.DESCRIPTOR.services_by_name['ModelService'])
    self.health = health_async.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)

  async def start(self, host: str, port: int) -> int:
    bound = self._server.add_insecure_port(f'{host}:{port}')
    if bound == 0:
      raise OSError(f'Cannot bind gRPC to {host}:{port}')
    await self._server.start()
    for name in ('', PREDICTION_SERVICE, MODEL_SERVICE):
      await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return bound

  async def stop(self, grace_seconds: float):
    for name in ('', PREDICTION_SERVICE, MODEL_SERVICE):
      await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await self._server.stop(grace_seconds)
