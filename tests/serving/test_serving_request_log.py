"""Request logging: PredictionLog records with request ids, rotation, retention, privacy, drops."""
import asyncio
import base64
import os
import signal
import sys
import time

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tfx.components.bulk_inferrer import prediction_to_example_utils
from tfx.proto import bulk_inferrer_pb2

from conftest import make_config, push
from serving import log_files
from serving import metrics as metrics_lib
from serving.config import PrivacyConfig, RequestLogConfig
from serving.log_writer import salvage_leftovers
from serving.privacy import PrivacyFilter
from serving.request_log import (LogRecord, MessageReader, RequestLogger, example_index_of,
                                 frame_message, request_id_of)
from serving.server import ServerThread
import serving_test_models as tm

pytestmark = pytest.mark.timeout(120)


def read_logs(directory) -> list[prediction_log_pb2.PredictionLog]:
  return [prediction_log_pb2.PredictionLog.FromString(r)
          for r in log_files.read_log_directory(str(directory))]


def b64(x, y=0.0, **extra):
  return {'b64': base64.b64encode(tm.example(x, y, **extra)).decode()}


@pytest.fixture
def model_dir(built_models, tmp_path):
  base = str(tmp_path / 'models' / 'm')
  push(built_models, 'w2', base, 5)
  push(built_models, 'cr', str(tmp_path / 'models' / 'cr'), 3)
  return base


def test_requests_are_logged_with_metadata_and_request_ids(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(log_dir)))
  with ServerThread(config) as server:
    response = requests.post(server.rest_url + '/v1/models/m:predict',
                             json={'instances': [b64(1.0), b64(2.0, 1.0)]},
                             headers={'X-Request-Id': 'rest-1'}, timeout=30)
    assert response.status_code == 200
    with grpc.insecure_channel(server.grpc_target) as channel:
      request = predict_pb2.PredictRequest()
      request.model_spec.name = 'm'
      request.inputs['examples'].CopyFrom(tf.make_tensor_proto([tm.example(3.0)]))
      prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
          request, metadata=[('x-request-id', 'grpc-1')], timeout=30)
  logs = read_logs(log_dir)
  assert not [n for n in os.listdir(log_dir) if n.startswith('.')]  # Nothing left unfinished.
  assert [(request_id_of(l), example_index_of(l)) for l in logs] == [
      ('rest-1', 0), ('rest-1', 1), ('grpc-1', 0)]
  first = logs[0]
  spec = first.log_metadata.model_spec
  assert (spec.name, spec.version.value, spec.signature_name) == ('m', 5, 'serving_default')
  assert abs(first.log_metadata.timestamp_secs - time.time()) < 120
  assert first.log_metadata.sampling_config.sampling_rate == 1.0
  logged = tf.make_ndarray(logs[1].predict_log.request.inputs['examples'])
  assert [tf.train.Example.FromString(e) for e in logged] == [
      tf.train.Example.FromString(tm.example(2.0, 1.0))]
  assert tf.make_ndarray(logs[1].predict_log.response.outputs['probabilities']).tolist() == [[5.0]]
  # TFX's own PredictionLog -> tf.Example converter reads our records.
  spec = bulk_inferrer_pb2.OutputExampleSpec(output_columns_spec=[
      bulk_inferrer_pb2.OutputColumnsSpec(predict_output=bulk_inferrer_pb2.PredictOutput(
          output_columns=[bulk_inferrer_pb2.PredictOutputCol(output_key='probabilities',
                                                             output_column='p')]))])
  example = prediction_to_example_utils.convert(logs[2], spec)
  assert example.features.feature['x'].float_list.value == [3.0]
  assert example.features.feature['p'].float_list.value == [6.0]


def test_classify_and_regress_are_logged(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(log_dir)))
  from serving.config import parse_model_config_text
  config.model_config = parse_model_config_text(
      f'model_config_list {{ config {{ name: "cr" base_path: "{tmp_path}/models/cr" }} }}')
  with ServerThread(config) as server:
    requests.post(server.rest_url + '/v1/models/cr:classify',
                  json={'signature_name': 'classify_it', 'examples': [{'x': 1.0}]}, timeout=30)
    requests.post(server.rest_url + '/v1/models/cr:regress',
                  json={'signature_name': 'regress_it', 'examples': [{'x': 1.0}]}, timeout=30)
  classify, regress = read_logs(log_dir)
  assert classify.classify_log.request.input.example_list.examples[0].features.feature[
      'x'].float_list.value == [1.0]
  assert [c.label for c in classify.classify_log.response.result.classifications[0].classes] == [
      'no', 'yes']
  assert regress.regress_log.response.result.regressions[0].value == 2.0
  assert regress.log_metadata.model_spec.signature_name == 'regress_it'


