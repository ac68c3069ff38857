"""TF Serving's REST JSON <-> numpy tensors and tf.Examples (its `util/json_tensor.cc`).

- Predict: row format `{"instances": [...]}` or columnar `{"inputs": ...}`; binary strings as
  `{"b64": "..."}`; answers `{"predictions": ...}` or `{"outputs": ...}` respectively.
- Classify / regress: `{"examples": [{feature: value | [values]}], "context"?: {...}}` becomes
  serialized tf.Examples (ints and bools -> int64_list, decimals -> float_list, strings and b64 ->
  bytes_list); answers `{"results": ...}`.
- Floats are written in the shortest form that round-trips at their own precision (float32 0.2 is
  written `0.2`, not `0.20000000298023224`).
Every malformed body raises `ServingError(INVALID_ARGUMENT, ...)` naming the problem.
"""
import base64
import binascii
import dataclasses
import json
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2
from tensorflow.core.example import feature_pb2

from serving.errors import invalid_argument

MAX_RANK = 32
_NUMPY_DTYPES = {
    'DT_FLOAT': np.float32, 'DT_DOUBLE': np.float64, 'DT_HALF': np.float16,
    'DT_INT8': np.int8, 'DT_INT16': np.int16, 'DT_INT32': np.int32, 'DT_INT64': np.int64,
    'DT_UINT8': np.uint8, 'DT_UINT16': np.uint16, 'DT_UINT32': np.uint32,
    'DT_UINT64': np.uint64, 'DT_BOOL': np.bool_, 'DT_STRING': object,
}
_TYPE_NAMES = {'DT_FLOAT': 'float', 'DT_DOUBLE': 'double', 'DT_HALF': 'half', 'DT_BOOL': 'bool',
               'DT_STRING': 'string'}


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """A signature input or output: TF dtype name (e.g. 'DT_STRING') and shape (None = any rank;
  -1 = any size in that dimension)."""
  dtype: str
  shape: tuple[int, ...] | None = None


def numpy_dtype(dtype: str):
  if dtype not in _NUMPY_DTYPES:
    raise invalid_argument(f'Tensor dtype {dtype} is not supported by the JSON API')
  return _NUMPY_DTYPES[dtype]


def parse_json(body: bytes) -> Any:
  """The decoded JSON body, or 400 "JSON Parse error: ..."."""
  try:
    return json.loads(body.decode('utf-8'))
  except UnicodeDecodeError as e:
    raise invalid_argument(f'JSON Parse error: Invalid encoding in string (not UTF-8) at offset: '
                           f'{e.start}') from None
  except json.JSONDecodeError as e:
    raise invalid_argument(f'JSON Parse error: {e.msg} at offset: {e.pos}') from None
  except RecursionError:
    raise invalid_argument('JSON Parse error: document nested too deeply') from None


