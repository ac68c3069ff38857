"""CSV rows <-> serialized tf.Example, typed by the schema (what CsvExampleGen would produce).

Used wherever raw rows must reach a model outside the pipeline: the holdout evaluation, the
replay of held-back spans to the server. Empty cells become absent features.
"""
from typing import Dict, Iterable, List, Mapping

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2


class ExampleConversionError(ValueError):
  """A cell that does not fit its column's type; the message names column and value."""


def feature_types(schema: schema_pb2.Schema) -> Dict[str, int]:
  """{feature name: schema_pb2.FeatureType}."""
  return {f.name: f.type for f in schema.feature}


def row_to_example(row: Mapping[str, str], types: Mapping[str, int]) -> tf.train.Example:
  """One CSV row (column -> text) to a tf.Example; columns not in `types` are dropped."""
  example = tf.train.Example()
  for column, text in row.items():
    if column not in types or text is None or text == '':
      continue
    feature = example.features.feature[column]
    try:
      if types[column] == schema_pb2.INT:
        feature.int64_list.value.append(int(float(text)))
      elif types[column] == schema_pb2.FLOAT:
        feature.float_list.value.append(float(text))
      else:
        feature.bytes_list.value.append(text.encode('utf-8'))
    except ValueError as e:
      raise ExampleConversionError(f'column {column!r}: {text!r} is not a '
                                   f'{schema_pb2.FeatureType.Name(types[column])}') from e
  return example


def rows_to_serialized_examples(rows: Iterable[Mapping[str, str]],
                                types: Mapping[str, int]) -> List[bytes]:
  return [row_to_example(row, types).SerializeToString() for row in rows]
