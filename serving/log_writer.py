"""The request-log writer process: records in, rotated and finalized PredictionLog files out.

`serving.request_log.RequestLogger` starts it as `python -m serving.log_writer` and talks to it
through two pipes:
- stdin: length-prefixed pickled messages (`request_log.frame_message`). The first carries the
  settings (a `RequestLogConfig` as a dict, and the `PrivacyFilter`); each later one a list of
  packed `LogRecord`s (`request_log.pack_record`).
- stdout: `ready 1` once it ignores SIGINT and SIGTERM, then a line per change of its counters,
  `written N`, `dropped REASON N` or `files N`, which the server adds to its Prometheus metrics.

Here the records become serialized `tensorflow_serving.apis.prediction_log_pb2.PredictionLog`s
(privacy rules applied first), framed as TFRecords and appended to a hidden temporary file, which
is renamed to its final name when it is big or old enough, or at the end. Retention (age, total
size) is enforced after every rotation and once a minute. At start-up, unfinished files left by a
writer that was killed are salvaged up to their last whole record.

The process ends when the server closes the pipe (end of file): it writes what it received,
finalizes the open file and exits. It ignores SIGINT and SIGTERM, which a terminal or a process
manager may send to the server's whole process group: the server decides when logging ends. When
the server itself is killed, the pipe closes too, so the records already handed over still reach
a finalized file.

TensorFlow is imported only when a record needs the protobuf API (classify / regress logs, dtypes
without a fast encoding, privacy rules): the common predict log is written without it.
"""
import dataclasses
import logging
import os
import pickle
import select
import signal
import sys
import time
import types

from serving import log_encoding
from serving import log_files
from serving import request_log
from serving.privacy import PrivacyFilter
from serving.request_log import LogRecord

log = logging.getLogger('serving.log_writer')
RETENTION_CHECK_SECONDS = 60.0
REPORT_SECONDS = 0.1  # Counter reports at most this often: each one wakes the server's loop.
READ_BYTES = 1 << 20


def split_by_example(record: LogRecord) -> list[tuple[int | None, LogRecord]]:
  """[(example index, one-example record)], or [(None, record)] when it cannot be split.

  `record` has packed arrays. A request carrying several examples is logged as one PredictionLog
  per example (when every input and output leads with the batch dimension), which is what TFX's
  BulkInferrer writes and what `tfx.components.bulk_inferrer.prediction_to_example_utils.convert`
  reads (it takes the first example of a record).
  """
  row = log_encoding.row
  if record.kind == 'predict':
    counts = {log_encoding.rows(a) for a in (*record.inputs.values(), *record.outputs.values())}
    if len(counts) != 1 or None in counts:
      return [(None, record)]
    count = counts.pop()
    if count == 1:
      return [(None, record)]
    return [(i, dataclasses.replace(
        record, inputs={k: row(v, i, count) for k, v in record.inputs.items()},
        outputs={k: row(v, i, count) for k, v in record.outputs.items()})) for i in range(count)]
  count = len(record.examples)
  if count == 1:
    return [(None, record)]
  piece = lambda packed, i: None if packed is None else row(packed, i, count)
  return [(i, dataclasses.replace(record, examples=record.examples[i:i + 1],
                                  classes=piece(record.classes, i),
                                  scores=piece(record.scores, i), values=piece(record.values, i)))
          for i in range(count)]


def _origin(record: LogRecord, index: int | None) -> str:
  return (request_log.REQUEST_ID_PREFIX + record.request_id +
          ('' if index is None else f';example={index}'))


def _private_inputs(record: LogRecord, privacy: PrivacyFilter) -> dict:
  inputs = dict(record.inputs)
  packed = inputs.get(privacy.example_input_key)
  if packed is not None and packed[0] == log_encoding.OBJECT:
    inputs[privacy.example_input_key] = (
        packed[0], packed[1], [privacy.apply_serialized(v) for v in packed[2]])
  return inputs