def _value_text(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 64 else text[:61] + '...'


def _json_type(value) -> str:
  if isinstance(value, bool):
    return 'Bool'
  if isinstance(value, (int, float)):
    return 'Number'
  if isinstance(value, str):
    return 'String'
  if value is None:
    return 'Null'
  return 'Object' if isinstance(value, dict) else 'Array'


def _wrong_type(value, dtype: str):
  expected = _TYPE_NAMES.get(dtype, dtype[3:].lower())
  return invalid_argument(f'JSON Value: {_value_text(value)} Type: {_json_type(value)} is not of '
                          f'expected type: {expected}')


def decode_b64(value: dict) -> bytes:
  """`{"b64": "<standard base64>"}` -> bytes."""
  if len(value) != 1 or not isinstance(value.get('b64'), str):
    raise invalid_argument(f'JSON Value: {_value_text(value)} not formatted correctly for base64 '
                           'data: expected {"b64": "<base64 string>"}')
  try:
    return base64.b64decode(value['b64'], validate=True)
  except (binascii.Error, ValueError):
    raise invalid_argument(f'Unable to base64 decode: {_value_text(value["b64"])}') from None


def _is_b64_object(value) -> bool:
  return isinstance(value, dict) and 'b64' in value


def _convert_leaf(value, dtype: str):
  if dtype == 'DT_STRING':
    if isinstance(value, str):
      return value.encode('utf-8')
    if isinstance(value, dict):
      return decode_b64(value)
    raise _wrong_type(value, dtype)
  if dtype == 'DT_BOOL':
    if isinstance(value, bool):
      return value
    raise _wrong_type(value, dtype)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise _wrong_type(value, dtype)
  if dtype in ('DT_FLOAT', 'DT_DOUBLE', 'DT_HALF'):
    return float(value)
  if not isinstance(value, int):
    raise _wrong_type(value, dtype)
  info = np.iinfo(_NUMPY_DTYPES[dtype])
  if not info.min <= value <= info.max:
    raise invalid_argument(f'JSON Value: {value} is out of range for type {dtype[3:].lower()}')
  return value


def _collect(value, dtype: str, leaves: list, depth: int) -> tuple[int, ...]:
  """Append the leaves of a nested list to `leaves`; return the shape (lists must be rectangular)."""
  if not isinstance(value, list):
    leaves.append(_convert_leaf(value, dtype))
    return ()
  if depth >= MAX_RANK:
    raise invalid_argument(f'Tensor nested deeper than the maximum rank {MAX_RANK}')
  if not value:
    return (0,)
  inner = _collect(value[0], dtype, leaves, depth + 1)
  for item in value[1:]:
    shape = _collect(item, dtype, leaves, depth + 1)
    if shape != inner:
      raise invalid_argument(f'Expecting tensor values of shape {list(inner)} but got '
                             f'{list(shape)}: lists of lists must be rectangular')
  return (len(value),) + inner


def to_array(value, spec: TensorSpec, alias: str) -> np.ndarray:
  """One JSON value (scalar or nested list) as a numpy array of the spec's dtype."""
  leaves: list = []
  shape = _collect(value, spec.dtype, leaves, 0)
  dtype = numpy_dtype(spec.dtype)
  if dtype is object:
    array = np.empty(len(leaves), dtype=object)
    array[:] = leaves
    return array.reshape(shape)
  return np.array(leaves, dtype=dtype).reshape(shape)


def _check_aliases(given: set[str], specs: dict[str, TensorSpec], where: str):
  missing, extra = sorted(set(specs) - given), sorted(given - set(specs))
  if missing or extra:
    raise invalid_argument(f'{where}: inputs do not match the signature; missing: {missing}, '
                           f'unexpected: {extra}, signature inputs: {sorted(specs)}')


@dataclasses.dataclass
class PredictBody:
  """A decoded predict request."""
  inputs: dict[str, np.ndarray]
  row_format: bool
  signature_name: str


def signature_name_of(doc) -> str:
  if not isinstance(doc, dict):
    raise invalid_argument('JSON Value: request body must be a JSON object')
  name = doc.get('signature_name', '')
  if not isinstance(name, str):
    raise invalid_argument("'signature_name' must be a string")
  return name or 'serving_default'


def predict_inputs(doc, specs: dict[str, TensorSpec]) -> PredictBody:
  """Decode a predict body against the signature's inputs."""
  signature_name = signature_name_of(doc)
  unknown = sorted(set(doc) - {'instances', 'inputs', 'signature_name'})
  if unknown:
    raise invalid_argument(f'Unknown key(s) in predict request: {unknown}; expected "instances" or '
                           '"inputs" and optionally "signature_name"')
  if ('instances' in doc) == ('inputs' in doc):
    raise invalid_argument("Missing 'inputs' or 'instances' key" if 'instances' not in doc else
                           "Not both of 'inputs' and 'instances' can be specified")
  if 'inputs' in doc:
    return PredictBody(_columnar_inputs(doc['inputs'], specs), False, signature_name)
  return PredictBody(_row_inputs(doc['instances'], specs), True, signature_name)


def _columnar_inputs(value, specs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
  if isinstance(value, dict) and not _is_b64_object(value):
    _check_aliases(set(value), specs, "'inputs'")
    return {alias: to_array(v, specs[alias], alias) for alias, v in value.items()}
  if len(specs) != 1:
    raise invalid_argument(f"'inputs' must be an object keyed by input name when the signature "
                           f'has {len(specs)} inputs: {sorted(specs)}')
  (alias, spec), = specs.items()
  return {alias: to_array(value, spec, alias)}


def _row_inputs(instances, specs: dict[str, TensorSpec]) -> dict[str, np.ndarray]:
  if not isinstance(instances, list):
    raise invalid_argument("Expecting 'instances' to be a list/array")
  if not instances:
    raise invalid_argument("'instances' is empty: nothing to predict")
  columns: dict[str, list] = {alias: [] for alias in specs}
  for index, instance in enumerate(instances):
    if isinstance(instance, dict) and not _is_b64_object(instance):
      _check_aliases(set(instance), specs, f"'instances' element {index}")
      for alias, value in instance.items():
        columns[alias].append(value)
    elif len(specs) == 1:
      columns[next(iter(specs))].append(instance)
    else:
      raise invalid_argument(f"'instances' element {index} must be an object keyed by input name "
                             f'(the signature has inputs {sorted(specs)})')
  return {alias: to_array(values, specs[alias], alias) for alias, values in columns.items()}


def _json_ready(array: np.ndarray, alias: str):
  """A numpy array as nested Python lists, JSON-serializable the way TF Serving writes it."""
  if array.dtype in (np.float32, np.float16):
    # Each value's shortest text at its own precision, parsed back as the float JSON writes.
    return array.astype(str).astype(np.float64).tolist()
  if array.dtype != object and array.dtype.kind not in 'SU':
    return array.tolist()
  flat = [_string_value(v, alias) for v in array.ravel()]
  if array.ndim == 0:
    return flat[0]
  out = np.empty(len(flat), dtype=object)
  out[:] = flat
  return out.reshape(array.shape).tolist()


def _string_value(value, alias: str):
  if isinstance(value, str):
    value = value.encode('utf-8')
  if not alias.endswith('_bytes'):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      pass
  return {'b64': base64.b64encode(value).decode('ascii')}


# One encoder for every answer: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(',', ':'))


def dumps(doc) -> bytes:
  return _ENCODER.encode(doc).encode('utf-8')


def _numbers_text(value) -> str:
  """JSON text of a finite number or nested lists of them: what the encoder writes (each number's
  repr), without building an encoder (json.JSONEncoder.encode makes a new C encoder per call)."""
  if isinstance(value, list):
    return '[' + ','.join(map(_numbers_text, value)) + ']'
  return repr(value)


def _single_output(key: str, array: np.ndarray, alias: str) -> bytes:
  """`{key: <the array>}`; numbers written directly when they are all finite ints or floats."""
  values = _json_ready(array, alias)
  if array.dtype.kind in 'iuf':
    text = _numbers_text(values)
    if 'n' not in text:  # Else a nan or inf, which the encoder writes as NaN / Infinity.
      return f'{{"{key}":{text}}}'.encode('ascii')
  return dumps({key: values})


def predict_response(outputs: dict[str, np.ndarray], row_format: bool) -> bytes:
  """`{"predictions": ...}` (row request) or `{"outputs": ...}` (columnar request)."""
  if not row_format:
    if len(outputs) == 1:
      (alias, array), = outputs.items()
      return _single_output('outputs', array, alias)
    return dumps({'outputs': {alias: _json_ready(a, alias) for alias, a in outputs.items()}})
  rows = {a.shape[0] if a.ndim else None for a in outputs.values()}
  if len(rows) != 1 or None in rows:
    raise invalid_argument('Number of rows differs between output tensors (or an output is a '
                           'scalar): use the columnar "inputs" format for this signature')
  if len(outputs) == 1:
    (alias, array), = outputs.items()
    return _single_output('predictions', array, alias)
  columns = {alias: _json_ready(a, alias) for alias, a in outputs.items()}
  count = rows.pop()
  return dumps({'predictions': [{alias: col[i] for alias, col in columns.items()}
                                for i in range(count)]})


def _feature(name: str, value) -> feature_pb2.Feature:
  values = value if isinstance(value, list) else [value]
  feature = feature_pb2.Feature()
  kinds = set()
  for v in values:
    if isinstance(v, bool) or isinstance(v, int):
      kinds.add('int')
    elif isinstance(v, float):
      kinds.add('float')
    elif isinstance(v, str) or _is_b64_object(v):
      kinds.add('bytes')
    else:
      raise invalid_argument(f'Feature {name!r}: value {_value_text(v)} is not a number, string '
                             'or {"b64": ...} (lists must be flat)')
  if 'bytes' in kinds and len(kinds) > 1:
    raise invalid_argument(f'Feature {name!r} mixes strings and numbers')
  if 'bytes' in kinds:
    feature.bytes_list.value.extend(
        v.encode('utf-8') if isinstance(v, str) else decode_b64(v) for v in values)
  elif 'float' in kinds:
    feature.float_list.value.extend(float(v) for v in values)
  elif kinds:
    for v in values:
      if not -2**63 <= int(v) < 2**63:
        raise invalid_argument(f'Feature {name!r}: {v} is out of range for int64')
    feature.int64_list.value.extend(int(v) for v in values)
  else:
    feature.float_list.SetInParent()
  return feature


def _example(obj, where: str) -> example_pb2.Example:
  if not isinstance(obj, dict):
    raise invalid_argument(f'{where} must be an object of feature name -> value(s)')
  example = example_pb2.Example()
  for name, value in obj.items():
    example.features.feature[name].CopyFrom(_feature(name, value))
  return example


@dataclasses.dataclass
class ExamplesBody:
  """A decoded classify/regress request: serialized tf.Examples (context merged into each)."""
  examples: list[bytes]
  signature_name: str


def examples_body(doc) -> ExamplesBody:
  signature_name = signature_name_of(doc)
  unknown = sorted(set(doc) - {'examples', 'context', 'signature_name'})
  if unknown:
    raise invalid_argument(f'Unknown key(s) in request: {unknown}; expected "examples" and '
                           'optionally "context" and "signature_name"')
  if 'examples' not in doc:
    raise invalid_argument("Missing 'examples' key")
  examples = doc['examples']
  if not isinstance(examples, list) or not examples:
    raise invalid_argument("'examples' must be a non-empty list of objects")
  context = _example(doc['context'], "'context'") if 'context' in doc else None
  serialized = []
  for index, obj in enumerate(examples):
    example = _example(obj, f"'examples' element {index}")
    if context is not None:
      merged = example_pb2.Example()
      merged.CopyFrom(context)
      for name, feature in example.features.feature.items():
        merged.features.feature[name].CopyFrom(feature)
      example = merged
    serialized.append(example.SerializeToString())
  return ExamplesBody(serialized, signature_name)


def classify_response(classes: np.ndarray | None, scores: np.ndarray | None) -> bytes:
  """`{"results": [[[label, score], ...], ...]}`."""
  rows = (classes if classes is not None else scores).shape[0]
  results = []
  for i in range(rows):
    labels = [_string_value(c, 'classes') for c in classes[i]] if classes is not None else None
    values = _json_ready(scores[i], 'scores') if scores is not None else None
    count = len(labels) if labels is not None else len(values)
    results.append([[labels[j] if labels is not None else '',
                     values[j] if values is not None else 0.0] for j in range(count)])
  return dumps({'results': results})


def regress_response(values: np.ndarray) -> bytes:
  return dumps({'results': _json_ready(values.reshape(-1), 'outputs')})


def error_body(message: str) -> bytes:
  return dumps({'error': message})
