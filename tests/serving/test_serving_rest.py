"""TF Serving's REST API, checked with plain HTTP against the embedded server."""
import base64
import http.client
import json
import socket

import pytest
import requests

import serving_test_models as tm

pytestmark = pytest.mark.timeout(120)


def b64(x: float, y: float = 0.0) -> dict:
  return {'b64': base64.b64encode(tm.example(x, y)).decode()}


def post(server, path, body):
  data = body if isinstance(body, (bytes, str)) else json.dumps(body)
  return requests.post(server.rest_url + path, data=data, timeout=30)


def assert_error(response, status: int, message: str):
  assert response.status_code == status, response.text
  assert response.headers['Content-Type'] == 'application/json'
  assert set(response.json()) == {'error'}
  assert message in response.json()['error'], response.json()['error']


def test_status_json_lists_versions_newest_first(shared_server):
  response = requests.get(shared_server.rest_url + '/v1/models/m', timeout=30)
  assert response.status_code == 200 and response.headers['Content-Type'] == 'application/json'
  assert response.json() == {'model_version_status': [
      {'version': '2', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}},
      {'version': '1', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}},
  ]}
  one = requests.get(shared_server.rest_url + '/v1/models/m/versions/1', timeout=30).json()
  assert [s['version'] for s in one['model_version_status']] == ['1']
  labelled = requests.get(shared_server.rest_url + '/v1/models/m/labels/canary', timeout=30).json()
  assert [s['version'] for s in labelled['model_version_status']] == ['2']


def test_metadata_json_has_the_doubled_signature_def(shared_server):
  doc = requests.get(shared_server.rest_url + '/v1/models/m/versions/1/metadata', timeout=30).json()
  assert doc['model_spec'] == {'name': 'm', 'signature_name': '', 'version': '1'}
  signature = doc['metadata']['signature_def']['signature_def']['serving_default']
  assert signature['method_name'] == 'tensorflow/serving/predict'
  assert signature['inputs']['examples']['dtype'] == 'DT_STRING'
  assert signature['inputs']['examples']['tensor_shape'] == {
      'dim': [{'size': '-1', 'name': ''}], 'unknown_rank': False}
  assert signature['outputs']['probabilities']['dtype'] == 'DT_FLOAT'
  assert signature['defaults'] == {}


def test_predict_row_format_with_b64_examples(shared_server):
  response = post(shared_server, '/v1/models/m/versions/1:predict',
                  {'instances': [b64(1.0, 0.5), b64(0.2)]})
  assert response.status_code == 200, response.text
  assert response.json() == {'predictions': [[1.5], [0.2]]}
  assert response.headers['X-Model-Version'] == '1'


def test_predict_columnar_format_and_other_signature(shared_server):
  response = post(shared_server, '/v1/models/m/labels/stable:predict',
                  {'signature_name': 'two_inputs',
                   'inputs': {'pairs': [[1, 2], [3, 4]], 'offsets': [10, 20]}})
  assert response.status_code == 200, response.text
  assert response.json() == {'outputs': {'sums': [13.0, 27.0],
                                         'labels_bytes': [{'b64': 'MTA='}, {'b64': 'MjA='}]}}


def test_row_format_with_named_inputs(shared_server):
  response = post(shared_server, '/v1/models/m/versions/2:predict',
                  {'signature_name': 'two_inputs',
                   'instances': [{'pairs': [1, 2], 'offsets': 1}]})
  assert response.json() == {'predictions': [{'sums': 4.0, 'labels_bytes': {'b64': 'MQ=='}}]}


def test_labels_versions_and_bare_name_address_the_right_version(shared_server):
  body = {'instances': [b64(1.0)]}
  assert post(shared_server, '/v1/models/m/labels/canary:predict', body).json() == {
      'predictions': [[2.0]]}
  assert post(shared_server, '/v1/models/m/labels/stable:predict', body).json() == {
      'predictions': [[1.0]]}
  latest = post(shared_server, '/v1/models/m:predict', body)
  assert latest.json() == {'predictions': [[2.0]]} and latest.headers['X-Model-Version'] == '2'


def test_routes_are_case_insensitive(shared_server):
  body = {'instances': [b64(1.0)]}
  assert post(shared_server, '/V1/MODELS/m/VERSIONS/1:PREDICT', body).json() == {
      'predictions': [[1.0]]}
  assert requests.get(shared_server.rest_url + '/v1/Models/m/Labels/canary/METADATA',
                      timeout=30).status_code == 200
  assert_error(post(shared_server, '/v1/models/M:predict', body), 404,
               'Servable not found for request: Latest(M)')  # Names are not.


def test_classify_and_regress_on_tf_example_features(shared_server):
  response = post(shared_server, '/v1/models/cr:classify',
                  {'signature_name': 'classify_it', 'examples': [{'x': 0.0}, {'x': 1.0, 'y': -2.0}]})
  assert response.status_code == 200, response.text
  results = response.json()['results']
  assert [[label for label, _ in row] for row in results] == [['no', 'yes'], ['no', 'yes']]
  assert results[0][1][1] == 0.5 and results[1][1][1] == 0.5
  response = post(shared_server, '/v1/models/cr/versions/7:regress',
                  {'signature_name': 'regress_it', 'context': {'y': 1.0},
                   'examples': [{'x': 1.0}, {'x': 2.0, 'y': 0.5}]})
  assert response.json() == {'results': [3.0, 4.5]}


