"""Request-log records -> tf.Examples: reading a time window of PredictionLog files, tolerantly.

The server (serving/log_writer.py) writes one `PredictionLog` per example into TFRecord files:
finalized ones are `prediction_log-<UTC>-<seq>-<writer>.tfrecord`, files being written are hidden
`.prediction_log-....tfrecord.tmp` and are never read here. Every record of every finalized file
is read (retention bounds the directory), and a record belongs to the window when
`window_start <= log_metadata.timestamp_secs < window_end` (either bound may be None: open).

Nothing in a log file is fatal; everything that is skipped is counted (`WindowCounts`):
- a record whose data checksum fails is skipped and reading goes on with the next record
  (`corrupt_records`); a record whose length header is damaged, or a file cut short (a crash
  while writing, a partial copy), cannot be framed: the reader searches forward for the next
  valid record (`resynced`), and the bytes it could not read are counted (`skipped_bytes`,
  `truncated_files`);
- a record that is not a PredictionLog (`not_a_prediction_log`), a log without the serialized
  tf.Example input (`no_example_input`), or an example that does not parse (for instance emptied
  by the server's privacy filter: `unparseable_example`) are counted by reason in `unconvertible`.

Each logged example becomes one `LoggedExample`: the logged tf.Example (privacy rules already
applied by the server), the prediction, model name/version, request id and example index (see
`serving.request_log.request_id_of` / `example_index_of`) and the timestamp.
`to_output_example` turns it into the tf.Example the ExampleGen writes: the logged features plus
the metadata features of `spec.py` (and the label when ground truth was joined).

Missing values are absent features, as on the training path (SpanRangeCsvExampleGen): a logged
feature with an empty value list is left out of the output (`empty_features_dropped`). A logged
example without a value for a feature the model requires (`required_features`: the schema's
always-present model features) is counted per feature (`missing_required`) and in total
(`examples_missing_required`): a producer that stopped sending a column shows up by name.

Pure logic on protos and numpy (no TFX import).
"""
import collections
import dataclasses
import os
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components.serving_log_gen import spec
from models import features
from serving import log_files
from serving import request_log

_HEADER_BYTES = 12      # uint64 length + masked crc32c of the length
_FOOTER_BYTES = 4       # masked crc32c of the data
MAX_RECORD_BYTES = 64 << 20   # a "length" beyond this is treated as a damaged header


