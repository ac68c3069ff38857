"""Unit tests of the pure logic: versions, config, routing, JSON codec, privacy, log files, metrics."""
import base64
import json
import os
import random

import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import predict_pb2

from serving import config as config_lib
from serving import json_codec
from serving import log_files
from serving import metrics as metrics_lib
from serving import routing
from serving import versions
from serving import warmup
from serving.errors import Code, HTTP_STATUS, ServingError
from serving.json_codec import TensorSpec
from serving.privacy import PrivacyFilter

pytestmark = pytest.mark.timeout(60)


# ---- versions -------------------------------------------------------------------------------

def test_only_integer_directory_names_are_versions():
  assert versions.parse_version('00042') == 42
  for name in ('v1', '.tmp-42', '42.partial', '-1', '', '1e3', str(2**63)):
    assert versions.parse_version(name) is None, name


def test_list_versions_ignores_files_temp_dirs_and_escaping_symlinks(tmp_path):
  base = tmp_path / 'base'
  for name in ('1', '0002', '.tmp-3', 'v4'):
    (base / name).mkdir(parents=True)
  (base / '5').write_text('a file, not a version')
  outside = tmp_path / 'outside' / '6'
  outside.mkdir(parents=True)
  os.symlink(outside, base / '6')
  assert versions.list_versions(str(base)) == {1: str(base / '1'), 2: str(base / '0002')}


def test_missing_base_path_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    versions.list_versions(str(tmp_path / 'nope'))


def test_version_is_complete_only_with_its_graph_file(tmp_path):
  assert not versions.is_complete(str(tmp_path))
  (tmp_path / 'saved_model.pb').write_bytes(b'x')
  assert versions.is_complete(str(tmp_path))


@pytest.mark.parametrize('policy, expected', [
    (versions.VersionPolicy(), {9}),
    (versions.VersionPolicy('latest', 2), {9, 7}),
    (versions.VersionPolicy('all'), {3, 7, 9}),
    (versions.VersionPolicy('specific', versions=(3, 4)), {3}),
])
def test_version_policies(policy, expected):
  assert policy.select({3, 7, 9}) == expected


def test_bad_policies_are_refused():
  with pytest.raises(ValueError, match='at least 1'):
    versions.VersionPolicy('latest', 0)
  with pytest.raises(ValueError, match='no versions'):
    versions.VersionPolicy('specific')


# ---- config ---------------------------------------------------------------------------------

CONFIG_TEXT = """
model_config_list {
  config {
    name: "big_tipper"
    base_path: "big_tipper"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 42 versions: 43 } }
    version_labels { key: "stable" value: 42 }
    version_labels { key: "canary" value: 43 }
  }
  config { name: "other" base_path: "/models/other" model_version_policy { all {} } }
}
"""


def test_models_config_text_is_parsed(tmp_path):
  models = config_lib.models_from_proto(config_lib.parse_model_config_text(CONFIG_TEXT))
  first, second = models
  assert first.name == 'big_tipper'
  assert first.policy == versions.VersionPolicy('specific', versions=(42, 43))
  assert first.label_map == {'stable': 42, 'canary': 43}
  assert second.policy.kind == 'all' and second.base_path == '/models/other'


