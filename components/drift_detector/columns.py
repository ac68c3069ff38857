"""Rows as columns: what the drift measures read, from tf.Examples or from CSV-like rows.

A feature is `numeric` (FLOAT, or INT without `is_categorical`) or `categorical` (BYTES, or INT
with `int_domain.is_categorical`), as the schema says. Its column holds one value per row:
- numeric: float64, NaN when the row has no value;
- categorical: object array of str (ints as their decimal text), None when the row has no value.
A value of the wrong kind (text in a numeric feature, a float in a categorical one: a schema
break) cannot be compared with the baseline: it counts as missing in the distances and is counted
in `Columns.invalid[feature]`. Multi-valued cells keep their first value (the schema allows one).

The same decoding serves the baseline rows and the serving rows, so both sides of every distance
are read the same way.
"""
import dataclasses
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
from tensorflow_metadata.proto.v0 import schema_pb2

NUMERIC = 'numeric'
CATEGORICAL = 'categorical'


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
  name: str
  kind: str                 # NUMERIC or CATEGORICAL
  schema_type: int          # schema_pb2.FeatureType of the feature

  @property
  def metric(self) -> str:
    return 'jensen_shannon' if self.kind == NUMERIC else 'l_infinity'


def feature_specs(schema: schema_pb2.Schema, names: Optional[Sequence[str]] = None,
                  environment: Optional[str] = 'SERVING',
                  exclude: Sequence[str] = ()) -> List[FeatureSpec]:
  """Specs of the schema's features (all of them in `environment`, or `names`, in that order)."""
  by_name = {f.name: f for f in schema.feature}
  if names is None:
    names = [f.name for f in schema.feature if _in_environment(f, schema, environment)]
  specs = []
  for name in names:
    if name in exclude:
      continue
    if name not in by_name:
      raise ValueError(f'feature {name!r} is not in the schema')
    feature = by_name[name]
    categorical = feature.type == schema_pb2.BYTES or (
        feature.type == schema_pb2.INT and feature.HasField('int_domain') and
        feature.int_domain.is_categorical)
    specs.append(FeatureSpec(name, CATEGORICAL if categorical else NUMERIC, feature.type))
  return specs


def _in_environment(feature, schema, environment: Optional[str]) -> bool:
  if environment is None:
    return True
  if environment in feature.not_in_environment:
    return False
  if feature.in_environment:
    return environment in feature.in_environment
  return environment in schema.default_environment or not schema.default_environment


@dataclasses.dataclass
class Columns:
  """One value per row for each feature (see module docstring)."""
  n_rows: int
  values: Dict[str, np.ndarray]
  invalid: Dict[str, int] = dataclasses.field(default_factory=dict)

  def take(self, indexes: np.ndarray) -> 'Columns':
    """The rows at `indexes` (numpy fancy indexing; invalid counts are not carried over)."""
    return Columns(len(indexes), {k: v[indexes] for k, v in self.values.items()}, {})

  def select(self, mask: np.ndarray) -> 'Columns':
    return self.take(np.flatnonzero(mask))


def empty_column(kind: str, n_rows: int) -> np.ndarray:
  if kind == NUMERIC:
    return np.full(n_rows, np.nan)
  return np.full(n_rows, None, dtype=object)


# ----------------------------------------------------------------------------- CSV-like rows

def columns_from_rows(rows: Sequence[Mapping[str, str]], specs: Sequence[FeatureSpec],
                      types: Optional[Mapping[str, int]] = None) -> Columns:
  """Columns of CSV-like rows (column -> text, '' or absent = missing).

  `types` ({column: schema_pb2.FeatureType}) is how each column was encoded when sent (default:
  the spec's schema type); a column sent as BYTES for a numeric feature, for instance, is what a
  tf.Example with a string value would carry: its values are invalid (see module docstring).
  Values are those a tf.Example carries (float32 floats), so rows and examples of the same data
  give the same columns.
  """
  types = dict(types or {})
  result = Columns(len(rows), {})
  for spec in specs:
    sent_as = types.get(spec.name, spec.schema_type)
    column = empty_column(spec.kind, len(rows))
    invalid = 0
    texts = [row.get(spec.name) for row in rows]
    for i, text in enumerate(texts):
      if text is None or text == '':
        continue
      value = _typed(text, sent_as)
      if value is None:
        continue      # row_to_example would have raised: not representable, treat as missing
      checked = _checked(value, spec)
      if checked is None:
        invalid += 1
      else:
        column[i] = checked
    result.values[spec.name] = column
    if invalid:
      result.invalid[spec.name] = invalid
  return result


def _typed(text: str, schema_type: int):
  """The value a tf.Example would carry (floats are float32 in a float_list)."""
  try:
    if schema_type == schema_pb2.INT:
      return int(float(text))
    if schema_type == schema_pb2.FLOAT:
      return float(np.float32(float(text)))
  except ValueError:
    return None
  return text.encode('utf-8')


def _checked(value, spec: FeatureSpec):
  """The column value of one typed cell, or None when its kind is wrong for the feature."""
  if spec.kind == NUMERIC:
    if isinstance(value, (bytes, str)):
      return None
    return float(value)
  if spec.schema_type == schema_pb2.BYTES:
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else None
  if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
    return str(int(value))
  return None


