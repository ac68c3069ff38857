"""SpanRangeCsvExampleGen's reading: an empty cell is an absent feature (what the model sees does
not change), and the files read are recorded per span."""
import os

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.coders import csv_decoder

from components.span_example_gen import executor
from pipeline.config import REPO_ROOT
from tests.conftest import read_span, sample_spans, write_span

SCHEMA = tfdv.load_schema_text(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'))
INFOS = [csv_decoder.ColumnInfo('fare', csv_decoder.ColumnType.FLOAT),
         csv_decoder.ColumnInfo('trip_seconds', csv_decoder.ColumnType.INT),
         csv_decoder.ColumnInfo('company', csv_decoder.ColumnType.STRING)]


def test_an_empty_cell_is_an_absent_feature():
  example = executor.cells_to_example([b'12.5', b'', b'Taxi Co'], INFOS)
  feature = example.features.feature
  assert feature['fare'].float_list.value == [12.5]
  assert 'trip_seconds' not in feature                   # TFX's CsvExampleGen: present, empty
  assert feature['company'].bytes_list.value == [b'Taxi Co']


def test_the_model_reads_an_absent_feature_as_it_read_an_empty_one():
  """Transform and the serving signature parse with the schema's raw feature spec: a feature
  left out and a feature with no value give the same tensors, so the model's handling of
  missing values is unchanged."""
  spec = schema_utils.schema_as_feature_spec(SCHEMA).feature_spec
  absent = executor.cells_to_example([b'12.5', b'', b''], INFOS)
  empty = executor.cells_to_example([b'12.5', b'', b''], INFOS)
  empty.features.feature['trip_seconds'].int64_list.SetInParent()
  empty.features.feature['company'].bytes_list.SetInParent()
  assert absent != empty
  parsed = [tf.io.parse_example(tf.constant([e.SerializeToString()]), spec)
            for e in (absent, empty)]
  for name in spec:
    for a, b in zip(tf.nest.flatten(parsed[0][name], expand_composites=True),
                    tf.nest.flatten(parsed[1][name], expand_composites=True)):
      assert a.numpy().tolist() == b.numpy().tolist(), name


def test_the_files_of_each_span_are_recorded_with_their_headers(tmp_path):
  data_root = sample_spans(str(tmp_path / 'spans'), spans=(1, 2), every=50)
  header, rows = read_span(2, data_root)
  write_span(data_root, 2, header[:-1], rows, version=2)
  recorded = executor.span_files_property(
      data_root, ['span-1/version-1/*.csv\nspan-2/version-2/*.csv'], {1: 1, 2: 2})
  assert recorded['input_base'] == data_root
  assert [(s['span'], s['version']) for s in recorded['spans']] == [(1, 1), (2, 2)]
  [second] = recorded['spans'][1]['files']
  assert second['path'].endswith('span-2/version-2/data.csv')
  assert second['columns'] == header[:-1]
  with pytest.raises(RuntimeError, match=r'1 span pattern\(s\) for span\(s\) \[1, 2\]'):
    executor.span_files_property(data_root, ['span-1/version-1/*.csv'], {1: 1, 2: 2})
