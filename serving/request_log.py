"""Sampled request logging to PredictionLog TFRecord files, off the request path.

Requests hand a `LogRecord` (plain Python/numpy values) to a bounded buffer and return at once.
After the responses went out, the event loop serializes the records as
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` (privacy rules applied), and a writer
thread appends them to a hidden temporary file, which is renamed to its final name when it is big
or old enough, or at shutdown. A full buffer or a failing disk drops records (counted in the
metrics) but never delays or fails a prediction. Retention (age, total size) is enforced after every
rotation and once a minute.

A request carrying several examples is logged as one PredictionLog per example (when every
input and output leads with the batch dimension), which is what TFX's BulkInferrer writes and what
`tfx.components.bulk_inferrer.prediction_to_example_utils.convert` reads (it takes the first
example of a record).

The request id has no field of its own in TF Serving's `LogMetadata`; it is stored in
`log_metadata.request_origin` as `request_id=<id>`, plus `;example=<i>` for the i-th example of a
split request (see `request_id_of`, `example_index_of`).
"""
import asyncio
import collections
import dataclasses
import logging
import os
import random
import threading
import time

import numpy as np
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import regression_pb2

from serving import log_encoding
from serving import log_files
from serving import metrics as metrics_lib
from serving import protos
from serving.config import RequestLogConfig
from serving.privacy import PrivacyFilter

log = logging.getLogger('serving.request_log')
REQUEST_ID_PREFIX = 'request_id='
RETENTION_CHECK_SECONDS = 60.0


@dataclasses.dataclass(slots=True)
class LogRecord:
  """One answered request, as plain values (converted to a PredictionLog by the writer thread)."""
  kind: str  # 'predict', 'classify' or 'regress'.
  model_name: str
  version: int
  signature_name: str
  request_id: str
  timestamp: float
  inputs: dict | None = None  # predict
  output_filter: tuple = ()
  outputs: dict | None = None
  examples: list | None = None  # classify / regress: serialized tf.Examples
  classes: np.ndarray | None = None
  scores: np.ndarray | None = None
  values: np.ndarray | None = None


def _origin_fields(prediction_log: prediction_log_pb2.PredictionLog) -> dict[str, str]:
  origin = prediction_log.log_metadata.request_origin
  return dict(part.partition('=')[::2] for part in origin.split(';') if '=' in part)


def request_id_of(prediction_log: prediction_log_pb2.PredictionLog) -> str:
  """The request id a log record was written with ('' if none)."""
  return _origin_fields(prediction_log).get('request_id', '')


def example_index_of(prediction_log: prediction_log_pb2.PredictionLog) -> int:
  """The position of the record's example in its request (0 for one-example requests)."""
  return int(_origin_fields(prediction_log).get('example', '0'))


def split_by_example(record: LogRecord) -> list[tuple[int | None, LogRecord]]:
  """[(example index, one-example record)], or [(None, record)] when it cannot be split."""
  if record.kind == 'predict':
    arrays = list(record.inputs.values()) + list(record.outputs.values())
    rows = {a.shape[0] if a.ndim else None for a in arrays}
    if len(rows) != 1 or None in rows:
      return [(None, record)]
    count = rows.pop()
    if count == 1:
      return [(None, record)]
    return [(i, dataclasses.replace(
        record, inputs={k: v[i:i + 1] for k, v in record.inputs.items()},
        outputs={k: v[i:i + 1] for k, v in record.outputs.items()})) for i in range(count)]
  if len(record.examples) == 1:
    return [(None, record)]
  piece = lambda array, i: None if array is None else array[i:i + 1]
  return [(i, dataclasses.replace(record, examples=record.examples[i:i + 1],
                                  classes=piece(record.classes, i),
                                  scores=piece(record.scores, i), values=piece(record.values, i)))
          for i in range(len(record.examples))]


def _origin(record: LogRecord, index: int | None) -> str:
  return REQUEST_ID_PREFIX + record.request_id + ('' if index is None else f';example={index}')


def _private_inputs(record: LogRecord, privacy: PrivacyFilter) -> dict:
  return {alias: np.vectorize(privacy.apply_serialized, otypes=[object])(array)
          if alias == privacy.example_input_key and array.dtype == object and array.size else array
          for alias, array in record.inputs.items()}


