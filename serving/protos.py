"""Conversions between TF Serving's protos and the server's numpy / tf.Example values."""
import numpy as np
import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import input_pb2
from tensorflow_serving.apis import model_pb2
from tensorflow_serving.apis import regression_pb2

from serving import log_encoding
from serving.errors import invalid_argument

_STATE = get_model_status_pb2.ModelVersionStatus.State
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'
_INFERENCE_KINDS = {CLASSIFY_METHOD: 'classify', REGRESS_METHOD: 'regress'}


def inference_kind(method_name: str) -> str:
  """'classify' or 'regress': what a MultiInference task's `method_name` asks for; anything
  else is INVALID_ARGUMENT, as in TF Serving."""
  kind = _INFERENCE_KINDS.get(method_name)
  if kind is None:
    raise invalid_argument(f'Unsupported signature method_name: {method_name}')
  return kind


def string_array(values: list[bytes]) -> np.ndarray:
  """A 1-D object array of bytes (what a DT_STRING input takes)."""
  array = np.empty(len(values), dtype=object)
  array[:] = values
  return array


def array_from_tensor(alias: str, tensor) -> np.ndarray:
  """A TensorProto as numpy (strings as an object array of bytes); INVALID_ARGUMENT if malformed."""
  shape = [d.size for d in tensor.tensor_shape.dim]
  try:
    if tensor.dtype == types_pb2.DT_STRING and not tensor.tensor_content:
      return string_array(list(tensor.string_val)).reshape(shape)
    return tf.make_ndarray(tensor)
  except Exception as e:  # pylint: disable=broad-except  # Any malformed TensorProto.
    raise invalid_argument(f'Input {alias!r} is not a valid TensorProto: {e}') from None


def tensor_from_array(array: np.ndarray) -> tensor_pb2.TensorProto:
  """numpy -> TensorProto, through the fast wire encoding when the dtype has one."""
  encoded = log_encoding.tensor(log_encoding.pack_array(array))
  if encoded is None:
    return tf.make_tensor_proto(array)
  return tensor_pb2.TensorProto.FromString(encoded)


def model_spec(name: str, version: int | None = None, signature_name: str | None = None,
               label: str | None = None) -> model_pb2.ModelSpec:
  spec = model_pb2.ModelSpec(name=name)
  if version is not None:
    spec.version.value = version
  if label is not None:
    spec.version_label = label
  if signature_name is not None:
    spec.signature_name = signature_name
  return spec


def examples_from_input(request_input: input_pb2.Input) -> list[bytes]:
  """Serialized tf.Examples of a Classify/Regress `Input`, context merged into each example."""
  kind = request_input.WhichOneof('kind')
  if kind == 'example_list':
    examples = request_input.example_list.examples
    context = None
  elif kind == 'example_list_with_context':
    examples = request_input.example_list_with_context.examples
    context = request_input.example_list_with_context.context
  else:
    raise invalid_argument('Input is empty.')
  if not examples:
    raise invalid_argument('Input is empty.')
  if context is None:
    return [e.SerializeToString() for e in examples]
  serialized = []
  for example in examples:
    merged = example_pb2.Example()
    merged.CopyFrom(context)
    for name, feature in example.features.feature.items():
      merged.features.feature[name].CopyFrom(feature)
    serialized.append(merged.SerializeToString())
  return serialized


def example_list_input(examples: list[bytes]) -> input_pb2.Input:
  request_input = input_pb2.Input()
  for serialized in examples:
    example = request_input.example_list.examples.add()
    try:
      example.ParseFromString(serialized)
    except DecodeError:
      example.Clear()
  return request_input


def classification_result(classes: np.ndarray | None,
                          scores: np.ndarray | None) -> classification_pb2.ClassificationResult:
  result = classification_pb2.ClassificationResult()
  rows = (classes if classes is not None else scores).shape[0]
  for i in range(rows):
    classifications = result.classifications.add()
    count = classes.shape[1] if classes is not None else scores.shape[1]
    for j in range(count):
      item = classifications.classes.add()
      if classes is not None:
        value = classes[i, j]
        item.label = value.decode('utf-8', 'replace') if isinstance(value, bytes) else str(value)
      if scores is not None:
        item.score = float(scores[i, j])
  return result


def regression_result(values: np.ndarray) -> regression_pb2.RegressionResult:
  result = regression_pb2.RegressionResult()
  for value in values.reshape(-1):
    result.regressions.add().value = float(value)
  return result


def classes_and_scores(result: classification_pb2.ClassificationResult):
  """numpy (classes, scores) of a ClassificationResult (the gateway's upstream answers)."""
  classes = np.array([[c.label.encode('utf-8') for c in r.classes]
                      for r in result.classifications], dtype=object)
  scores = np.array([[c.score for c in r.classes] for r in result.classifications], np.float32)
  return classes, scores


def status_response(statuses) -> get_model_status_pb2.GetModelStatusResponse:
  response = get_model_status_pb2.GetModelStatusResponse()
  for status in statuses:
    entry = response.model_version_status.add()
    entry.version = status.version
    entry.state = _STATE.Value(status.state)
    entry.status.error_code = int(status.error_code)
    entry.status.error_message = status.error_message
  return response


def metadata_response(name: str, version: int,
                      signature_defs) -> get_model_metadata_pb2.GetModelMetadataResponse:
  response = get_model_metadata_pb2.GetModelMetadataResponse()
  response.model_spec.CopyFrom(model_spec(name, version))
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  for key, signature_def in signature_defs.items():
    signature_map.signature_def[key].CopyFrom(signature_def)
  response.metadata['signature_def'].Pack(signature_map)
  return response


def signature_defs_from_metadata(
    response: get_model_metadata_pb2.GetModelMetadataResponse
) -> dict[str, meta_graph_pb2.SignatureDef]:
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  return dict(signature_map.signature_def)
