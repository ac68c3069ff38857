"""ServingLogExampleGen: PredictionLog conversion, tolerant reading, windows, the ground-truth join."""
import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.serving_log_gen import converter
from components.serving_log_gen import executor as gen_executor
from components.serving_log_gen import feedback as feedback_lib
from components.serving_log_gen import spec
from serving import log_files


def make_example(fare=12.5, payment_type='Cash', **extra) -> tf.train.Example:
  example = tf.train.Example()
  example.features.feature['fare'].float_list.value.append(fare)
  example.features.feature['payment_type'].bytes_list.value.append(payment_type.encode())
  for name, value in extra.items():
    feature = example.features.feature[name]
    if isinstance(value, bytes):
      feature.bytes_list.value.append(value)
    elif isinstance(value, float):
      feature.float_list.value.append(value)
    else:
      feature.int64_list.value.append(value)
  return example


def prediction_log(request_id, timestamp, examples=None, probabilities=None, version=7,
                   model='big_tipper', index=None) -> prediction_log_pb2.PredictionLog:
  """A PredictionLog as the server writes one: serialized tf.Examples in, probabilities out."""
  examples = examples if examples is not None else [make_example().SerializeToString()]
  probabilities = probabilities if probabilities is not None else [0.25] * len(examples)
  log = prediction_log_pb2.PredictionLog()
  metadata = log.log_metadata
  metadata.model_spec.name = model
  metadata.model_spec.version.value = version
  metadata.model_spec.signature_name = 'serving_default'
  metadata.timestamp_secs = timestamp
  metadata.request_origin = f'request_id={request_id}' + (
      '' if index is None else f';example={index}')
  request = log.predict_log.request
  request.model_spec.CopyFrom(metadata.model_spec)
  request.inputs['examples'].CopyFrom(tf.make_tensor_proto(np.array(examples, dtype=object)))
  log.predict_log.response.outputs['probabilities'].CopyFrom(tf.make_tensor_proto(
      np.array(probabilities, np.float32).reshape(-1, 1)))
  return log


def framed(logs) -> bytes:
  return b''.join(log_files.frame_record(log.SerializeToString()) for log in logs)


def write_log_file(directory, data: bytes, created_at=1_700_000_000, sequence=1) -> str:
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, log_files.final_name(created_at, sequence, 'abc123'))
  with open(path, 'wb') as f:
    f.write(data)
  return path


def logs_at(timestamps, prefix='r', **kwargs):
  return [prediction_log(f'{prefix}{t}', t, **kwargs) for t in timestamps]


# ----------------------------------------------------------------------------- conversion

def test_a_predict_log_becomes_an_example_with_prediction_version_and_request_id():
  client_sent = make_example(fare=7.25, big_tipper=1, prediction=0.99)   # reserved names
  log = prediction_log('req-1', 1234, [client_sent.SerializeToString()], [0.8], version=42,
                       index=3)
  record = converter.convert_record(log.SerializeToString())
  [logged] = record.examples
  assert (logged.prediction == pytest.approx(0.8) and logged.model_version == 42 and
          logged.request_id == 'req-1' and logged.example_index == 3 and
          logged.timestamp_secs == 1234 and logged.model_name == 'big_tipper')
  serialized, dropped, emptied = converter.to_output_example(logged, label=0)
  assert (dropped, emptied) == (2, 0)
  feature = tf.train.Example.FromString(serialized).features.feature
  assert feature['fare'].float_list.value == [7.25]
  assert feature[spec.PREDICTION_FEATURE].float_list.value == [pytest.approx(0.8)]
  assert feature[spec.MODEL_VERSION_FEATURE].int64_list.value == [42]
  assert feature[spec.REQUEST_ID_FEATURE].bytes_list.value == [b'req-1']
  assert feature[spec.TIMESTAMP_FEATURE].int64_list.value == [1234]
  assert feature['big_tipper'].int64_list.value == [0]        # the ground truth, not the client's
  unlabeled, _, _ = converter.to_output_example(
      converter.convert_record(log.SerializeToString()).examples[0], label=None)
  assert 'big_tipper' not in tf.train.Example.FromString(unlabeled).features.feature


