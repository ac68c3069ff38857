"""Gateway mode: our front (logging, canary, request ids) in front of a TF-Serving-compatible
upstream. Real TF Serving cannot run here, so the upstream is our embedded server, which speaks the
same gRPC API."""
import base64

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from conftest import SHARED_CONFIG
from serving.config import RequestLogConfig, ServerConfig
from serving.request_log import request_id_of
from serving.server import ServerThread
from test_serving_request_log import read_logs
import serving_test_models as tm

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope='module')
def gateway(shared_server, shared_models_dir, tmp_path_factory):
  log_dir = tmp_path_factory.mktemp('gateway_logs')
  config_file = log_dir.parent / 'gateway-models.config'
  config_file.write_text(SHARED_CONFIG.format(m=shared_models_dir / 'm',
                                              cr=shared_models_dir / 'cr'))
  config = ServerConfig(mode='gateway', upstream_grpc=shared_server.grpc_target,
                        model_config_file=str(config_file), rest_port=0, grpc_port=0,
                        canary_weights={'m': {'stable': 50, 'canary': 50}},
                        sticky_header='X-Routing-Key',
                        request_log=RequestLogConfig(directory=str(log_dir)))
  server = ServerThread(config).start()
  yield server, log_dir
  server.stop()


def b64(x):
  return {'b64': base64.b64encode(tm.example(x)).decode()}


def test_rest_through_the_gateway(gateway):
  server, _ = gateway
  response = requests.post(server.rest_url + '/v1/models/m/versions/1:predict',
                           json={'instances': [b64(2.0)]}, headers={'X-Request-Id': 'gw-1'},
                           timeout=30)
  assert response.json() == {'predictions': [[2.0]]}
  assert response.headers['X-Request-Id'] == 'gw-1' and response.headers['X-Model-Version'] == '1'
  status = requests.get(server.rest_url + '/v1/models/m', timeout=30).json()
  assert [s['version'] for s in status['model_version_status']] == ['2', '1']
  metadata = requests.get(server.rest_url + '/v1/models/m/labels/canary/metadata',
                          timeout=30).json()
  assert metadata['model_spec']['version'] == '2'
  classify = requests.post(server.rest_url + '/v1/models/cr:classify',
                           json={'signature_name': 'classify_it', 'examples': [{'x': 0.0}]},
                           timeout=30)
  assert classify.json() == {'results': [[['no', 0.5], ['yes', 0.5]]]}


def test_upstream_errors_pass_through(gateway):
  server, _ = gateway
  response = requests.post(server.rest_url + '/v1/models/nope:predict',
                           json={'instances': [b64(1.0)]}, timeout=30)
  assert response.status_code == 404
  assert response.json() == {'error': 'Servable not found for request: Latest(nope)'}
  response = requests.post(server.rest_url + '/v1/models/m/labels/gold:predict',
                           json={'instances': [b64(1.0)]}, timeout=30)
  assert response.status_code == 400 and 'Unrecognized servable version label' in response.text


def test_canary_is_sticky_and_logged_through_the_gateway(gateway):
  server, log_dir = gateway
  seen = {}
  with requests.Session() as session:
    for i in range(30):
      response = session.post(server.rest_url + '/v1/models/m:predict',
                              json={'instances': [b64(1.0)]},
                              headers={'X-Routing-Key': f'user-{i % 6}',
                                       'X-Request-Id': f'canary-{i}'}, timeout=30)
      seen.setdefault(i % 6, set()).add(response.headers['X-Model-Version'])
  assert all(len(v) == 1 for v in seen.values())
  assert set().union(*seen.values()) == {'1', '2'}
  server.call(server.server.stop())  # Finalize the gateway's log; stopping twice is harmless.
  logged = {request_id_of(l): l.log_metadata.model_spec.version.value for l in read_logs(log_dir)}
  assert logged['gw-1'] == 1
  assert {logged[f'canary-{i}'] for i in range(30)} == {1, 2}


def test_grpc_and_tfx_client_through_a_gateway(shared_server):
  config = ServerConfig(mode='gateway', upstream_grpc=shared_server.grpc_target, rest_port=0,
                        grpc_port=0)
  with ServerThread(config) as server, grpc.insecure_channel(server.grpc_target) as channel:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'm'
    request.model_spec.version_label = 'stable'
    request.inputs['examples'].CopyFrom(tf.make_tensor_proto([tm.example(4.0)]))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request,
                                                                                  timeout=30)
    assert tf.make_ndarray(response.outputs['probabilities']).tolist() == [[4.0]]
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        get_model_status_pb2.GetModelStatusRequest(model_spec={'name': 'm'}), timeout=30)
    assert [s.version for s in status.model_version_status] == [2, 1]
    from tfx.components.infra_validator import types
    from tfx.components.infra_validator.model_server_clients import tensorflow_serving_client
    client = tensorflow_serving_client.TensorFlowServingClient(server.grpc_target, 'm')
    assert client._GetServingStatus() == types.ModelServingStatus.READY  # pylint: disable=protected-access


def test_unreachable_upstream_is_503(tmp_path):
  import portpicker
  config = ServerConfig(mode='gateway', upstream_grpc=f'127.0.0.1:{portpicker.pick_unused_port()}',
                        rest_port=0, grpc_port=0)
  with ServerThread(config) as server:
    response = requests.post(server.rest_url + '/v1/models/m:predict',
                             json={'instances': [b64(1.0)]}, timeout=60)
  assert response.status_code == 503 and 'Upstream TF Serving unavailable' in response.text


def test_gateway_follows_a_label_move_at_once(built_models, tmp_path):
  from conftest import make_config, push
  from serving.config import parse_model_config_text
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  push(built_models, 'w2', base, 2)

  def labelled(version):
    return parse_model_config_text(
        f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_version_policy {{ '
        f'specific {{ versions: 1 versions: 2 }} }} version_labels {{ key: "stable" '
        f'value: {version} }} }} }}')

  with ServerThread(make_config(base, model_config=labelled(1))) as upstream:
    config = ServerConfig(mode='gateway', upstream_grpc=upstream.grpc_target, rest_port=0,
                          grpc_port=0)
    with ServerThread(config) as gateway_server, requests.Session() as session:
      url = gateway_server.rest_url + '/v1/models/m/labels/stable:predict'
      first = session.post(url, json={'instances': [b64(1.0)]}, timeout=30)
      assert first.headers['X-Model-Version'] == '1'
      upstream.call(upstream.server.backend.reload_config(labelled(2)))
      moved = session.post(url, json={'instances': [b64(1.0)]}, timeout=30)
      assert moved.headers['X-Model-Version'] == '2' and moved.json() == {'predictions': [[2.0]]}