class ConversionError(ValueError):
  """A record that cannot become an example; `reason` is the counter it is recorded under."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass
class LoggedExample:
  """One logged example with what the server knew about it."""
  serialized: bytes             # the logged tf.Example, as logged (it parses)
  prediction: Optional[float]
  model_name: str
  model_version: int            # -1 when the log has no version
  signature_name: str
  request_id: str
  example_index: int
  timestamp_secs: int
  reserved_present: Tuple[str, ...] = ()   # reserved feature names the logged example carries
  empty_present: Tuple[str, ...] = ()      # features logged with an empty value list
  missing_required: Tuple[str, ...] = ()   # required features the example has no value for

  @property
  def key(self) -> Tuple[str, int]:
    """What ground truth is joined on: (request id, example index in the request)."""
    return (self.request_id, self.example_index)

  @property
  def example(self) -> example_pb2.Example:
    return example_pb2.Example.FromString(self.serialized)


@dataclasses.dataclass
class WindowCounts:
  """What reading a window found and skipped; every field is a count."""
  files_read: int = 0
  temporary_files_ignored: int = 0
  other_files_ignored: int = 0
  unreadable_files: int = 0
  records_read: int = 0
  corrupt_records: int = 0
  resynced: int = 0
  truncated_files: int = 0
  skipped_bytes: int = 0
  records_outside_window: int = 0
  records_other_model: int = 0
  examples: int = 0
  missing_prediction: int = 0
  reserved_features_dropped: int = 0
  empty_features_dropped: int = 0
  examples_missing_required: int = 0
  missing_required: Dict[str, int] = dataclasses.field(default_factory=collections.Counter)
  unconvertible: Dict[str, int] = dataclasses.field(default_factory=collections.Counter)

  @property
  def num_unconvertible(self) -> int:
    return sum(self.unconvertible.values())

  def as_dict(self) -> Dict[str, object]:
    result = dataclasses.asdict(self)
    result['unconvertible'] = dict(sorted(self.unconvertible.items()))
    result['missing_required'] = dict(sorted(self.missing_required.items()))
    result['num_unconvertible'] = self.num_unconvertible
    return result


# ----------------------------------------------------------------------------- TFRecord framing

@dataclasses.dataclass
class FileRead:
  records: List[bytes]
  corrupt_records: int = 0
  resynced: int = 0
  skipped_bytes: int = 0
  truncated: bool = False


def _valid_header(data: bytes, offset: int) -> Optional[int]:
  """The record length at `offset` if its header checksum is valid and it fits the data."""
  if offset + _HEADER_BYTES > len(data):
    return None
  header = data[offset:offset + 8]
  (length,) = struct.unpack('<Q', header)
  (length_crc,) = struct.unpack('<I', data[offset + 8:offset + 12])
  if length_crc != log_files.masked_crc(header) or length > MAX_RECORD_BYTES:
    return None
  if offset + _HEADER_BYTES + length + _FOOTER_BYTES > len(data):
    return None
  return length


def _data_ok(data: bytes, offset: int, length: int) -> bool:
  start = offset + _HEADER_BYTES
  (data_crc,) = struct.unpack('<I', data[start + length:start + length + _FOOTER_BYTES])
  return data_crc == log_files.masked_crc(data[start:start + length])


def _next_record(data: bytes, start: int) -> Optional[int]:
  """The offset of the next framable record with a valid checksum at or after `start`."""
  offset = start
  while offset + _HEADER_BYTES <= len(data):
    length = _valid_header(data, offset)
    if length is not None and _data_ok(data, offset, length):
      return offset
    offset += 1
  return None


def read_tolerant(data: bytes) -> FileRead:
  """Every readable record of TFRecord bytes, skipping corrupt records and damaged stretches.

  A record with a valid header but a bad data checksum is skipped and counted; at a damaged
  header the reader searches forward for the next valid record (a file cut in the middle of a
  record ends there: `truncated`).
  """
  result = FileRead(records=[])
  offset = 0
  while offset < len(data):
    length = _valid_header(data, offset)
    if length is not None:
      end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
      if _data_ok(data, offset, length):
        result.records.append(data[offset + _HEADER_BYTES:offset + _HEADER_BYTES + length])
      else:
        result.corrupt_records += 1
        result.skipped_bytes += end - offset
      offset = end
      continue
    found = _next_record(data, offset + 1)
    if found is None:
      result.skipped_bytes += len(data) - offset
      result.truncated = True
      break
    result.resynced += 1
    result.skipped_bytes += found - offset
    offset = found
  return result


# ----------------------------------------------------------------------------- file selection

def list_window_files(log_dir: str, counts: Optional[WindowCounts] = None) -> List[str]:
  """Finalized log files of `log_dir` in name (= creation time) order; counts what is ignored.

  A missing directory is an empty window, not an error.
  """
  counts = counts if counts is not None else WindowCounts()
  if not log_dir or not os.path.isdir(log_dir):
    return []
  finalized = []
  for entry in os.scandir(log_dir):
    if not entry.is_file():
      continue
    if log_files.is_log_file(entry.name):
      finalized.append(entry.path)
    elif entry.name.endswith(log_files.TEMP_SUFFIX):
      counts.temporary_files_ignored += 1
    else:
      counts.other_files_ignored += 1
  return sorted(finalized, key=os.path.basename)


# ----------------------------------------------------------------------------- record conversion

def _tensor_floats(tensor) -> np.ndarray:
  """Float values of a numeric TensorProto (content or repeated fields), flattened."""
  size = 1
  for dim in tensor.tensor_shape.dim:
    size *= dim.size
  dtype = {types_pb2.DT_FLOAT: '<f4', types_pb2.DT_DOUBLE: '<f8', types_pb2.DT_HALF: '<f2'}.get(
      tensor.dtype)
  if dtype is not None and tensor.tensor_content:
    values = np.frombuffer(tensor.tensor_content, dtype=dtype).astype(np.float64)
  elif tensor.dtype == types_pb2.DT_FLOAT:
    values = np.asarray(tensor.float_val, np.float64)
  elif tensor.dtype == types_pb2.DT_DOUBLE:
    values = np.asarray(tensor.double_val, np.float64)
  elif tensor.dtype == types_pb2.DT_HALF:
    values = np.asarray(tensor.half_val, np.uint16).view(np.float16).astype(np.float64)
  else:
    return np.zeros(0)
  if values.size == 1 and size > 1:      # make_tensor_proto stores a constant tensor once
    values = np.full(size, values[0])
  return values


def _examples_and_predictions(prediction_log: prediction_log_pb2.PredictionLog,
                              input_key: str, output_key: str
                              ) -> Tuple[List[bytes], List[Optional[float]]]:
  kind = prediction_log.WhichOneof('log_type')
  if kind == 'predict_log':
    inputs = prediction_log.predict_log.request.inputs
    if input_key not in inputs or inputs[input_key].dtype != types_pb2.DT_STRING:
      raise ConversionError('no_example_input',
                            f'predict log without a string input {input_key!r}')
    serialized = list(inputs[input_key].string_val)
    outputs = prediction_log.predict_log.response.outputs
    scores = _tensor_floats(outputs[output_key]) if output_key in outputs else np.zeros(0)
    per_example = scores.size // len(serialized) if serialized else 0
    if per_example >= 1:
      # [batch, 1] probabilities (or [batch, k]: the last column is the positive class).
      predictions = [float(scores[(i + 1) * per_example - 1]) for i in range(len(serialized))]
    else:
      predictions = [None] * len(serialized)
    return serialized, predictions
  if kind in ('classify_log', 'regress_log'):
    log = getattr(prediction_log, kind)
    request_input = log.request.input
    which = request_input.WhichOneof('kind')
    if which == 'example_list':
      examples = list(request_input.example_list.examples)
    elif which == 'example_list_with_context':
      context = request_input.example_list_with_context.context
      examples = []
      for example in request_input.example_list_with_context.examples:
        merged = example_pb2.Example()
        merged.CopyFrom(context)
        merged.MergeFrom(example)
        examples.append(merged)
    else:
      raise ConversionError('no_example_input', f'{kind} without examples')
    serialized = [e.SerializeToString() for e in examples]
    predictions: List[Optional[float]] = [None] * len(serialized)
    if kind == 'regress_log':
      values = [r.value for r in log.response.result.regressions]
      if len(values) == len(serialized):
        predictions = values
    else:
      classifications = log.response.result.classifications
      if len(classifications) == len(serialized):
        predictions = [(max((c.score for c in item.classes if c.label == '1'), default=None)
                        if item.classes else None) for item in classifications]
    return serialized, predictions
  raise ConversionError('no_example_input', f'unsupported log type {kind!r}')


@dataclasses.dataclass
class ConvertedRecord:
  examples: List[LoggedExample]
  unparseable_examples: int = 0     # examples of the record that are not tf.Examples


def parse_prediction_log(record: bytes) -> prediction_log_pb2.PredictionLog:
  """A serialized PredictionLog; ConversionError('not_a_prediction_log') if it is not one."""
  prediction_log = prediction_log_pb2.PredictionLog()
  try:
    prediction_log.ParseFromString(record)
  except DecodeError as e:
    raise ConversionError('not_a_prediction_log', f'not a PredictionLog: {e}') from None
  if prediction_log.WhichOneof('log_type') is None:
    raise ConversionError('not_a_prediction_log', 'PredictionLog without a log')
  return prediction_log


def convert_record(record: bytes, input_key: str = features.SERVING_INPUT_KEY,
                   output_key: str = features.PREDICTION_KEY,
                   required_features: Sequence[str] = ()) -> ConvertedRecord:
  """The examples of one serialized PredictionLog; ConversionError(reason) if there are none."""
  return convert_prediction_log(parse_prediction_log(record), input_key, output_key,
                                required_features)


def required_features(schema: schema_pb2.Schema,
                      model_features: Sequence[str] = features.MODEL_FEATURES) -> Tuple[str, ...]:
  """The features a served example must carry: model features the schema says are always
  present (`presence.min_fraction` 1) in the SERVING environment."""
  serving = [f for f in schema.feature if 'SERVING' not in f.not_in_environment]
  return tuple(f.name for f in serving
               if f.name in model_features and f.presence.min_fraction >= 1.0)


def _has_values(feature) -> bool:
  kind = feature.WhichOneof('kind')
  return kind is not None and len(getattr(feature, kind).value) > 0


def _keys_of(prediction_log: prediction_log_pb2.PredictionLog,
             input_key: str) -> List[Tuple[str, int]]:
  """The (request id, example index) keys of a log, without parsing its examples."""
  count = 1
  if prediction_log.WhichOneof('log_type') == 'predict_log':
    inputs = prediction_log.predict_log.request.inputs
    if input_key in inputs:
      count = max(1, len(inputs[input_key].string_val))
  request_id = request_log.request_id_of(prediction_log)
  try:
    first = request_log.example_index_of(prediction_log)
  except ValueError:
    first = 0
  return [(request_id, first + i) for i in range(count)]


def convert_prediction_log(prediction_log: prediction_log_pb2.PredictionLog,
                           input_key: str = features.SERVING_INPUT_KEY,
                           output_key: str = features.PREDICTION_KEY,
                           required_features: Sequence[str] = ()) -> ConvertedRecord:
  """The examples of a PredictionLog. An example that does not parse (emptied by the privacy
  filter, corrupt) is left out and counted; if none parses: ConversionError('unparseable_example').
  Each example notes its features with an empty value list and the `required_features` it has no
  value for.
  """
  metadata = prediction_log.log_metadata
  serialized, predictions = _examples_and_predictions(prediction_log, input_key, output_key)
  if not serialized:
    raise ConversionError('no_example_input', 'log without examples')
  version = metadata.model_spec.version.value if metadata.model_spec.HasField('version') else -1
  request_id = request_log.request_id_of(prediction_log)
  try:
    first_index = request_log.example_index_of(prediction_log)
  except ValueError:
    first_index = 0
  result = ConvertedRecord(examples=[])
  example = example_pb2.Example()
  for i, (data, prediction) in enumerate(zip(serialized, predictions)):
    try:
      if not data:
        raise DecodeError('empty')
      example.ParseFromString(data)
    except DecodeError:
      result.unparseable_examples += 1
      continue
    feature_map = example.features.feature
    empty = tuple(sorted(n for n, f in feature_map.items() if not _has_values(f)))
    result.examples.append(LoggedExample(
        serialized=data, prediction=prediction, model_name=metadata.model_spec.name,
        model_version=version, signature_name=metadata.model_spec.signature_name,
        request_id=request_id, example_index=first_index + i,
        timestamp_secs=metadata.timestamp_secs,
        reserved_present=tuple(n for n in spec.RESERVED_FEATURES if n in feature_map),
        empty_present=empty,
        missing_required=tuple(n for n in required_features
                               if n not in feature_map or n in empty)))
  if not result.examples:
    raise ConversionError('unparseable_example',
                          'no logged example is a tf.Example (emptied by the privacy filter, '
                          'or corrupt)')
  return result


def to_output_example(logged: LoggedExample, label: Optional[int]) -> Tuple[bytes, int, int]:
  """(serialized output tf.Example, reserved features dropped, empty features dropped).

  Features of the logged example that carry a reserved name (the label, the metadata features)
  are dropped first: only the ground truth joined here may become the label. Features with an
  empty value list are dropped too: a missing value is an absent feature. The added features
  are appended as a second serialized Example: protobuf merges concatenated messages (map entries
  of both), which every parser (tf.io.parse_example, tfx_bsl, protobuf) reads as one Example, and
  the logged bytes need no re-serialization.
  """
  base = logged.serialized
  reserved = set(logged.reserved_present)
  removed = reserved | set(logged.empty_present)
  if removed:
    example = logged.example
    for name in removed:
      del example.features.feature[name]
    base = example.SerializeToString()
  added = example_pb2.Example()
  feature_map = added.features.feature
  if logged.prediction is not None:
    feature_map[spec.PREDICTION_FEATURE].float_list.value.append(logged.prediction)
  feature_map[spec.MODEL_VERSION_FEATURE].int64_list.value.append(logged.model_version)
  feature_map[spec.REQUEST_ID_FEATURE].bytes_list.value.append(logged.request_id.encode('utf-8'))
  feature_map[spec.TIMESTAMP_FEATURE].int64_list.value.append(logged.timestamp_secs)
  if label is not None:
    feature_map[features.LABEL_KEY].int64_list.value.append(int(label))
  return base + added.SerializeToString(), len(reserved), len(removed - reserved)


# ----------------------------------------------------------------------------- windows

def _in_window(timestamp: int, window_start: Optional[int], window_end: Optional[int]) -> bool:
  return ((window_start is None or timestamp >= window_start) and
          (window_end is None or timestamp < window_end))


@dataclasses.dataclass
class WindowRead:
  examples: List[LoggedExample]
  counts: WindowCounts
  keys_outside_window: set     # (request id, example index) of records logged outside it


def iter_log_records(path: str, counts: WindowCounts) -> Iterator[bytes]:
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError:
    counts.unreadable_files += 1
    return
  counts.files_read += 1
  read = read_tolerant(data)
  counts.corrupt_records += read.corrupt_records
  counts.resynced += read.resynced
  counts.skipped_bytes += read.skipped_bytes
  counts.truncated_files += int(read.truncated)
  yield from read.records


def read_window(log_dir: str, window_start: Optional[int] = None,
                window_end: Optional[int] = None, model_name: Optional[str] = None,
                input_key: str = features.SERVING_INPUT_KEY,
                output_key: str = features.PREDICTION_KEY,
                required_features: Sequence[str] = ()) -> WindowRead:
  """Every logged example of `log_dir` in the window, with the counts of what was skipped.

  `model_name`: keep only logs of that model (others are counted in `records_other_model`).
  `required_features`: counted per feature when an example has no value for one.
  """
  if window_start is not None and window_end is not None and window_end <= window_start:
    raise ValueError(f'empty window: window_end {window_end} <= window_start {window_start}')
  counts = WindowCounts()
  examples: List[LoggedExample] = []
  outside = set()
  for path in list_window_files(log_dir, counts):
    for record in iter_log_records(path, counts):
      counts.records_read += 1
      try:
        prediction_log = parse_prediction_log(record)
        metadata = prediction_log.log_metadata
        if not _in_window(metadata.timestamp_secs, window_start, window_end):
          counts.records_outside_window += 1
          outside.update(_keys_of(prediction_log, input_key))
          continue
        if model_name and metadata.model_spec.name != model_name:
          counts.records_other_model += 1
          continue
        converted = convert_prediction_log(prediction_log, input_key, output_key,
                                           required_features)
      except ConversionError as e:
        counts.unconvertible[e.reason] += 1
        continue
      if converted.unparseable_examples:
        counts.unconvertible['unparseable_example'] += converted.unparseable_examples
      for item in converted.examples:
        counts.examples += 1
        counts.missing_prediction += int(item.prediction is None)
        counts.examples_missing_required += int(bool(item.missing_required))
        counts.missing_required.update(item.missing_required)
        examples.append(item)
  return WindowRead(examples, counts, outside)


def model_versions(examples: List[LoggedExample]) -> Dict[int, int]:
  """{model version: number of examples} of a window."""
  return dict(sorted(collections.Counter(e.model_version for e in examples).items()))