def test_an_empty_feature_becomes_absent_and_required_features_are_checked():
  """A missing value is an absent feature, as on the training path; a required one is named."""
  sent = make_example(company=b'Taxi Co')
  sent.features.feature['trip_seconds'].int64_list.SetInParent()     # present, no value
  sent.features.feature['dropoff_latitude'].SetInParent()            # present, no kind at all
  del sent.features.feature['fare']                                  # not sent at all
  log = prediction_log('r', 5, [sent.SerializeToString()])
  [logged] = converter.convert_record(
      log.SerializeToString(), required_features=('fare', 'payment_type', 'trip_seconds')
  ).examples
  assert logged.empty_present == ('dropoff_latitude', 'trip_seconds')
  assert logged.missing_required == ('fare', 'trip_seconds')
  serialized, dropped, emptied = converter.to_output_example(logged, label=None)
  assert (dropped, emptied) == (0, 2)
  feature = tf.train.Example.FromString(serialized).features.feature
  assert 'trip_seconds' not in feature and 'dropoff_latitude' not in feature
  assert feature['company'].bytes_list.value == [b'Taxi Co']


def test_required_features_are_the_always_present_model_features_of_the_schema(repo_schema):
  import tensorflow_data_validation as tfdv
  required = converter.required_features(tfdv.load_schema_text(repo_schema))
  assert set(required) == {'fare', 'trip_miles', 'trip_start_hour', 'trip_start_day',
                           'trip_start_month', 'payment_type'}


def test_a_record_with_several_examples_keeps_each_and_counts_unparseable_ones():
  examples = [make_example(fare=1.0).SerializeToString(), b'', make_example(fare=3.0)
              .SerializeToString()]
  log = prediction_log('batch', 10, examples, [0.1, 0.2, 0.3])
  record = converter.convert_record(log.SerializeToString())
  assert record.unparseable_examples == 1
  assert [(e.example_index, round(e.prediction, 2)) for e in record.examples] == [(0, 0.1),
                                                                                 (2, 0.3)]
  with pytest.raises(converter.ConversionError) as error:
    converter.convert_record(prediction_log('x', 1, [b'\xff\xff'], [0.5]).SerializeToString())
  assert error.value.reason == 'unparseable_example'
  with pytest.raises(converter.ConversionError) as error:
    converter.convert_record(b'\x08\x96\x01 not a prediction log \xff')
  assert error.value.reason == 'not_a_prediction_log'
  no_input = prediction_log('y', 1)
  del no_input.predict_log.request.inputs['examples']
  with pytest.raises(converter.ConversionError) as error:
    converter.convert_record(no_input.SerializeToString())
  assert error.value.reason == 'no_example_input'


def test_a_log_without_outputs_keeps_the_example_without_prediction(tmp_path):
  log = prediction_log('p', 5)
  del log.predict_log.response.outputs['probabilities']
  write_log_file(str(tmp_path), framed([log]))
  window = converter.read_window(str(tmp_path))
  assert window.counts.examples == 1 and window.counts.missing_prediction == 1
  assert window.examples[0].prediction is None


# ----------------------------------------------------------------------------- tolerant reading

