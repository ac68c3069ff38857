"""TF Serving's gRPC API through the official tensorflow-serving-api stubs and TFX's own client."""
import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2
from grpc_health.v1 import health_pb2_grpc
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

import serving_test_models as tm

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope='module')
def channel(shared_server):
  with grpc.insecure_channel(shared_server.grpc_target) as channel:
    yield channel


@pytest.fixture(scope='module')
def predictions(channel):
  return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope='module')
def models(channel):
  return model_service_pb2_grpc.ModelServiceStub(channel)


def predict_request(name='m', version=None, label=None, signature='', xs=(1.0,)):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = name
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  request.model_spec.signature_name = signature
  request.inputs['examples'].CopyFrom(tf.make_tensor_proto([tm.example(x) for x in xs]))
  return request


def expect_error(call, request, code: grpc.StatusCode, message: str):
  with pytest.raises(grpc.RpcError) as info:
    call(request, timeout=30)
  assert info.value.code() == code, info.value.details()
  assert message in info.value.details()


def test_predict_by_version_label_and_latest(predictions):
  response, call = predictions.Predict.with_call(predict_request(version=1, xs=(1.0, 3.0)),
                                                 timeout=30)
  assert tf.make_ndarray(response.outputs['probabilities']).tolist() == [[1.0], [3.0]]
  assert response.model_spec.name == 'm' and response.model_spec.version.value == 1
  assert response.model_spec.signature_name == 'serving_default'
  assert dict(call.trailing_metadata())['x-model-version'] == '1'
  canary = predictions.Predict(predict_request(label='canary'), timeout=30)
  assert canary.model_spec.version.value == 2
  assert predictions.Predict(predict_request(), timeout=30).model_spec.version.value == 2


def test_predict_output_filter_and_request_id(predictions):
  request = predict_pb2.PredictRequest()
  request.model_spec.name, request.model_spec.signature_name = 'm', 'two_inputs'
  request.inputs['pairs'].CopyFrom(tf.make_tensor_proto(np.array([[1, 2]], np.float32)))
  request.inputs['offsets'].CopyFrom(tf.make_tensor_proto(np.array([5], np.int64)))
  request.output_filter.append('sums')
  response, call = predictions.Predict.with_call(request, timeout=30,
                                                 metadata=[('x-request-id', 'grpc-req-1')])
  assert list(response.outputs) == ['sums']
  assert tf.make_ndarray(response.outputs['sums']).tolist() == [8.0]
  assert dict(call.trailing_metadata())['x-request-id'] == 'grpc-req-1'


