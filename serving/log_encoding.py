"""Fast wire-format encoding of predict PredictionLogs (the request-logging hot path).

Building `PredictionLog` messages through the protobuf API costs ~40 us per record, which at
thousands of requests per second would take a large share of a core. Protobuf's wire format is a
concatenation of fields, so a predict log can be written directly: static parts (model spec,
sampling config, tags) are encoded once per version and cached, and tensors of the common dtypes
are written from their raw bytes. The result parses as the same
`tensorflow_serving.apis.prediction_log_pb2.PredictionLog` (the tests compare both encodings).
Dtypes without a fast path return None so the caller falls back to the protobuf API.

Arrays travel from the server to the log writer *packed* (`pack_array`): `(dtype.str, shape, raw
bytes)`, or `('O', shape, [values])` for object arrays. Packing is cheap, pickles fast, and the
encoder reads the bytes as they are; `unpack_array` rebuilds the numpy array where one is needed.
"""
import functools
import struct

import numpy as np

# tensorflow.DataType enum values for the dtypes encoded here, by numpy's dtype.str.
_DTYPES = {'<f4': 1, '<f8': 2, '<i4': 3, '|u1': 4, '<i8': 9, '|b1': 10}
DT_STRING = 7
OBJECT = 'O'


def pack_array(array: np.ndarray) -> tuple:
  """(dtype.str, shape, bytes), or ('O', shape, list) for an object array."""
  if array.dtype == object:
    return (OBJECT, array.shape, array.ravel().tolist())
  return (array.dtype.str, array.shape, array.tobytes())


def unpack_array(packed: tuple) -> np.ndarray:
  dtype, shape, data = packed
  if dtype == OBJECT:
    array = np.empty(len(data), dtype=object)
    array[:] = data
    return array.reshape(shape)
  return np.frombuffer(data, dtype=dtype).reshape(shape)


def rows(packed: tuple) -> int | None:
  """The leading (batch) dimension, None for a scalar."""
  shape = packed[1]
  return shape[0] if shape else None


def row(packed: tuple, index: int, count: int) -> tuple:
  """Row `index` of a packed array of `count` rows, as a packed array of one row."""
  dtype, shape, data = packed
  size = len(data) // count
  return (dtype, (1,) + tuple(shape[1:]), data[index * size:(index + 1) * size])


def _varint_bytes(value: int) -> bytes:
  out = bytearray()
  value &= (1 << 64) - 1
  while value >= 0x80:
    out.append((value & 0x7f) | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


# Every varint below 2**14 (one or two bytes: field tags, and the lengths of nearly all fields of
# a logged request) precomputed: one list index instead of a loop on the hot path.
_SMALL_LIMIT = 1 << 14
_SMALL_VARINTS = [_varint_bytes(i) for i in range(_SMALL_LIMIT)]


def varint(value: int) -> bytes:
  """Base-128 varint (negative numbers as their 64-bit two's complement)."""
  if 0 <= value < _SMALL_LIMIT:
    return _SMALL_VARINTS[value]
  return _varint_bytes(value)


_LENGTH_DELIMITED_TAGS = [varint(n << 3 | 2) for n in range(16)]


def length_delimited(field_number: int, payload: bytes) -> bytes:
  size = len(payload)
  return (_LENGTH_DELIMITED_TAGS[field_number] +
          (_SMALL_VARINTS[size] if size < _SMALL_LIMIT else _varint_bytes(size)) + payload)


def varint_field(field_number: int, value: int) -> bytes:
  return _SMALL_VARINTS[field_number << 3] + varint(value)


@functools.lru_cache(maxsize=256)
def _shape(dims: tuple[int, ...]) -> bytes:
  """TensorShapeProto {dim {size}} (field 2 of TensorProto)."""
  return length_delimited(2, b''.join(length_delimited(2, varint_field(1, d)) for d in dims))


_STRING_PREFIX = varint_field(1, DT_STRING)
_NUMERIC_PREFIX = {dtype: varint_field(1, enum) for dtype, enum in _DTYPES.items()}


def tensor(packed: tuple) -> bytes | None:
  """A serialized TensorProto of a packed array, or None when its dtype has no fast path."""
  dtype, shape, data = packed
  if dtype == OBJECT:
    parts = [_STRING_PREFIX, _shape(shape)]
    tag = _LENGTH_DELIMITED_TAGS[8]  # string_val
    for value in data:
      if type(value) is not bytes:  # pylint: disable=unidiomatic-typecheck
        return None
      size = len(value)
      parts += (tag, _SMALL_VARINTS[size] if size < _SMALL_LIMIT else _varint_bytes(size), value)
    return b''.join(parts)
  prefix = _NUMERIC_PREFIX.get(dtype)
  if prefix is None:
    return None
  return prefix + _shape(shape) + length_delimited(4, data)


@functools.lru_cache(maxsize=256)
def model_spec(name: str, version: int, signature_name: str) -> bytes:
  """A serialized ModelSpec {name, version {value}, signature_name}."""
  return (length_delimited(1, name.encode('utf-8')) +
          length_delimited(2, varint_field(1, version)) +
          length_delimited(3, signature_name.encode('utf-8')))


@functools.lru_cache(maxsize=256)
def _static_parts(name: str, version: int, signature_name: str,
                  sampling_rate: float) -> tuple[bytes, bytes, bytes]:
  """LogMetadata's fixed fields, and the ModelSpec as field 1 of PredictRequest and as field 2 of
  PredictResponse: one cache look-up a record."""
  spec = model_spec(name, version, signature_name)
  metadata = (length_delimited(1, spec) +
              length_delimited(2, b'\x09' + struct.pack('<d', sampling_rate)) +
              length_delimited(3, b'serve'))
  return metadata, length_delimited(1, spec), length_delimited(2, spec)


@functools.lru_cache(maxsize=16)
def _timestamp_field(timestamp_secs: int) -> bytes:
  """LogMetadata.timestamp_secs (the same for every record of a second)."""
  return varint_field(4, timestamp_secs)


@functools.lru_cache(maxsize=1024)
def _map_key(alias: str) -> bytes:
  return length_delimited(1, alias.encode('utf-8'))


def _tensor_map(field_number: int, arrays: dict) -> bytes | None:
  parts = []
  for alias, array in arrays.items():
    encoded = tensor(array)
    if encoded is None:
      return None
    parts.append(length_delimited(field_number, _map_key(alias) + length_delimited(2, encoded)))
  return b''.join(parts)


def predict_log(name: str, version: int, signature_name: str, sampling_rate: float,
                timestamp_secs: int, request_origin: str, inputs: dict, outputs: dict,
                output_filter=()) -> bytes | None:
  """A serialized PredictionLog {log_metadata, predict_log {request, response}} or None.

  `inputs` and `outputs` map aliases to packed arrays."""
  request_inputs = _tensor_map(2, inputs)
  response_outputs = _tensor_map(1, outputs)
  if request_inputs is None or response_outputs is None:
    return None
  metadata, request_spec, response_spec = _static_parts(name, version, signature_name,
                                                        sampling_rate)
  metadata += _timestamp_field(timestamp_secs) + length_delimited(6, request_origin.encode('utf-8'))
  request = request_spec + request_inputs
  if output_filter:
    request += b''.join(length_delimited(3, f.encode('utf-8')) for f in output_filter)
  return (length_delimited(1, metadata) +
          length_delimited(6, length_delimited(1, request) +
                           length_delimited(2, response_outputs + response_spec)))
