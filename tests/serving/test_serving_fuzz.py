"""Property-based fuzzing of the REST API: every malformed body gets a 4xx JSON error, never a
5xx, a hang or a crash, and the server keeps answering good requests afterwards."""
import base64
import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import serving_test_models as tm

pytestmark = pytest.mark.timeout(240)
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(allow_nan=False), st.text(max_size=20),
                         st.fixed_dictionaries({'b64': st.text(max_size=12)}))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
                           max_leaves=20)
paths = st.sampled_from([
    '/v1/models/m:predict', '/v1/models/m/versions/1:predict', '/v1/models/m/labels/canary:predict',
    '/v1/models/m/labels/nope:predict', '/v1/models/m/versions/99:predict',
    '/v1/models/nope:predict', '/v1/models/cr:classify', '/v1/models/cr/versions/7:regress',
    '/v1/models/m:classify', '/v1/models/m/versions/abc:predict', '/v1/models/..%2F..:predict',
    '/v1/models/m:predict?x=1', '/v1/models//versions/1:predict'])
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({'instances': json_values}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({'inputs': json_values, 'signature_name': st.sampled_from(
        ['serving_default', 'two_inputs', 'nope', ''])}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({'examples': json_values}).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 5000).map(lambda depth: b'{"instances": ' + b'[' * depth + b']' * depth +
                             b'}'),
)


def _check_4xx(response):
  assert 400 <= response.status_code < 500 or response.status_code == 200, (
      response.status_code, response.text)
  assert response.headers['Content-Type'] == 'application/json'
  doc = response.json()
  if response.status_code != 200:
    assert set(doc) == {'error'} and doc['error']


@FUZZ
@given(path=paths, body=bodies)
def test_fuzzed_bodies_get_a_4xx_json_error(shared_server, path, body):
  _check_4xx(requests.post(shared_server.rest_url + path, data=body, timeout=30))


@FUZZ
@given(signature=st.sampled_from(['serving_default', 'two_inputs']),
       instances=st.lists(json_values, min_size=1, max_size=5))
def test_fuzzed_instances_against_real_signatures(shared_server, signature, instances):
  body = {'signature_name': signature, 'instances': instances}
  _check_4xx(requests.post(shared_server.rest_url + '/v1/models/m:predict',
                           data=json.dumps(body), timeout=30))  # json.dumps writes Infinity too.


def test_huge_payloads_are_refused_cleanly(shared_server):
  url = shared_server.rest_url + '/v1/models/m:predict'
  too_big = b'{"instances": ["' + b'a' * (2 << 20) + b'"]}'  # The shared server allows 1 MiB.
  response = requests.post(url, data=too_big, timeout=30)
  assert response.status_code == 413 and 'larger than the limit' in response.json()['error']
  wide = {'instances': [{'b64': base64.b64encode(tm.example(1.0)).decode()}] * 5_000}
  response = requests.post(url, json=wide, timeout=60)  # Under the limit: answered.
  assert response.status_code == 200 and len(response.json()['predictions']) == 5_000
  deep = b'{"instances": ' + b'[' * 200_000 + b']' * 200_000 + b'}'
  _check_4xx(requests.post(url, data=deep, timeout=30))


def test_server_still_answers_after_fuzzing(shared_server):
  body = {'instances': [{'b64': base64.b64encode(tm.example(2.0)).decode()}]}
  response = requests.post(shared_server.rest_url + '/v1/models/m/versions/1:predict', json=body,
                           timeout=30)
  assert response.json() == {'predictions': [[2.0]]}