def test_predict_status_codes(predictions):
  expect_error(predictions.Predict, predict_request(name='nope'), grpc.StatusCode.NOT_FOUND,
               'Servable not found for request: Latest(nope)')
  expect_error(predictions.Predict, predict_request(version=5), grpc.StatusCode.NOT_FOUND,
               'Specific(m, 5)')
  expect_error(predictions.Predict, predict_request(label='gold'),
               grpc.StatusCode.INVALID_ARGUMENT, 'Unrecognized servable version label: gold')
  expect_error(predictions.Predict, predict_request(signature='nope'),
               grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
  expect_error(predictions.Predict, predict_request(name=''), grpc.StatusCode.INVALID_ARGUMENT,
               'Missing ModelSpec')
  wrong_type = predict_request()
  wrong_type.inputs['examples'].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
  expect_error(predictions.Predict, wrong_type, grpc.StatusCode.INVALID_ARGUMENT,
               "expects DT_STRING")
  missing = predict_request()
  del missing.inputs['examples']
  expect_error(predictions.Predict, missing, grpc.StatusCode.INVALID_ARGUMENT,
               'Missing but required: {examples}')
  bad_filter = predict_request()
  bad_filter.output_filter.append('nope')
  expect_error(predictions.Predict, bad_filter, grpc.StatusCode.INVALID_ARGUMENT,
               'output tensor alias not found in signature: nope')


def test_unparsable_request_bytes_get_internal_naming_the_message_type(channel, predictions):
  """As TF Serving's C++ gRPC server (grpc's GenericDeserialize answers INTERNAL), never UNKNOWN."""
  for method, message in (('/tensorflow.serving.PredictionService/Predict', 'PredictRequest'),
                          ('/tensorflow.serving.PredictionService/Classify',
                           'ClassificationRequest'),
                          ('/tensorflow.serving.ModelService/HandleReloadConfigRequest',
                           'ReloadConfigRequest')):
    raw = channel.unary_unary(method, request_serializer=lambda b: b,
                              response_deserializer=lambda b: b)
    # Truncated wire data, and a string field (ModelSpec.name) that is not UTF-8.
    for data in (b'\xff\xff\xff', b'\x0a\x03\x0a\x01\xff'):
      with pytest.raises(grpc.RpcError) as info:
        raw(data, timeout=30)
      assert info.value.code() == grpc.StatusCode.INTERNAL, info.value.details()
      assert info.value.details() == (f'Failed to parse the request as a tensorflow.serving.'
                                      f'{message} message')
  assert predictions.Predict(predict_request(version=1), timeout=30).model_spec.version.value == 1


def test_a_string_tensor_that_is_not_utf8_gets_tensorflows_parse_error(predictions):
  """TensorFlow's own message, the caller's bytes escaped (never a Python UTF-8 codec error)."""
  request = predict_request(version=1)
  request.inputs['examples'].CopyFrom(tf.make_tensor_proto([b'\xff\xfe']))
  with pytest.raises(grpc.RpcError) as info:
    predictions.Predict(request, timeout=30)
  assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert info.value.details() == "Could not parse example input, value: '\\xff\\xfe'"


def test_classify_and_regress(predictions):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name, request.model_spec.signature_name = 'cr', 'classify_it'
  example = request.input.example_list_with_context.examples.add()
  example.features.feature['x'].float_list.value.append(0.0)
  request.input.example_list_with_context.context.features.feature['y'].float_list.value.append(
      0.0)
  response = predictions.Classify(request, timeout=30)
  classes = response.result.classifications[0].classes
  assert [(c.label, c.score) for c in classes] == [('no', 0.5), ('yes', 0.5)]
  assert response.model_spec.version.value == 7
  regress = regression_pb2.RegressionRequest()
  regress.model_spec.name, regress.model_spec.signature_name = 'cr', 'regress_it'
  regress.input.example_list.examples.add().features.feature['x'].float_list.value.append(2.0)
  assert predictions.Regress(regress, timeout=30).result.regressions[0].value == 4.0
  empty = regression_pb2.RegressionRequest()
  empty.model_spec.name = 'cr'
  expect_error(predictions.Regress, empty, grpc.StatusCode.INVALID_ARGUMENT, 'Input is empty')


def test_get_model_metadata(predictions):
  request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=['signature_def'])
  request.model_spec.name = 'm'
  request.model_spec.version_label = 'stable'
  response = predictions.GetModelMetadata(request, timeout=30)
  assert response.model_spec.version.value == 1
  signature_map = get_model_metadata_pb2.SignatureDefMap()
  response.metadata['signature_def'].Unpack(signature_map)
  assert set(signature_map.signature_def['serving_default'].inputs) == {'examples'}
  request.metadata_field[:] = ['graph']
  expect_error(predictions.GetModelMetadata, request, grpc.StatusCode.INVALID_ARGUMENT,
               'Metadata field graph is not supported')


def test_get_model_status(models):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = 'm'
  response = models.GetModelStatus(request, timeout=30)
  state = get_model_status_pb2.ModelVersionStatus.State
  assert [(s.version, s.state) for s in response.model_version_status] == [
      (2, state.AVAILABLE), (1, state.AVAILABLE)]
  request.model_spec.name = 'nope'
  expect_error(models.GetModelStatus, request, grpc.StatusCode.NOT_FOUND,
               'Could not find any versions of model nope')