def test_classify_needs_a_classification_signature(shared_server):
  assert_error(post(shared_server, '/v1/models/m:classify', {'examples': [{'x': 1.0}]}), 400,
               'classes')
  assert_error(post(shared_server, '/v1/models/cr:regress', {'examples': [{'x': 1.0}]}), 400,
               'No regression output')


@pytest.mark.parametrize('path, body, status, message', [
    ('/v1/models/nope:predict', {'instances': [1]}, 404,
     'Servable not found for request: Latest(nope)'),
    ('/v1/models/m/versions/9:predict', {'instances': [1]}, 404,
     'Servable not found for request: Specific(m, 9)'),
    ('/v1/models/m/labels/gold:predict', {'instances': [1]}, 400,
     'Unrecognized servable version label: gold'),
    ('/v1/models/m/versions/x:predict', {'instances': [1]}, 400, 'Failed to convert version'),
    ('/v1/models/m:predict', b'{"instances": [', 400, 'JSON Parse error'),
    ('/v1/models/m:predict', {'signature_name': 'nope', 'instances': ['a']}, 400,
     'Serving signature key "nope" not found.'),
    ('/v1/models/m:predict', {'instances': [{'b64': 'not base64!'}]}, 400,
     'Unable to base64 decode'),
    ('/v1/models/m:predict', {'instances': [['a', 'b']]}, 400, 'incompatible with the signature'),
    ('/v1/models/m:predict', {'instances': ['not an example']}, 400, 'parse'),
    ('/v1/models/m:predict', [1, 2], 400, 'must be a JSON object'),
    ('/v1/models/m:explain', {}, 400, 'Malformed request: POST /v1/models/m:explain'),
])
def test_predict_errors_match_tf_serving(shared_server, path, body, status, message):
  assert_error(post(shared_server, path, body), status, message)


def test_get_errors_match_tf_serving(shared_server):
  get = lambda path: requests.get(shared_server.rest_url + path, timeout=30)
  assert_error(get('/v1/models'), 400, 'Missing model name in request.')
  assert_error(get('/v1/foo'), 400, 'Malformed request: GET /v1/foo')
  assert_error(get('/v1/models/nope'), 404, 'Could not find any versions of model nope')
  assert_error(get('/v1/models/m/versions/5'), 404, 'Could not find version 5 of model m')
  assert_error(get('/v1/models/nope/metadata'), 404, 'Servable not found')
  assert_error(get('/elsewhere'), 404, 'Not found')


def test_request_ids_are_echoed_or_generated(shared_server):
  response = requests.post(shared_server.rest_url + '/v1/models/m:predict',
                           json={'instances': [b64(1.0)]}, headers={'X-Request-Id': 'abc-123'},
                           timeout=30)
  assert response.headers['X-Request-Id'] == 'abc-123'
  generated = post(shared_server, '/v1/models/nope:predict', {'instances': [1]})
  assert len(generated.headers['X-Request-Id']) == 32  # Errors carry one too.


def test_body_over_the_limit_answers_413_without_reading_it(shared_server):
  host, port = shared_server.rest_url[len('http://'):].split(':')
  connection = http.client.HTTPConnection(host, int(port), timeout=30)
  connection.putrequest('POST', '/v1/models/m:predict')
  connection.putheader('Content-Length', str(10 * 2**20))
  connection.endheaders()
  response = connection.getresponse()
  assert response.status == 413
  assert 'larger than the limit' in json.loads(response.read())['error']


def test_chunked_bodies_keep_alive_and_garbage_requests(shared_server):
  body = json.dumps({'instances': [b64(1.0)]}).encode()
  response = requests.post(shared_server.rest_url + '/v1/models/m/versions/1:predict',
                           data=iter([body[:10], body[10:]]), timeout=30)  # chunked
  assert response.json() == {'predictions': [[1.0]]}
  with requests.Session() as session:  # Several requests on one keep-alive connection.
    for _ in range(3):
      assert session.get(shared_server.rest_url + '/v1/models/m', timeout=30).status_code == 200
  host, port = shared_server.rest_url[len('http://'):].split(':')
  with socket.create_connection((host, int(port)), timeout=30) as raw:
    raw.sendall(b'GARBAGE\r\n\r\n')
    assert raw.recv(1000).startswith(b'HTTP/1.1 400')


def test_prometheus_metrics_with_tf_serving_names(shared_server):
  post(shared_server, '/v1/models/m:predict', {'instances': [b64(1.0)]})
  post(shared_server, '/v1/models/m/versions/9:predict', {'instances': [b64(1.0)]})
  response = requests.get(shared_server.rest_url + '/monitoring/prometheus/metrics', timeout=30)
  assert response.status_code == 200 and response.headers['Content-Type'].startswith('text/plain')
  text = response.text
  assert ':tensorflow:serving:request_count{model_name="m",status="OK"}' in text
  assert ':tensorflow:serving:request_count{model_name="m",status="NOT_FOUND"}' in text
  assert ('_bucket{API="predict",entrypoint="REST",le="+Inf",model_name="m"}') in text
  assert 'loopline_serving_batch_size_bucket' in text
  assert 'loopline_serving_batch_queue_depth' in text