def test_files_rotate_by_size_and_every_file_is_whole(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(log_dir),
                                                               max_file_bytes=2000))
  with ServerThread(config) as server, requests.Session() as session:
    for i in range(60):
      session.post(server.rest_url + '/v1/models/m:predict', json={'instances': [b64(i)]},
                   headers={'X-Request-Id': f'r{i}'}, timeout=30)
  names = sorted(os.listdir(log_dir))
  assert len(names) > 3 and all(log_files.is_log_file(n) for n in names)
  for name in names:
    assert not log_files.read_records(str(log_dir / name)).truncated
  assert sorted(request_id_of(l) for l in read_logs(log_dir)) == sorted(f'r{i}' for i in range(60))


def test_sampling_rate_zero_logs_nothing_and_metrics_count_records(model_dir, tmp_path):
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(tmp_path / 'none'),
                                                               sampling_rate=0.0))
  with ServerThread(config) as server:
    requests.post(server.rest_url + '/v1/models/m:predict', json={'instances': [b64(1.0)]},
                  timeout=30)
  assert read_logs(tmp_path / 'none') == []
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(tmp_path / 'all')))
  with ServerThread(config) as server:
    requests.post(server.rest_url + '/v1/models/m:predict', json={'instances': [b64(1.0)]},
                  timeout=30)
    deadline = time.monotonic() + 10
    while server.server.metrics.value(metrics_lib.LOG_WRITTEN) < 1 and time.monotonic() < deadline:
      time.sleep(0.05)
    text = requests.get(server.rest_url + '/monitoring/prometheus/metrics', timeout=30).text
  assert 'loopline_serving_request_log_records_written 1' in text


def test_privacy_redacts_and_hashes_before_disk(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(log_dir)),
                       privacy=PrivacyConfig(redact_features=('company',),
                                             hash_features=('taxi_id',), hash_key=b's' * 32))
  with ServerThread(config) as server:
    response = requests.post(server.rest_url + '/v1/models/m:predict',
                             json={'instances': [b64(1.0, company='Acme', taxi_id='T-17')]},
                             timeout=30)
    assert response.json() == {'predictions': [[2.0]]}  # The model saw the real request.
  (entry,) = read_logs(log_dir)
  example = tf.train.Example.FromString(
      tf.make_ndarray(entry.predict_log.request.inputs['examples'])[0])
  features = example.features.feature
  assert 'company' not in features and features['x'].float_list.value == [1.0]
  assert features['taxi_id'].bytes_list.value == [
      PrivacyFilter(hash_key=b's' * 32, hash_features=['taxi_id']).hash_value(b'T-17')]
  raw = b''.join((log_dir / n).read_bytes() for n in os.listdir(log_dir))
  assert b'Acme' not in raw and b'T-17' not in raw


def test_full_buffer_drops_and_counts_without_blocking(tmp_path):
  metrics = metrics_lib.Metrics()
  logger = RequestLogger(RequestLogConfig(directory=str(tmp_path), buffer_records=2),
                         PrivacyFilter(), metrics)  # Writer not started: nothing drains.
  record = LogRecord('predict', 'm', 1, 'serving_default', 'id', time.time(),
                     inputs={'examples': np.array([b'x'], dtype=object)},
                     outputs={'p': np.array([[1.0]], np.float32)})


  async def submit_five():  # Records are submitted on the event loop, as by the service.
    return [logger.submit(record) for _ in range(5)]

  results = asyncio.run(submit_five())
  assert results == [True, True, False, False, False]
  assert metrics.value(metrics_lib.LOG_DROPPED, reason='buffer_full') == 3