def serialized_prediction_logs(record: LogRecord, privacy: PrivacyFilter,
                               sampling_rate: float) -> list[bytes]:
  """One serialized PredictionLog per example of a record with packed arrays (as the writer
  receives it: `LogRecord(*request_log.pack_record(record))`), privacy rules applied to every
  logged tf.Example.

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
      encoded = prediction_log_message(piece, index, privacy, sampling_rate).SerializeToString()
    serialized.append(encoded)
  return serialized


def prediction_log_message(record: LogRecord, index: int | None, privacy: PrivacyFilter,
                           sampling_rate: float):
  """The PredictionLog of a record with packed arrays, built through the protobuf API (any dtype,
  any kind)."""
  # pylint: disable=import-outside-toplevel  # TensorFlow only for records that need it.
  from tensorflow_serving.apis import classification_pb2
  from tensorflow_serving.apis import predict_pb2
  from tensorflow_serving.apis import prediction_log_pb2
  from tensorflow_serving.apis import regression_pb2
  from serving import protos
  tensor = lambda packed: protos.tensor_from_array(log_encoding.unpack_array(packed))
  array = lambda packed: None if packed is None else log_encoding.unpack_array(packed)
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
    for alias, packed in record.inputs.items():
      request.inputs[alias].CopyFrom(tensor(packed))
    response = predict_pb2.PredictResponse(model_spec=spec)
    for alias, packed in record.outputs.items():
      response.outputs[alias].CopyFrom(tensor(packed))
    prediction_log.predict_log.request.CopyFrom(request)
    prediction_log.predict_log.response.CopyFrom(response)
    return prediction_log
  examples = [privacy.apply_serialized(e) for e in record.examples]
  if record.kind == 'classify':
    prediction_log.classify_log.request.CopyFrom(classification_pb2.ClassificationRequest(
        model_spec=spec, input=protos.example_list_input(examples)))
    prediction_log.classify_log.response.CopyFrom(classification_pb2.ClassificationResponse(
        model_spec=spec, result=protos.classification_result(array(record.classes),
                                                             array(record.scores))))
  else:
    prediction_log.regress_log.request.CopyFrom(regression_pb2.RegressionRequest(
        model_spec=spec, input=protos.example_list_input(examples)))
    prediction_log.regress_log.response.CopyFrom(regression_pb2.RegressionResponse(
        model_spec=spec, result=protos.regression_result(array(record.values))))
  return prediction_log


def salvage_leftovers(directory: str) -> list[str]:
  """Finalize temporary files left by a killed writer: keep their whole records, rename them.

  Assumes one writer writes a log directory at a time.
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