# ----------------------------------------------------------------------------- tf.Examples

def columns_from_examples(serialized: Sequence[bytes], specs: Sequence[FeatureSpec],
                          extra_numeric: Iterable[str] = (),
                          extra_int: Iterable[str] = ()) -> Columns:
  """Columns of serialized tf.Examples.

  `extra_numeric` / `extra_int`: other features to read as float / int64 columns (-1 when
  absent), such as the prediction, the label, the model version.
  Uses tfx_bsl's C++ decoder; a batch in which a feature changes type between examples (a break
  in the middle of a window) is decoded example by example instead.
  """
  extra_numeric, extra_int = list(extra_numeric), list(extra_int)
  n_rows = len(serialized)
  if n_rows == 0:
    columns = Columns(0, {s.name: empty_column(s.kind, 0) for s in specs})
    for name in extra_numeric:
      columns.values[name] = np.zeros(0)
    for name in extra_int:
      columns.values[name] = np.zeros(0, np.int64)
    return columns
  try:
    return _columns_from_record_batch(serialized, specs, extra_numeric, extra_int)
  except RuntimeError:
    return _columns_from_protos(serialized, specs, extra_numeric, extra_int)


def _first_values(array) -> tuple:
  """(values of the child array as numpy, index of each row's first value or -1, child type)."""
  import pyarrow as pa
  if isinstance(array, pa.ChunkedArray):
    array = array.combine_chunks()
  offsets = np.asarray(array.offsets)
  lengths = np.diff(offsets)
  valid = np.asarray(array.is_valid()) & (lengths > 0)
  first = np.where(valid, offsets[:-1], -1)
  return array.values, first, array.type.value_type


def _columns_from_record_batch(serialized, specs, extra_numeric, extra_int) -> Columns:
  import pyarrow as pa
  from tfx_bsl.coders import example_coder
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(serialized))
  present = {name: batch.column(i) for i, name in enumerate(batch.schema.names)}
  n_rows = batch.num_rows
  result = Columns(n_rows, {})
  for spec in specs:
    column = empty_column(spec.kind, n_rows)
    if spec.name in present:
      values, first, value_type = _first_values(present[spec.name])
      rows = np.flatnonzero(first >= 0)
      kind_ok = _kind_ok(spec, value_type)
      if not kind_ok:
        if len(rows):
          result.invalid[spec.name] = int(len(rows))
      elif len(rows):
        picked = values.take(pa.array(first[rows]))
        if spec.kind == NUMERIC:
          column[rows] = np.asarray(picked.to_numpy(zero_copy_only=False), np.float64)
        elif pa.types.is_integer(value_type):
          column[rows] = [str(v) for v in picked.to_numpy(zero_copy_only=False)]
        else:
          column[rows] = [v.decode('utf-8', 'replace')
                          for v in picked.to_numpy(zero_copy_only=False)]
    result.values[spec.name] = column
  for name, integer in [(n, False) for n in extra_numeric] + [(n, True) for n in extra_int]:
    column = np.full(n_rows, -1 if integer else np.nan, np.int64 if integer else np.float64)
    if name in present:
      values, first, value_type = _first_values(present[name])
      rows = np.flatnonzero(first >= 0)
      if len(rows) and (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
        column[rows] = np.asarray(values.take(pa.array(first[rows])).to_numpy(
            zero_copy_only=False)).astype(column.dtype)
    result.values[name] = column
  return result


def _kind_ok(spec: FeatureSpec, value_type) -> bool:
  import pyarrow as pa
  if spec.kind == NUMERIC:
    return pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
  if spec.schema_type == schema_pb2.BYTES:
    return pa.types.is_binary(value_type) or pa.types.is_large_binary(value_type)
  return pa.types.is_integer(value_type)


def _columns_from_protos(serialized, specs, extra_numeric, extra_int) -> Columns:
  from tensorflow.core.example import example_pb2
  n_rows = len(serialized)
  result = Columns(n_rows, {s.name: empty_column(s.kind, n_rows) for s in specs})
  for name in extra_numeric:
    result.values[name] = np.full(n_rows, np.nan)
  for name in extra_int:
    result.values[name] = np.full(n_rows, -1, np.int64)
  example = example_pb2.Example()
  for i, data in enumerate(serialized):
    example.ParseFromString(data)
    feature_map = example.features.feature
    for spec in specs:
      if spec.name not in feature_map:
        continue
      value = _proto_first(feature_map[spec.name])
      if value is None:
        continue
      checked = _checked(value, spec)
      if checked is None:
        result.invalid[spec.name] = result.invalid.get(spec.name, 0) + 1
      else:
        result.values[spec.name][i] = checked
    for name in extra_numeric + extra_int:
      if name in feature_map:
        value = _proto_first(feature_map[name])
        if isinstance(value, (int, float)):
          result.values[name][i] = value
  return result


def _proto_first(feature):
  kind = feature.WhichOneof('kind')
  if kind is None:
    return None
  values = getattr(feature, kind).value
  if not values:
    return None
  value = values[0]
  return value if kind != 'float_list' else float(value)