def test_retention_deletes_old_files_and_keeps_total_size(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  log_dir.mkdir()
  old = log_dir / log_files.final_name(time.time() - 10 * 86400, 1, 'aaaaaa')
  old.write_bytes(log_files.frame_record(b'old'))
  os.utime(old, (time.time() - 10 * 86400,) * 2)
  big = [log_dir / log_files.final_name(time.time() - 100 + i, 2 + i, 'aaaaaa') for i in range(3)]
  for path in big:
    path.write_bytes(log_files.frame_record(b'x' * 1000))
  config = make_config(model_dir, request_log=RequestLogConfig(
      directory=str(log_dir), retention_max_age_seconds=86400, retention_max_total_bytes=2100))
  with ServerThread(config):
    pass
  assert sorted(os.listdir(log_dir)) == sorted(p.name for p in big[1:])


def test_leftover_temp_files_are_salvaged_up_to_the_last_whole_record(tmp_path):
  final = log_files.final_name(time.time(), 1, 'bbbbbb')
  temp = tmp_path / log_files.temp_name(final)
  whole = log_files.frame_record(b'one') + log_files.frame_record(b'two')
  temp.write_bytes(whole + log_files.frame_record(b'three')[:7])  # Killed mid-write.
  empty = tmp_path / log_files.temp_name(log_files.final_name(time.time(), 2, 'bbbbbb'))
  empty.write_bytes(b'\x01\x02')
  assert salvage_leftovers(str(tmp_path)) == [final]
  assert os.listdir(tmp_path) == [final]
  assert log_files.read_log_directory(str(tmp_path)) == [b'one', b'two']


def wait_for(condition, what: str, timeout: float = 30):
  deadline = time.monotonic() + timeout
  while not condition():
    assert time.monotonic() < deadline, f'timed out waiting for {what}'
    time.sleep(0.02)


def test_a_killed_writer_process_is_replaced_and_nothing_handed_over_is_lost(model_dir, tmp_path):
  log_dir = tmp_path / 'logs'
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(log_dir),
                                                               flush_interval_seconds=0.0))
  with ServerThread(config) as server, requests.Session() as session:
    logger, metrics = server.server.request_logger, server.server.metrics
    written = lambda: metrics.value(metrics_lib.LOG_WRITTEN)

    def predict(i):
      response = session.post(server.rest_url + '/v1/models/m:predict',
                              json={'instances': [b64(i)]}, headers={'X-Request-Id': f'r{i}'},
                              timeout=30)
      assert response.status_code == 200

    for i in range(3):
      predict(i)
    wait_for(lambda: written() == 3, 'the first writer to write 3 records')  # Flushed: interval 0.
    first_writer = logger.writer_pid
    os.kill(first_writer, signal.SIGKILL)  # Its file stays behind unfinished.
    wait_for(lambda: logger.writer_pid is None, 'the server to notice the dead writer')
    for i in range(3, 6):  # Served and buffered while no writer runs.
      predict(i)
    wait_for(lambda: logger.writer_pid not in (None, first_writer), 'a new writer')
    wait_for(lambda: written() == 6, 'the new writer to write the buffered records')
  assert metrics.value(metrics_lib.LOG_DROPPED, reason='writer_exited') == 0
  assert not [n for n in os.listdir(log_dir) if n.startswith('.')]  # The dead one's: salvaged.
  files = [[request_id_of(prediction_log_pb2.PredictionLog.FromString(r))
            for r in log_files.read_records(str(log_dir / f.name)).records]
           for f in log_files.list_log_files(str(log_dir))]
  # The dead writer's file, salvaged by the new writer at its start, and the new writer's own.
  assert sorted(files) == [['r0', 'r1', 'r2'], ['r3', 'r4', 'r5']]
  assert metrics.value(metrics_lib.LOG_FILES) == 1  # Only the new writer's was finalized.


def test_messages_to_the_writer_survive_any_split_of_the_byte_stream():
  messages = [b'', b'a', bytes(range(256)) * 40]
  stream = b''.join(frame_message(m) for m in messages)
  for chunk_size in (1, 3, 4, 5, 1000, len(stream)):
    reader = MessageReader()
    received = []
    for offset in range(0, len(stream), chunk_size):
      received += reader.feed(stream[offset:offset + chunk_size])
    assert received == messages and reader.pending_bytes == 0
  reader = MessageReader()
  assert reader.feed(stream[:-1]) == messages[:2] and reader.pending_bytes > 0


def test_a_writer_process_that_cannot_start_fails_the_server_start_clearly(model_dir, tmp_path,
                                                                           monkeypatch):
  monkeypatch.setattr(sys, 'executable', '/bin/false')  # The writer exits at once.
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(tmp_path / 'logs')))
  with pytest.raises(RuntimeError, match='request-log writer process exited at start-up'):
    ServerThread(config).start()


@pytest.mark.parametrize('notice_first', [True, False], ids=['noticed', 'at-shutdown'])
def test_records_a_killed_writer_never_wrote_are_counted_as_dropped(model_dir, tmp_path,
                                                                     notice_first):
  config = make_config(model_dir, request_log=RequestLogConfig(directory=str(tmp_path / 'logs')))
  with ServerThread(config) as server, requests.Session() as session:
    logger, metrics = server.server.request_logger, server.server.metrics
    writer = logger.writer_pid
    os.kill(writer, signal.SIGSTOP)  # It is handed records but writes none.
    for i in range(5):
      assert session.post(server.rest_url + '/v1/models/m:predict', json={'instances': [b64(i)]},
                          timeout=30).status_code == 200
    time.sleep(0.3)  # The records go into the pipe right after their responses.
    os.kill(writer, signal.SIGKILL)
    if notice_first:
      wait_for(lambda: logger.writer_pid != writer, 'the server to notice the dead writer')
  assert metrics.value(metrics_lib.LOG_DROPPED, reason='writer_exited') == 5
  assert metrics.value(metrics_lib.LOG_WRITTEN) == 0