def test_corrupt_and_truncated_records_are_skipped_counted_and_never_fatal(tmp_path):
  records = [log_files.frame_record(log.SerializeToString()) for log in logs_at(range(100, 106))]
  corrupt_data = bytearray(records[1])
  corrupt_data[20] ^= 0xFF                        # payload byte: data checksum fails
  corrupt_header = bytearray(records[3])
  corrupt_header[2] ^= 0xFF                       # length byte: header checksum fails
  data = (records[0] + bytes(corrupt_data) + records[2] + bytes(corrupt_header) + records[4] +
          records[5][:len(records[5]) // 2])      # the file was cut while writing the last one
  write_log_file(str(tmp_path), data)
  write_log_file(str(tmp_path), os.urandom(300), sequence=2)      # garbage
  write_log_file(str(tmp_path), b'', sequence=3)                   # empty
  window = converter.read_window(str(tmp_path))
  assert sorted(e.request_id for e in window.examples) == ['r100', 'r102', 'r104']
  counts = window.counts
  assert counts.files_read == 3
  assert counts.corrupt_records == 1
  assert counts.resynced >= 1
  assert counts.truncated_files == 2               # the cut file and the garbage one
  assert counts.skipped_bytes >= len(records[1]) + len(records[3]) + 300


def test_a_valid_tfrecord_that_is_not_a_prediction_log_is_counted(tmp_path):
  data = framed(logs_at([1, 2])) + log_files.frame_record(b'\x12\x04junk')
  write_log_file(str(tmp_path), data)
  window = converter.read_window(str(tmp_path))
  assert window.counts.examples == 2
  assert window.counts.unconvertible == {'not_a_prediction_log': 1}


def test_read_tolerant_round_trip():
  payloads = [os.urandom(n) for n in (0, 1, 100, 5000)]
  data = b''.join(log_files.frame_record(p) for p in payloads)
  result = converter.read_tolerant(data)
  assert result.records == payloads and not result.truncated and result.skipped_bytes == 0
  length_only = struct.pack('<Q', 10)
  assert converter.read_tolerant(length_only).truncated


# ----------------------------------------------------------------------------- windows

def test_window_bounds_temporary_and_foreign_files(tmp_path):
  directory = str(tmp_path)
  path = write_log_file(directory, framed(logs_at(range(100, 200))))
  temporary = os.path.join(directory, log_files.temp_name(os.path.basename(path)) + '')
  with open(temporary.replace('000001', '000002'), 'wb') as f:
    f.write(framed(logs_at(range(120, 130), prefix='tmp')))   # still being written: not read
  with open(os.path.join(directory, 'notes.txt'), 'w') as f:
    f.write('not a log')
  window = converter.read_window(directory, window_start=120, window_end=150)
  assert [e.timestamp_secs for e in window.examples] == list(range(120, 150))
  assert window.counts.records_outside_window == 70
  assert window.counts.temporary_files_ignored == 1 and window.counts.other_files_ignored == 1
  assert ('r100', 0) in window.keys_outside_window
  with pytest.raises(ValueError, match='empty window'):
    converter.read_window(directory, window_start=150, window_end=150)


def test_a_directory_with_only_temporary_files_or_no_directory_is_an_empty_window(tmp_path):
  directory = str(tmp_path / 'logs')
  os.makedirs(directory)
  name = log_files.final_name(1_700_000_000, 1, 'abc123')
  with open(os.path.join(directory, log_files.temp_name(name)), 'wb') as f:
    f.write(framed(logs_at([1, 2, 3])))
  window = converter.read_window(directory)
  assert window.examples == [] and window.counts.temporary_files_ignored == 1
  missing = converter.read_window(str(tmp_path / 'nowhere'))
  assert missing.examples == [] and missing.counts.files_read == 0


def test_model_name_filter_and_versions(tmp_path):
  logs = (logs_at([1, 2, 3], version=1) + logs_at([4, 5], version=2) +
          logs_at([6], model='other_model'))
  write_log_file(str(tmp_path), framed(logs))
  window = converter.read_window(str(tmp_path), model_name='big_tipper')
  assert converter.model_versions(window.examples) == {1: 3, 2: 2}
  assert window.counts.records_other_model == 1


# ----------------------------------------------------------------------------- ground truth

def _write_csv(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)


def test_feedback_format_duplicates_conflicts_and_bad_rows(tmp_path):
  directory = str(tmp_path / 'feedback')
  _write_csv(os.path.join(directory, 'a.csv'),
             'request_id,big_tipper\nr1,1\nr2,0\nr3,1\nr3,1\nr4,1\n,1\nr5,maybe\n')
  _write_csv(os.path.join(directory, 'b.csv'),
             'big_tipper,request_id,example,extra\n0,r4,0,x\ntrue,r6,1,y\n0,r7,-2,z\n')
  _write_csv(os.path.join(directory, 'c.csv'), 'id,label\nr1,1\n')          # wrong columns
  _write_csv(os.path.join(directory, '.d.csv.tmp'), 'request_id,big_tipper\nr9,1\n')
  _write_csv(os.path.join(directory, 'notes.txt'), 'hello')
  feedback = feedback_lib.read_feedback(directory)
  assert feedback.labels == {('r1', 0): 1, ('r2', 0): 0, ('r3', 0): 1, ('r6', 1): 1}
  counts = feedback.counts
  assert (counts.files_read, counts.invalid_files, counts.files_ignored) == (2, 1, 2)
  assert counts.rows == 10
  assert counts.invalid_rows == 3               # no id, label 'maybe', negative example index
  assert counts.duplicate_labels == 1           # r3 twice with the same label
  assert counts.conflicting_keys == 1           # r4: 1 then 0 -> left unlabeled
  assert counts.labels == 4
  assert any('conflicting' in p for p in counts.problems)


def test_join_counts_unknown_and_outside_window_labels():
  feedback = feedback_lib.Feedback({('a', 0): 1, ('b', 0): 0, ('old', 0): 1, ('ghost', 0): 0},
                                   feedback_lib.FeedbackCounts())
  labels = feedback_lib.join([('a', 0), ('b', 0), ('c', 0), ('a', 0)], feedback,
                             keys_outside_window=[('old', 0)])
  assert labels == [1, 0, None, 1]
  counts = feedback.counts
  assert (counts.joined_examples, counts.unlabeled_examples) == (3, 1)
  assert (counts.labels_outside_window, counts.labels_unknown) == (1, 1)


def test_write_feedback_round_trip(tmp_path):
  path = feedback_lib.write_feedback(str(tmp_path / 'fb' / 'replay-1.csv'),
                                     [('x', 1), ('y', 0)])
  assert open(path).read() == 'request_id,big_tipper\nx,1\ny,0\n'
  assert feedback_lib.read_feedback(str(tmp_path / 'fb')).labels == {('x', 0): 1, ('y', 0): 0}
  assert os.listdir(tmp_path / 'fb') == ['replay-1.csv']


# ----------------------------------------------------------------------------- the executor

def _run_executor(log_dir, feedback_dir, out_dir, schema=None, **window):
  examples = standard_artifacts.Examples()
  examples.uri = out_dir
  inputs = {spec.SCHEMA_KEY: [schema]} if schema is not None else {}
  gen_executor.Executor().Do(inputs, {spec.EXAMPLES_KEY: [examples]}, {
      spec.LOG_DIR_KEY: log_dir, spec.FEEDBACK_DIR_KEY: feedback_dir,
      spec.WINDOW_START_KEY: window.get('start'), spec.WINDOW_END_KEY: window.get('end'),
      spec.MODEL_NAME_KEY: ''})
  return examples


def _read(uri, split):
  path = os.path.join(uri, f'Split-{split}', gen_executor.DATA_FILE)
  return [tf.train.Example.FromString(r.numpy())
          for r in tf.data.TFRecordDataset(path, compression_type='GZIP')]


def test_executor_writes_both_splits_and_records_every_count(tmp_path):
  log_dir, feedback_dir = str(tmp_path / 'logs'), str(tmp_path / 'feedback')
  write_log_file(log_dir, framed(logs_at(range(10, 30), version=3)))
  write_log_file(log_dir, framed(logs_at(range(30, 35), version=4)) + b'\x00' * 7, sequence=2)
  feedback_lib.write_feedback(os.path.join(feedback_dir, 'labels.csv'),
                              [('r10', 1), ('r11', 0), ('r12', 1), ('r5', 1), ('nobody', 0)])
  examples = _run_executor(log_dir, feedback_dir, str(tmp_path / 'out'), start=10, end=100)
  assert artifact_utils.decode_split_names(examples.split_names) == ['serving', 'labeled']
  serving = _read(examples.uri, 'serving')
  labeled = _read(examples.uri, 'labeled')
  assert len(serving) == 25 and len(labeled) == 3
  assert sorted(e.features.feature['big_tipper'].int64_list.value[0] for e in labeled) == [0, 1, 1]
  properties = {k: examples.get_custom_property(k) for k in (
      'num_examples', 'num_labeled', 'model_versions', 'truncated_files', 'skipped_bytes',
      'labels_unknown', 'window_start', 'window_end')}
  assert properties == {'num_examples': 25, 'num_labeled': 3, 'model_versions': '3:20,4:5',
                        'truncated_files': 1, 'skipped_bytes': 7, 'labels_unknown': 2,
                        'window_start': 10, 'window_end': 100}
  summary = json.load(open(os.path.join(examples.uri, spec.SUMMARY_FILE)))
  assert summary['feedback']['joined_examples'] == 3
  assert json.loads(examples.get_custom_property(spec.COUNTS_PROPERTY))['logs']['examples'] == 25


def test_executor_counts_and_names_requests_missing_a_required_feature(tmp_path, repo_schema):
  import shutil
  log_dir = str(tmp_path / 'logs')
  without_fare = make_example()
  del without_fare.features.feature['fare']
  logs = logs_at(range(10, 14)) + logs_at(range(14, 17), prefix='nofare',
                                          examples=[without_fare.SerializeToString()])
  write_log_file(log_dir, framed(logs))
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / 'schema')
  os.makedirs(schema.uri)
  shutil.copy(repo_schema, schema.uri)
  examples = _run_executor(log_dir, None, str(tmp_path / 'out'), schema=schema)
  assert examples.get_custom_property(spec.MISSING_REQUIRED_PROPERTY) == 7
  # every logged example lacks the trip fields make_example does not send; fare is missing in 3
  named = dict(item.split(':') for item in
               examples.get_custom_property(spec.MISSING_REQUIRED_FEATURES_PROPERTY).split(','))
  assert named['fare'] == '3' and named['trip_miles'] == '7' and 'payment_type' not in named
  no_schema = _run_executor(log_dir, None, str(tmp_path / 'out2'))
  assert no_schema.get_custom_property(spec.MISSING_REQUIRED_PROPERTY) == 0


def test_executor_on_an_empty_window_writes_empty_splits(tmp_path):
  log_dir = str(tmp_path / 'logs')
  write_log_file(log_dir, framed(logs_at([5, 6])))
  feedback_lib.write_feedback(str(tmp_path / 'fb' / 'x.csv'), [('r5', 1)])
  examples = _run_executor(log_dir, str(tmp_path / 'fb'), str(tmp_path / 'out'), start=100,
                           end=200)
  assert _read(examples.uri, 'serving') == [] and _read(examples.uri, 'labeled') == []
  assert examples.get_custom_property('num_examples') == 0
  assert examples.get_custom_property('labels_outside_window') == 1


def test_logs_written_by_the_server_are_read_back(tmp_path):
  """Contract with serving/log_writer.py: its per-example records convert losslessly."""
  from serving import log_writer
  from serving import request_log
  from serving.privacy import PrivacyFilter
  examples = np.array([make_example(fare=float(i)).SerializeToString() for i in range(3)],
                      dtype=object)
  record = request_log.LogRecord(
      kind='predict', model_name='big_tipper', version=9, signature_name='serving_default',
      request_id='srv-1', timestamp=1_700_000_123.9, inputs={'examples': examples},
      outputs={'probabilities': np.array([[0.1], [0.2], [0.3]], np.float32)})
  serialized = log_writer.serialized_prediction_logs(  # As the writer process receives it.
      request_log.LogRecord(*request_log.pack_record(record)), PrivacyFilter(), 1.0)
  write_log_file(str(tmp_path), b''.join(log_files.frame_record(s) for s in serialized))
  window = converter.read_window(str(tmp_path))
  assert [(e.request_id, e.example_index, e.model_version, e.timestamp_secs) for e in
          window.examples] == [('srv-1', i, 9, 1_700_000_123) for i in range(3)]
  assert [round(e.prediction, 3) for e in window.examples] == [0.1, 0.2, 0.3]
  assert [e.example.features.feature['fare'].float_list.value[0] for e in window.examples] == [
      0.0, 1.0, 2.0]


def test_the_fingerprint_changes_when_logs_are_finalized_or_feedback_arrives(tmp_path):
  log_dir, feedback_dir = str(tmp_path / 'logs'), str(tmp_path / 'feedback')
  write_log_file(log_dir, framed(logs_at([1])))
  first = gen_executor.window_fingerprint(log_dir, feedback_dir)
  assert gen_executor.window_fingerprint(log_dir, feedback_dir) == first
  name = log_files.final_name(1_700_000_000, 9, 'abc123')
  with open(os.path.join(log_dir, log_files.temp_name(name)), 'wb') as f:
    f.write(b'still being written')
  assert gen_executor.window_fingerprint(log_dir, feedback_dir) == first   # hidden: not yet
  feedback_lib.write_feedback(os.path.join(feedback_dir, 'a.csv'), [('r1', 1)])
  assert gen_executor.window_fingerprint(log_dir, feedback_dir) != first