@pytest.mark.parametrize('text, message', [
    ('model_config_list { config { name: "m" base_path: "/x" bogus: 1 } }', 'not a valid'),
    ('model_config_list { config { name: "../etc" base_path: "/x" } }', 'Invalid model name'),
    ('model_config_list { config { name: "a/b" base_path: "/x" } }', 'Invalid model name'),
    ('model_config_list { config { name: "m" base_path: "" } }', 'base_path is empty'),
    ('model_config_list { config { name: "m" base_path: "/x" } config { name: "m" '
     'base_path: "/y" } }', 'configured twice'),
    ('model_config_list { config { name: "m" base_path: "/x" model_platform: "onnx" } }',
     'not supported'),
    ('model_config_list { config { name: "m" base_path: "/x" logging_config { '
     'sampling_config { sampling_rate: 1 } } } }', 'logging_config is not supported'),
    ('model_config_list { config { name: "m" base_path: "/x" model_version_policy { '
     'specific {} } } }', 'no versions'),
    ('custom_model_config { }', 'Only model_config_list'),
])
def test_bad_model_configs_name_the_problem(text, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.models_from_proto(config_lib.parse_model_config_text(text))


def test_base_paths_cannot_escape_the_model_root(tmp_path):
  root = tmp_path / 'serving'
  root.mkdir()
  assert config_lib.resolve_base_path('m', str(root)) == str(root / 'm')
  for escaping in ('../elsewhere', '/etc', 'm/../../x'):
    with pytest.raises(config_lib.ConfigError, match='outside the model root'):
      config_lib.resolve_base_path(escaping, str(root))
  os.symlink('/tmp', root / 'link')
  with pytest.raises(config_lib.ConfigError, match='outside the model root'):
    config_lib.resolve_base_path('link', str(root))


def test_server_config_validation():
  with pytest.raises(config_lib.ConfigError, match='No models'):
    config_lib.ServerConfig().validate()
  with pytest.raises(config_lib.ConfigError, match='--upstream'):
    config_lib.ServerConfig(mode='gateway').validate()
  bad_rate = config_lib.ServerConfig(model_config=config_lib.single_model_proto('m', '/x'))
  bad_rate.request_log.sampling_rate = 1.5
  with pytest.raises(config_lib.ConfigError, match='sampling rate'):
    bad_rate.validate()
  no_key = config_lib.ServerConfig(model_config=config_lib.single_model_proto('m', '/x'))
  no_key.privacy.hash_features = ('company',)
  with pytest.raises(config_lib.ConfigError, match='secret key'):
    no_key.validate()


# ---- routing --------------------------------------------------------------------------------

def test_weights_are_parsed_and_validated():
  assert routing.parse_weights('stable=90, canary=10') == {'stable': 90.0, 'canary': 10.0}
  for bad in ('stable', 'stable=x', 'stable=-1', 'a=0,b=0', '=3'):
    with pytest.raises(ValueError):
      routing.parse_weights(bad)


def test_canary_split_follows_the_weights():
  router = routing.CanaryRouter({'m': {'stable': 90, 'canary': 10}}, random.Random(7))
  picks = [router.choose_label('m', {'stable', 'canary'}) for _ in range(5000)]
  share = picks.count('canary') / len(picks)
  assert 0.08 < share < 0.12
  assert router.choose_label('other', {'stable'}) is None


def test_sticky_routing_is_deterministic_per_key_and_spreads_keys():
  router = routing.CanaryRouter({'m': {'stable': 50, 'canary': 50}})
  assert len({router.choose_label('m', None, 'user-1') for _ in range(20)}) == 1
  labels = {router.choose_label('m', None, f'user-{i}') for i in range(100)}
  assert labels == {'stable', 'canary'}


def test_a_routing_seed_makes_keyless_and_keyed_routing_reproducible():
  weights = {'m': {'stable': 50, 'canary': 50}}

  def labels(seed, keys):
    router = routing.CanaryRouter(weights, seed=seed)
    return [router.choose_label('m', {'stable', 'canary'}, key) for key in keys]

  keyless, keyed = [None] * 100, [f'{i:06d}' for i in range(100)]
  assert labels(11, keyless) == labels(11, keyless)
  assert labels(11, keyless) != labels(12, keyless)
  assert labels(11, keyed) == labels(11, keyed)
  assert labels(11, keyed) != labels(12, keyed)          # the seed salts the keys' hash
  assert labels(11, keyed) == labels(11, keyed[::-1])[::-1]   # per key, whatever the order
  with pytest.raises(ValueError, match='not both'):
    routing.CanaryRouter(weights, random.Random(1), seed=1)


def test_unassigned_labels_are_skipped():
  router = routing.CanaryRouter({'m': {'stable': 90, 'canary': 10}})
  assert {router.choose_label('m', {'stable'}) for _ in range(200)} == {'stable'}
  assert router.choose_label('m', set()) is None


# ---- JSON codec -----------------------------------------------------------------------------

STRING_INPUT = {'examples': TensorSpec('DT_STRING', (-1,))}
TWO_INPUTS = {'pairs': TensorSpec('DT_FLOAT', (-1, 2)), 'offsets': TensorSpec('DT_INT64', (-1,))}


def _error(callable_, *args) -> ServingError:
  with pytest.raises(ServingError) as info:
    callable_(*args)
  assert info.value.code == Code.INVALID_ARGUMENT
  return info.value


def test_row_format_with_b64_and_plain_strings():
  body = json_codec.predict_inputs(
      {'instances': [{'b64': base64.b64encode(b'\x00\xff').decode()}, 'text']}, STRING_INPUT)
  assert body.row_format and body.signature_name == 'serving_default'
  assert list(body.inputs['examples']) == [b'\x00\xff', b'text']


def test_row_format_with_named_inputs_and_columnar_format():
  rows = json_codec.predict_inputs(
      {'instances': [{'pairs': [1, 2], 'offsets': 3}, {'pairs': [4.5, 5], 'offsets': 6}]},
      TWO_INPUTS).inputs
  assert rows['pairs'].dtype == np.float32 and rows['pairs'].shape == (2, 2)
  assert rows['offsets'].tolist() == [3, 6]
  columns = json_codec.predict_inputs(
      {'inputs': {'pairs': [[1, 2]], 'offsets': [3]}, 'signature_name': 'two_inputs'},
      TWO_INPUTS)
  assert not columns.row_format and columns.signature_name == 'two_inputs'
  assert columns.inputs['offsets'].dtype == np.int64


@pytest.mark.parametrize('doc, message', [
    ({}, "Missing 'inputs' or 'instances' key"),
    ({'instances': [1], 'inputs': [1]}, "Not both"),
    ({'instances': {'a': 1}}, 'list/array'),
    ({'instances': []}, 'empty'),
    ({'instances': [{'b64': '!!!'}]}, 'Unable to base64 decode'),
    ({'instances': [{'b64': 5}]}, 'not formatted correctly for base64'),
    ({'instances': [1.5]}, 'is not of expected type: string'),
    ({'instances': [{'other': 'x'}]}, 'missing'),
    ({'instances': ['a'], 'extra': 1}, 'Unknown key'),
    ({'instances': ['a'], 'signature_name': 3}, 'signature_name'),
])
def test_bad_predict_bodies_are_invalid_argument(doc, message):
  assert message in _error(json_codec.predict_inputs, doc, STRING_INPUT).message


@pytest.mark.parametrize('doc, message', [
    ({'instances': [{'pairs': [1, 2], 'offsets': 1.5}]}, 'expected type: int64'),
    ({'instances': [{'pairs': [1, 2], 'offsets': 2**70}]}, 'out of range'),
    ({'instances': [{'pairs': [1, 'a'], 'offsets': 1}]}, 'expected type: float'),
    ({'instances': [{'pairs': [1, True], 'offsets': 1}]}, 'expected type: float'),
    ({'instances': [{'pairs': [[1], 2], 'offsets': 1}]}, 'rectangular'),
    ({'instances': [{'pairs': [1, 2], 'offsets': 1}, 7]}, 'must be an object'),
    ({'inputs': [1, 2]}, 'keyed by input name'),
])
def test_bad_typed_values_are_invalid_argument(doc, message):
  assert message in _error(json_codec.predict_inputs, doc, TWO_INPUTS).message


def test_json_parse_errors():
  assert _error(json_codec.parse_json, b'{"instances": [').message.startswith('JSON Parse error')
  assert 'UTF-8' in _error(json_codec.parse_json, b'{"a": "\xff"}').message
  assert 'nested' in _error(json_codec.parse_json, b'[' * 100_000 + b']' * 100_000).message
  assert 'maximum rank' in _error(json_codec.to_array, json.loads('[' * 40 + ']' * 40),
                                  TensorSpec('DT_FLOAT'), 'x').message


def test_floats_are_written_shortest_at_float32_precision():
  outputs = {'probabilities': np.array([[0.2], [1e-5], [np.nan]], np.float32)}
  text = json_codec.predict_response(outputs, row_format=True).decode()
  assert text == '{"predictions":[[0.2],[1e-05],[NaN]]}'
  assert json_codec.predict_response({'p': np.array([0.1, 3.0], np.float64)}, False) == (
      b'{"outputs":[0.1,3.0]}')


def test_multi_output_rows_and_bytes_outputs():
  outputs = {'sums': np.array([1.5, 2.0], np.float32),
             'labels_bytes': np.array([b'\x00', b'b'], dtype=object),
             'names': np.array([b'x', b'\xff'], dtype=object)}
  doc = json.loads(json_codec.predict_response(outputs, row_format=True))
  assert doc['predictions'][0] == {'sums': 1.5, 'labels_bytes': {'b64': 'AA=='}, 'names': 'x'}
  assert doc['predictions'][1]['names'] == {'b64': base64.b64encode(b'\xff').decode()}
  columnar = json.loads(json_codec.predict_response(outputs, row_format=False))
  assert columnar['outputs']['sums'] == [1.5, 2.0]


def test_examples_body_types_and_context_merge():
  doc = {'context': {'city': 'chicago', 'x': 9.0},
         'examples': [{'x': 1.5, 'n': 3, 'flag': True, 'tags': ['a', 'b'],
                       'raw': {'b64': base64.b64encode(b'\x01').decode()}}, {'y': [1, 2.5]}]}
  body = json_codec.examples_body(doc)
  first = example_pb2.Example.FromString(body.examples[0]).features.feature
  assert first['x'].float_list.value == [1.5]  # The example wins over the context.
  assert first['n'].int64_list.value == [3] and first['flag'].int64_list.value == [1]
  assert first['tags'].bytes_list.value == [b'a', b'b'] and first['raw'].bytes_list.value == [
      b'\x01']
  assert first['city'].bytes_list.value == [b'chicago']
  second = example_pb2.Example.FromString(body.examples[1]).features.feature
  assert list(second['y'].float_list.value) == [1.0, 2.5] and second['x'].float_list.value == [9.0]


@pytest.mark.parametrize('doc, message', [
    ({}, "Missing 'examples'"),
    ({'examples': []}, 'non-empty list'),
    ({'examples': [1]}, 'must be an object'),
    ({'examples': [{'a': ['x', 1]}]}, 'mixes strings and numbers'),
    ({'examples': [{'a': [[1]]}]}, 'lists must be flat'),
    ({'examples': [{'a': None}]}, 'not a number'),
    ({'examples': [{'a': 1}], 'context': 3}, "'context' must be an object"),
    ({'examples': [{'a': {'b64': '%%%'}}]}, 'Unable to base64 decode'),
])
def test_bad_examples_bodies(doc, message):
  assert message in _error(json_codec.examples_body, doc).message


def test_classify_and_regress_responses():
  classes = np.array([[b'no', b'yes']], dtype=object)
  scores = np.array([[0.25, 0.75]], np.float32)
  assert json.loads(json_codec.classify_response(classes, scores)) == {
      'results': [[['no', 0.25], ['yes', 0.75]]]}
  assert json.loads(json_codec.regress_response(np.array([[0.5], [2.0]], np.float32))) == {
      'results': [0.5, 2.0]}


def test_error_codes_map_to_tf_serving_http_statuses():
  assert HTTP_STATUS[Code.INVALID_ARGUMENT] == 400 and HTTP_STATUS[Code.NOT_FOUND] == 404
  assert HTTP_STATUS[Code.FAILED_PRECONDITION] == 400 and HTTP_STATUS[Code.UNAVAILABLE] == 503
  assert HTTP_STATUS[Code.RESOURCE_EXHAUSTED] == 429 and HTTP_STATUS[Code.CANCELLED] == 499
  assert len(HTTP_STATUS) == len(Code)


# ---- privacy --------------------------------------------------------------------------------

def _example(**features) -> example_pb2.Example:
  example = example_pb2.Example()
  for name, value in features.items():
    if isinstance(value, str):
      example.features.feature[name].bytes_list.value.append(value.encode())
    elif isinstance(value, int):
      example.features.feature[name].int64_list.value.append(value)
    else:
      example.features.feature[name].float_list.value.append(value)
  return example


def test_redaction_removes_and_hashing_replaces_features():
  privacy = PrivacyFilter(redact_features=['company'], hash_features=['taxi_id', 'area'],
                          hash_key=b'k' * 32)
  example = _example(company='Acme', taxi_id='T-17', area=8, fare=12.5)
  privacy.apply(example)
  features = example.features.feature
  assert 'company' not in features and features['fare'].float_list.value == [12.5]
  hashed = features['taxi_id'].bytes_list.value[0]
  assert len(hashed) == 32 and b'T-17' not in hashed
  assert features['area'].bytes_list.value == [privacy.hash_value(8)]
  other_key = PrivacyFilter(hash_features=['taxi_id'], hash_key=b'z' * 32)
  assert other_key.hash_value(b'T-17') != hashed  # Keyed: no key, no dictionary attack.


def test_unparseable_examples_are_not_logged_when_rules_exist():
  assert PrivacyFilter(redact_features=['a']).apply_serialized(b'\xff\xff garbage') == b''
  assert PrivacyFilter().apply_serialized(b'anything') == b'anything'


# ---- log files ------------------------------------------------------------------------------

def test_log_file_names_round_trip():
  final = log_files.final_name(1_700_000_000, 3, 'ab12cd')
  assert final == 'prediction_log-20231114T221320Z-000003-ab12cd.tfrecord'
  assert log_files.is_log_file(final) and not log_files.is_log_file(log_files.temp_name(final))
  assert log_files.final_name_of_temp(log_files.temp_name(final)) == final
  assert log_files.final_name_of_temp('.other.tmp') is None


def test_rotation_rule():
  assert log_files.should_rotate(100, 0, 1, max_bytes=100, max_age_seconds=60)
  assert not log_files.should_rotate(99, 0, 1, max_bytes=100, max_age_seconds=60)
  assert log_files.should_rotate(1, 0, 61, max_bytes=100, max_age_seconds=60)
  assert not log_files.should_rotate(0, 0, 61, max_bytes=100, max_age_seconds=60)


def test_retention_deletes_old_then_oldest_until_size_fits():
  files = [log_files.LogFile(f'prediction_log-2026010{i}T000000Z-00000{i}-aaaaaa.tfrecord', 10,
                             mtime) for i, mtime in enumerate([0, 900, 950, 990])]
  doomed = log_files.files_to_delete(files, now=1000, max_age_seconds=500, max_total_bytes=20)
  assert [f.name for f in doomed] == [files[0].name, files[1].name]


def test_tfrecord_framing_reads_back_and_tolerates_truncation(tmp_path):
  path = tmp_path / 'f.tfrecord'
  records = [b'one', b'', b'three' * 100]
  data = b''.join(log_files.frame_record(r) for r in records)
  path.write_bytes(data)
  result = log_files.read_records(str(path))
  assert result.records == records and not result.truncated
  path.write_bytes(data[:-3])
  result = log_files.read_records(str(path))
  assert result.records == records[:2] and result.truncated
  corrupted = bytearray(data)
  corrupted[-10] ^= 0xff
  path.write_bytes(bytes(corrupted))
  assert log_files.read_records(str(path)).records == records[:2]


def test_framing_matches_tensorflow_tfrecord_reader(tmp_path):
  import tensorflow as tf
  path = tmp_path / 'f.tfrecord'
  path.write_bytes(b''.join(log_files.frame_record(r) for r in [b'a', b'bc']))
  assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == [b'a', b'bc']


# ---- metrics --------------------------------------------------------------------------------

def test_prometheus_text_format():
  metrics = metrics_lib.Metrics()
  metrics.request_count('m', 'OK').inc()
  metrics.request_count('m', 'OK').inc()
  metrics.request_latency('m', 'predict', 'REST').observe(15)
  metrics.log_written().inc(3)
  text = metrics.render()
  # TF Serving's names, without the `_total` prometheus_client gives counters.
  assert ':tensorflow:serving:request_count{model_name="m",status="OK"} 2.0\n' in text
  assert '# TYPE :tensorflow:serving:request_count untyped' in text
  assert 'loopline_serving_request_log_records_written 3.0\n' in text
  assert '_total' not in text and '_created' not in text
  assert '# TYPE :tensorflow:serving:request_latency histogram' in text
  assert (':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",'
          'le="10.0",model_name="m"} 0.0') in text
  assert (':tensorflow:serving:request_latency_bucket{API="predict",entrypoint="REST",'
          'le="18.0",model_name="m"} 1.0') in text
  assert (':tensorflow:serving:request_latency_count{API="predict",entrypoint="REST",'
          'model_name="m"} 1.0') in text
  assert metrics.value(metrics_lib.REQUEST_COUNT, model_name='m', status='OK') == 2
  assert metrics.value(metrics_lib.REQUEST_COUNT, model_name='m', status='NOT_FOUND') == 0


# ---- warm-up files ---------------------------------------------------------------------------

def test_warmup_files_are_read_as_tf_serving_reads_them(tmp_path):
  import tensorflow as tf
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'm'
  logs = [warmup.prediction_log(request)] * 3
  path = warmup.write_warmup_file(str(tmp_path), logs)
  assert path == str(tmp_path / 'assets.extra' / 'tf_serving_warmup_requests')
  assert warmup.read_warmup_file(path) == logs
  assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == [
      log.SerializeToString() for log in logs]  # TensorFlow's own reader reads it.
  warmup.write_warmup_file(str(tmp_path), [warmup.prediction_log(request)] *
                           (warmup.MAX_RECORDS + 1))
  with pytest.raises(ServingError) as error:
    warmup.read_warmup_file(path)
  assert error.value.code == Code.INVALID_ARGUMENT
  assert 'exceeds the maximum (1000)' in error.value.message
  with open(path, 'wb') as f:
    f.write(log_files.frame_record(b'\x0a\x05'))  # A record that is no PredictionLog.
  with pytest.raises(ServingError) as error:
    warmup.read_warmup_file(path)
  assert error.value.code == Code.INVALID_ARGUMENT
  assert error.value.message == f'Failed to parse warmup record 0 from {path}'
  with open(path, 'wb') as f:
    f.write(b'not a TFRecord file at all')
  with pytest.raises(ServingError) as error:
    warmup.read_warmup_file(path)
  assert error.value.code == Code.DATA_LOSS


# ---- fast PredictionLog encoding ------------------------------------------------------------

@pytest.mark.parametrize('array', [
    np.array([b'abc', b'', b'\x00' * 300], dtype=object),
    np.array([[0.5, -1.25]], np.float32), np.array([1, -2**40], np.int64),
    np.array([[True], [False]]), np.array([1.5], np.float64), np.array([[7]], np.int32),
    np.zeros((0, 3), np.float32), np.array(3.5, np.float32),
])
def test_fast_tensor_encoding_parses_as_the_same_tensor(array):
  import tensorflow as tf
  from tensorflow.core.framework import tensor_pb2
  from serving import log_encoding
  packed = log_encoding.pack_array(array)
  parsed = tensor_pb2.TensorProto.FromString(log_encoding.tensor(packed))
  decoded = tf.make_ndarray(parsed)
  assert decoded.shape == array.shape and decoded.tolist() == array.tolist()
  unpacked = log_encoding.unpack_array(packed)
  assert unpacked.dtype == array.dtype and unpacked.tolist() == array.tolist()


def test_fast_encoding_skips_unsupported_dtypes():
  from serving import log_encoding
  pack = log_encoding.pack_array
  assert log_encoding.tensor(pack(np.array([1], np.int16))) is None
  assert log_encoding.tensor(pack(np.array(['text'], dtype=object))) is None
  assert log_encoding.tensor(pack(np.array([1.0], '>f4'))) is None  # Big-endian: protobuf path.
  assert log_encoding.varint(300) == b'\xac\x02' and log_encoding.varint(-1)[-1] == 0x01


def test_fast_predict_log_equals_the_protobuf_built_one():
  import tensorflow as tf
  from tensorflow_serving.apis import prediction_log_pb2
  from serving import log_encoding
  from serving.log_writer import prediction_log_message
  from serving.request_log import LogRecord, pack_record
  record = LogRecord('predict', 'big_tipper', 17, 'serving_default', 'id-1', 1_700_000_000.7,
                     inputs={'examples': np.array([b'ex'], dtype=object)},
                     output_filter=('probabilities',),
                     outputs={'probabilities': np.array([[0.25]], np.float32)})
  record = LogRecord(*pack_record(record))  # As the writer process receives it.
  fast = prediction_log_pb2.PredictionLog.FromString(log_encoding.predict_log(
      'big_tipper', 17, 'serving_default', 0.5, 1_700_000_000, 'request_id=id-1;example=3',
      record.inputs, record.outputs, record.output_filter))
  slow = prediction_log_message(record, 3, PrivacyFilter(), 0.5)
  assert fast.log_metadata == slow.log_metadata
  fast_log, slow_log = fast.predict_log, slow.predict_log
  assert fast_log.request.model_spec == slow_log.request.model_spec
  assert fast_log.request.output_filter == slow_log.request.output_filter
  assert fast_log.response.model_spec == slow_log.response.model_spec
  for fast_map, slow_map in ((fast_log.request.inputs, slow_log.request.inputs),
                             (fast_log.response.outputs, slow_log.response.outputs)):
    assert set(fast_map) == set(slow_map)
    for alias in fast_map:
      assert tf.make_ndarray(fast_map[alias]).tolist() == tf.make_ndarray(slow_map[alias]).tolist()


def test_numbers_written_directly_read_as_the_json_encoder_writes_them():
  """A single numeric output skips the JSON encoder: the text must be the encoder's, value for
  value, for every dtype and shape that takes that path; non-finite floats take the encoder's."""
  rng = np.random.default_rng(7)
  tricky = [0.2, 1e-4, 1e-5, 1e-45, 3.4028235e38, -0.0, 1e16, 123456.79, 2.5e-8, 0.0, -1.5]
  arrays = [np.array(tricky, np.float32).reshape(-1, 1), np.array(tricky, np.float64),
            np.array(tricky[:4], np.float16), rng.normal(size=(3, 2, 2)).astype(np.float32),
            np.array(1.25, np.float32), np.array([[1, -2], [3, 2**40]], np.int64),
            np.array([7, 255], np.uint8), np.zeros((2, 0), np.float32)]
  for array in arrays:
    for row_format, key in ((True, 'predictions'), (False, 'outputs')):
      if row_format and array.ndim == 0:
        continue
      expected = json.dumps({key: json_codec._json_ready(array, 'p')}, separators=(',', ':'))
      assert json_codec.predict_response({'p': array}, row_format).decode() == expected, array
  assert json_codec.predict_response({'p': np.array([np.inf], np.float32)}, False) == (
      b'{"outputs":[Infinity]}')