class LogFileWriter:
  """Appends records to the open file; rotates, finalizes and enforces retention.

  `settings` has the fields of `serving.config.RequestLogConfig`. Counts what it wrote, dropped
  and finalized until `take_counts()`.
  """

  def __init__(self, settings, privacy: PrivacyFilter):
    self.settings = settings
    self._privacy = privacy
    self._writer_id = os.urandom(3).hex()
    self._sequence = 0
    self._file = None
    self._temp_path = self._final_path = None
    self._opened_at = 0.0
    self._size = 0
    self._last_flush = self._last_retention = 0.0
    self._written = self._files = 0
    self._dropped: dict[str, int] = {}

  def start(self):
    """Salvage what a killed writer left, then apply retention."""
    os.makedirs(self.settings.directory, exist_ok=True)
    salvage_leftovers(self.settings.directory)
    self._enforce_retention()

  def take_counts(self) -> list[tuple[str, ...]]:
    """[('written', n) | ('dropped', reason, n) | ('files', n)] since the last call."""
    counts = [('written', self._written)] if self._written else []
    counts += [('dropped', reason, n) for reason, n in self._dropped.items()]
    counts += [('files', self._files)] if self._files else []
    self._written = self._files = 0
    self._dropped = {}
    return counts

  def _drop(self, reason: str, count: int):
    self._dropped[reason] = self._dropped.get(reason, 0) + count

  def write(self, records: list[LogRecord]):
    """Serialize requests' PredictionLogs (arrays packed) and append them in one write; a bad
    record is dropped. The file rotates after the write that makes it big or old enough."""
    framed = []
    for record in records:
      try:
        logs = serialized_prediction_logs(record, self._privacy, self.settings.sampling_rate)
      except Exception:  # pylint: disable=broad-except  # A bad record must not stop logging.
        log.exception('Cannot convert a request to a PredictionLog; dropped')
        self._drop('conversion_error', 1)
        continue
      framed += map(log_files.frame_record, logs)
    if not framed:
      return
    data = b''.join(framed)
    try:
      if self._file is None:
        self._open()
      self._file.write(data)
      self._size += len(data)
    except OSError as e:
      log.error('Cannot write the request log: %s; %d records dropped', e, len(framed))
      self._drop('write_error', len(framed))
      self._abandon()
      return
    self._written += len(framed)
    if log_files.should_rotate(self._size, self._opened_at, time.time(),
                               self.settings.max_file_bytes, self.settings.max_file_age_seconds):
      self.finalize()

  def tick(self, now: float):
    """Flush every `flush_interval_seconds`; rotate old files; retention once a minute."""
    if now - self._last_flush < self.settings.flush_interval_seconds:
      return
    self._last_flush = now
    if self._file is not None:
      try:
        self._file.flush()
      except OSError as e:
        log.error('Cannot flush the request log: %s', e)
        self._abandon()
        return
      if log_files.should_rotate(self._size, self._opened_at, now, self.settings.max_file_bytes,
                                 self.settings.max_file_age_seconds):
        self.finalize()
        return
    if now - self._last_retention > RETENTION_CHECK_SECONDS:
      self._enforce_retention()

  def _open(self):
    self._sequence += 1
    self._opened_at = time.time()
    final = log_files.final_name(self._opened_at, self._sequence, self._writer_id)
    self._final_path = os.path.join(self.settings.directory, final)
    self._temp_path = os.path.join(self.settings.directory, log_files.temp_name(final))
    self._file = open(self._temp_path, 'wb')  # pylint: disable=consider-using-with
    self._size = 0

  def finalize(self):
    """Flush, fsync, close and rename the open file so readers see it, whole."""
    if self._file is None:
      return
    try:
      self._file.flush()
      os.fsync(self._file.fileno())
      self._file.close()
      os.rename(self._temp_path, self._final_path)
      self._files += 1
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
      files = log_files.list_log_files(self.settings.directory)
      for doomed in log_files.files_to_delete(files, time.time(),
                                              self.settings.retention_max_age_seconds,
                                              self.settings.retention_max_total_bytes):
        os.remove(os.path.join(self.settings.directory, doomed.name))
        log.info('Retention: deleted request log file %s', doomed.name)
    except OSError as e:
      log.error('Retention check of %s failed: %s', self.settings.directory, e)


def report_lines(counts: list[tuple[str, ...]]) -> bytes:
  return b''.join(' '.join(str(part) for part in count).encode('ascii') + b'\n'
                  for count in counts)


def serve_pipe(read_fd: int, report_fd: int):
  """Read settings, then records, from `read_fd` until end of file; report on `report_fd`."""
  messages = request_log.MessageReader()
  writer = None
  open_ended = True
  last_report = 0.0
  while open_ended:
    timeout = min(writer.settings.flush_interval_seconds, REPORT_SECONDS) if writer else None
    if select.select([read_fd], [], [], timeout)[0]:
      chunk = os.read(read_fd, READ_BYTES)
      open_ended = bool(chunk)
      for message in messages.feed(chunk):
        if writer is None:
          settings, privacy = pickle.loads(message)
          writer = LogFileWriter(types.SimpleNamespace(**settings), privacy)
          writer.start()
          continue
        writer.write([LogRecord(*fields) for fields in pickle.loads(message)])
    if writer is None:
      continue
    now = time.time()
    writer.tick(now)
    if not open_ended:
      writer.finalize()
    if now - last_report >= REPORT_SECONDS or not open_ended:
      last_report = now
      counts = writer.take_counts()
      if counts:
        os.write(report_fd, report_lines(counts))
  if messages.pending_bytes:
    log.error('The server closed the pipe in the middle of a message (%d bytes); ignored',
              messages.pending_bytes)


def main():
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  os.write(sys.stdout.fileno(), b'ready 1\n')
  logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                      format='request-log writer: %(levelname)s %(message)s')
  serve_pipe(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == '__main__':
  main()