def serialized_prediction_logs(record: LogRecord, privacy: PrivacyFilter,
                               sampling_rate: float) -> list[bytes]:
  """One serialized PredictionLog per example, privacy rules applied to every logged tf.Example.

  Predict logs of common dtypes take the fast wire encoding; the rest goes through protobuf.
  """
  if record.kind == 'predict' and privacy.active:
    record = dataclasses.replace(record, inputs=_private_inputs(record, privacy))
  serialized = []
  for index, piece in split_by_example(record):
    encoded = None
    if piece.kind == 'predict':
      encoded = log_encoding.predict_log(
          piece.model_name, piece.version, piece.signature_name, sampling_rate,
          int(piece.timestamp), _origin(piece, index), piece.inputs, piece.outputs,
          piece.output_filter)
    if encoded is None:
      encoded = _prediction_log(piece, index, privacy, sampling_rate).SerializeToString()
    serialized.append(encoded)
  return serialized


def _prediction_log(record: LogRecord, index: int | None, privacy: PrivacyFilter,
                    sampling_rate: float) -> prediction_log_pb2.PredictionLog:
  prediction_log = prediction_log_pb2.PredictionLog()
  metadata = prediction_log.log_metadata
  spec = protos.model_spec(record.model_name, record.version, record.signature_name)
  metadata.model_spec.CopyFrom(spec)
  metadata.sampling_config.sampling_rate = sampling_rate
  metadata.saved_model_tags.append('serve')
  metadata.timestamp_secs = int(record.timestamp)
  metadata.request_origin = _origin(record, index)
  if record.kind == 'predict':  # Inputs already went through the privacy rules.
    request = predict_pb2.PredictRequest(model_spec=spec, output_filter=list(record.output_filter))
    for alias, array in record.inputs.items():
      request.inputs[alias].CopyFrom(protos.tensor_from_array(array))
    response = predict_pb2.PredictResponse(model_spec=spec)
    for alias, array in record.outputs.items():
      response.outputs[alias].CopyFrom(protos.tensor_from_array(array))
    prediction_log.predict_log.request.CopyFrom(request)
    prediction_log.predict_log.response.CopyFrom(response)
    return prediction_log
  examples = [privacy.apply_serialized(e) for e in record.examples]
  if record.kind == 'classify':
    prediction_log.classify_log.request.CopyFrom(classification_pb2.ClassificationRequest(
        model_spec=spec, input=protos.example_list_input(examples)))
    prediction_log.classify_log.response.CopyFrom(classification_pb2.ClassificationResponse(
        model_spec=spec, result=protos.classification_result(record.classes, record.scores)))
  else:
    prediction_log.regress_log.request.CopyFrom(regression_pb2.RegressionRequest(
        model_spec=spec, input=protos.example_list_input(examples)))
    prediction_log.regress_log.response.CopyFrom(regression_pb2.RegressionResponse(
        model_spec=spec, result=protos.regression_result(record.values)))
  return prediction_log


def salvage_leftovers(directory: str) -> list[str]:
  """Finalize temporary files left by a killed server: keep their whole records, rename them.

  Assumes one server writes a log directory at a time.
  """
  salvaged = []
  for entry in os.scandir(directory):
    final = log_files.final_name_of_temp(entry.name)
    if final is None:
      continue
    result = log_files.read_records(entry.path)
    if result.complete_bytes == 0:
      os.remove(entry.path)
      continue
    if result.truncated:
      os.truncate(entry.path, result.complete_bytes)
    os.rename(entry.path, os.path.join(directory, final))
    salvaged.append(final)
    log.warning('Recovered %d records of an unfinished log file as %s', len(result.records), final)
  return salvaged


