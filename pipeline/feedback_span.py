"""The labelled serving window becomes the next training span.

Reads the `labeled` split of a ServingLogExampleGen output (the logged requests that received
their ground truth), keeps the columns of the training spans (the schema's features; the serving
metadata `prediction`, `model_version`, `request_id`, `log_timestamp` are dropped) and writes them
as `span-<N>/version-1/data.csv` under the data root, N = the next span number, written to a
temporary name and renamed so a reader never sees half a span.
"""
import csv
import glob
import os
from typing import Dict, List, Tuple

import tensorflow as tf

from core import spans as spans_lib
from models import features


def read_labeled_rows(examples_uri: str, columns: List[str], split: str = 'labeled'
                      ) -> List[Dict[str, str]]:
  """The split's labelled tf.Examples as CSV rows over `columns` ('' where a feature has no
  value). Works on any Examples artifact: the serving window's `labeled` split, or a training
  split."""
  paths = sorted(glob.glob(os.path.join(examples_uri, f'Split-{split}', '*')))
  rows = []
  for record in tf.data.TFRecordDataset(paths, compression_type='GZIP'):
    example = tf.train.Example.FromString(record.numpy())
    row = {}
    for column in columns:
      feature = example.features.feature.get(column)
      kind = feature.WhichOneof('kind') if feature is not None else None
      values = list(getattr(feature, kind).value) if kind else []
      value = values[0] if values else ''
      row[column] = value.decode('utf-8') if isinstance(value, bytes) else (
          repr(value) if isinstance(value, float) else str(value))
    if row.get(features.LABEL_KEY) in ('0', '1'):
      rows.append(row)
  return rows


def write_next_span(data_root: str, columns: List[str], rows: List[Dict[str, str]]
                    ) -> Tuple[int, str]:
  """Writes `rows` as the next span (version 1); returns (span, path)."""
  if not rows:
    raise ValueError('no labelled serving example to write as a span')
  existing = spans_lib.list_spans(data_root) if os.path.isdir(data_root) else {}
  span = max(existing, default=0) + 1
  path = spans_lib.span_path(data_root, span)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = path + '.tmp'
  with open(temporary, 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows)
  os.replace(temporary, path)
  return span, path