def test_health_service(channel):
  health = health_pb2_grpc.HealthStub(channel)
  for service in ('', 'tensorflow.serving.PredictionService'):
    response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_tfx_infra_validator_client_sees_ready_and_gets_answers(shared_server):
  from tfx.components.infra_validator import types
  from tfx.components.infra_validator.model_server_clients import tensorflow_serving_client
  client = tensorflow_serving_client.TensorFlowServingClient(shared_server.grpc_target, 'm')
  assert client._GetServingStatus() == types.ModelServingStatus.READY  # pylint: disable=protected-access
  client.SendRequests([predict_request(name='m')])  # Raises on any failed request.
  classify_client = tensorflow_serving_client.TensorFlowServingClient(
      shared_server.grpc_target, 'cr')
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name, request.model_spec.signature_name = 'cr', 'classify_it'
  request.input.example_list.examples.add().features.feature['x'].float_list.value.append(1.0)
  classify_client.SendRequests([request])
  missing = tensorflow_serving_client.TensorFlowServingClient(shared_server.grpc_target, 'nope')
  assert missing._GetServingStatus() == types.ModelServingStatus.NOT_READY  # pylint: disable=protected-access


def test_multi_inference(predictions):
  request = inference_pb2.MultiInferenceRequest()
  for signature, method in (('classify_it', 'tensorflow/serving/classify'),
                            ('regress_it', 'tensorflow/serving/regress')):
    task = request.tasks.add(method_name=method)
    task.model_spec.name, task.model_spec.signature_name = 'cr', signature
  request.input.example_list.examples.add().features.feature['x'].float_list.value.append(1.0)
  response = predictions.MultiInference(request, timeout=30)
  classify, regress = response.results
  assert [c.label for c in classify.classification_result.classifications[0].classes] == [
      'no', 'yes']
  assert regress.regression_result.regressions[0].value == 2.0
  assert regress.model_spec.version.value == 7
  request.tasks[1].model_spec.name = 'm'
  expect_error(predictions.MultiInference, request, grpc.StatusCode.INVALID_ARGUMENT,
               'same model name')
  request.tasks[1].model_spec.name = 'cr'
  request.tasks[1].method_name = 'tensorflow/serving/predict'
  expect_error(predictions.MultiInference, request, grpc.StatusCode.INVALID_ARGUMENT,
               'Unsupported signature method_name')
  expect_error(predictions.MultiInference, inference_pb2.MultiInferenceRequest(),
               grpc.StatusCode.INVALID_ARGUMENT, 'no tasks')


def test_reload_config_replaces_models_and_refuses_bad_configs(built_models, tmp_path):
  from conftest import make_config, push
  from serving.config import parse_model_config_text
  from serving.server import ServerThread
  from tensorflow_serving.apis import model_management_pb2
  root = tmp_path / 'serving'
  push(built_models, 'w1', str(root / 'm'), 1)
  push(built_models, 'w2', str(root / 'm'), 2)
  config = make_config(str(root / 'm'), model_root=str(root))

  def reload(text):
    return model_management_pb2.ReloadConfigRequest(config=parse_model_config_text(text))

  with ServerThread(config) as server, grpc.insecure_channel(server.grpc_target) as channel:
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = models.HandleReloadConfigRequest(reload(
        'model_config_list { config { name: "m" base_path: "m" model_version_policy { all {} } '
        'version_labels { key: "stable" value: 1 } } }'), timeout=60)
    assert response.status.error_code == 0
    assert predictions.Predict(predict_request(label='stable'), timeout=30).model_spec.version.value == 1
    expect_error(models.HandleReloadConfigRequest, reload(
        'model_config_list { config { name: "m" base_path: "m" model_version_policy { all {} } '
        'version_labels { key: "stable" value: 9 } } }'), grpc.StatusCode.FAILED_PRECONDITION,
                 'Request to assign label to version 9 of model m')
    for escaping in ('../../etc', '/etc'):
      expect_error(models.HandleReloadConfigRequest, reload(
          f'model_config_list {{ config {{ name: "x" base_path: "{escaping}" }} }}'),
                   grpc.StatusCode.INVALID_ARGUMENT, 'outside the model root')
    expect_error(models.HandleReloadConfigRequest, reload(
        'model_config_list { config { name: "../x" base_path: "m" } }'),
                 grpc.StatusCode.INVALID_ARGUMENT, 'Invalid model name')
    # Refused configs changed nothing: the label still answers.
    assert predictions.Predict(predict_request(label='stable'), timeout=30).model_spec.version.value == 1