class RequestLogger:
  """Bounded buffer + writer thread producing rotated, finalized PredictionLog files.

  `submit` (on the event loop) only appends to a deque. Records are converted on the event loop
  right after their responses went out (one callback per loop iteration for everything that
  accumulated), so a single thread does the Python work and no request waits for the interpreter
  lock held by a busy logging thread; the writer thread wakes every `DRAIN_SECONDS` and only appends
  ready bytes to the file.
  """

  DRAIN_SECONDS = 0.02

  def __init__(self, config: RequestLogConfig, privacy: PrivacyFilter,
               metrics: metrics_lib.Metrics, rng: random.Random | None = None):
    self.config = config
    self._privacy = privacy
    self._metrics = metrics
    self._rng = rng or random.Random()
    self._records: collections.deque[LogRecord] = collections.deque()
    self._encoded: collections.deque[tuple[bytes, int]] = collections.deque()
    self._encode_scheduled = False
    self._stop = threading.Event()
    self._writer_id = os.urandom(3).hex()
    self._sequence = 0
    self._file = None
    self._temp_path = self._final_path = None
    self._opened_at = 0.0
    self._size = 0
    self._last_flush = self._last_retention = 0.0
    self._thread = None

  def start(self):
    os.makedirs(self.config.directory, exist_ok=True)
    salvage_leftovers(self.config.directory)
    self._enforce_retention()
    self._thread = threading.Thread(target=self._write_loop, name='request-log', daemon=True)
    self._thread.start()

  def sampled(self) -> bool:
    return self.config.sampling_rate >= 1.0 or self._rng.random() < self.config.sampling_rate

  def submit(self, record: LogRecord) -> bool:
    """Queue a record (call on the event loop); False, and counted, when the buffer is full."""
    if len(self._records) + len(self._encoded) >= self.config.buffer_records:
      self._metrics.inc(metrics_lib.LOG_DROPPED, reason='buffer_full')
      return False
    self._records.append(record)
    if not self._encode_scheduled:
      self._encode_scheduled = True
      asyncio.get_running_loop().call_soon(self._encode_queued)
    return True

  def close(self):
    """Write everything buffered, finalize the open file, stop the writer."""
    if self._thread is None:
      return
    self._stop.set()
    self._thread.join()
    self._thread = None

  def _encode_queued(self):
    self._encode_scheduled = False
    self._encode_all()

  def _encode_all(self):
    """Serialize and frame every queued record (privacy rules applied)."""
    while self._records:
      record = self._records.popleft()
      try:
        logs = serialized_prediction_logs(record, self._privacy, self.config.sampling_rate)
      except Exception:  # pylint: disable=broad-except  # A bad record must not stop logging.
        log.exception('Cannot convert a request to a PredictionLog; dropped')
        self._metrics.inc(metrics_lib.LOG_DROPPED, reason='conversion_error')
        continue
      self._encoded.append((b''.join(log_files.frame_record(p) for p in logs), len(logs)))

  def _write_loop(self):
    while not self._stop.wait(self.DRAIN_SECONDS):
      self._write_encoded()
      now = time.time()
      if now - self._last_flush >= self.config.flush_interval_seconds:
        self._last_flush = now
        self._flush_and_maybe_rotate()
    self._encode_all()  # Whatever the event loop had no turn to convert before shutdown.
    self._write_encoded()
    self._finalize()

  def _write_encoded(self):
    written = 0
    while self._encoded:
      framed, count = self._encoded.popleft()
      written += self._write(framed, count)
    if written:
      self._metrics.inc(metrics_lib.LOG_WRITTEN, written)

  def _write(self, framed: bytes, count: int) -> int:
    """Append one request's framed PredictionLogs to the open file; the records written."""
    try:
      if self._file is None:
        self._open()
      self._file.write(framed)
      self._size += len(framed)
    except OSError as e:
      log.error('Cannot write the request log: %s; %d records dropped', e, count)
      self._metrics.inc(metrics_lib.LOG_DROPPED, count, reason='write_error')
      self._abandon()
      return 0
    if log_files.should_rotate(self._size, self._opened_at, time.time(),
                               self.config.max_file_bytes, self.config.max_file_age_seconds):
      self._finalize()
    return count

  def _open(self):
    self._sequence += 1
    self._opened_at = time.time()
    final = log_files.final_name(self._opened_at, self._sequence, self._writer_id)
    self._final_path = os.path.join(self.config.directory, final)
    self._temp_path = os.path.join(self.config.directory, log_files.temp_name(final))
    self._file = open(self._temp_path, 'wb')
    self._size = 0

  def _flush_and_maybe_rotate(self):
    if self._file is None:
      return
    try:
      self._file.flush()
    except OSError as e:
      log.error('Cannot flush the request log: %s', e)
      self._abandon()
      return
    if log_files.should_rotate(self._size, self._opened_at, time.time(),
                               self.config.max_file_bytes, self.config.max_file_age_seconds):
      self._finalize()
    elif time.time() - self._last_retention > RETENTION_CHECK_SECONDS:
      self._enforce_retention()

  def _finalize(self):
    """Flush, fsync, close and rename the open file so readers see it, whole."""
    if self._file is None:
      return
    try:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()
      os.rename(self._temp_path, self._final_path)
      self._metrics.inc(metrics_lib.LOG_FILES)
    except OSError as e:
      log.error('Cannot finalize request log file %s: %s', self._temp_path, e)
    self._file = None
    self._enforce_retention()

  def _abandon(self):
    try:
      if self._file is not None:
        self._file.close()
    except OSError:
      pass
    self._file = None

  def _enforce_retention(self):
    self._last_retention = time.time()
    try:
      files = log_files.list_log_files(self.config.directory)
      for doomed in log_files.files_to_delete(files, time.time(),
                                              self.config.retention_max_age_seconds,
                                              self.config.retention_max_total_bytes):
        os.remove(os.path.join(self.config.directory, doomed.name))
        log.info('Retention: deleted request log file %s', doomed.name)
    except OSError as e:
      log.error('Retention check of %s failed: %s', self.config.directory, e)
