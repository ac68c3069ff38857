"""Executor of SpanRangeCsvExampleGen: reads the CSV files of several spans as one dataset.

Each split pattern holds one glob per span (newline-separated, written by the driver). Files may
have different headers (an upstream change that adds, drops or reorders a column): rows are
aligned on the union of all columns and column types are inferred once over all rows. A column
that turned to text in one span therefore becomes a string feature everywhere, and a dropped
column shows up as missing values: the data gate, not a crash in ExampleGen, reports both.

An empty CSV cell is a missing value: the feature is absent from that row's tf.Example (TFX's
CsvExampleGen writes a present feature with an empty list instead, which TFDV counts as present,
so a column going empty would pass the schema's presence check unseen).

The files read, with their headers, are recorded on the Examples artifact, per span
(`span_files`, JSON, see `span_files_property`): SpanValidator checks each span's structure and
statistics from them.
"""
import csv
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils
from tfx_bsl.coders import csv_decoder

from components.span_example_gen import driver

SPAN_FILES_PROPERTY = 'span_files'


def list_span_files(input_base: str, split_patterns: str) -> List[Tuple[str, List[str]]]:
  """[(file, header columns)] for every file matched by the newline-separated patterns."""
  files = []
  for pattern in split_patterns.split(driver.PATTERN_SEPARATOR):
    files.extend(list_pattern_files(input_base, pattern))
  return files


def list_pattern_files(input_base: str, pattern: str) -> List[Tuple[str, List[str]]]:
  """[(file, header columns)] of one span's pattern; RuntimeError when nothing matches."""
  matched = sorted(fileio.glob(os.path.join(input_base, pattern)))
  if not matched:
    raise RuntimeError(f'Span pattern {pattern!r} matches no file under {input_base}')
  files = []
  for path in matched:
    header = io_utils.load_csv_column_names(path)
    if not any(header):
      raise RuntimeError(f'{path} has no CSV header')
    files.append((path, header))
  return files


def union_of_columns(files: Sequence[Tuple[str, Sequence[str]]]) -> List[str]:
  columns: List[str] = []
  for _, header in files:
    columns.extend(c for c in header if c not in columns)
  return columns


def read_aligned_cells(path: str, header: Sequence[str],
                       columns: Sequence[str]) -> Iterable[List[bytes]]:
  """The rows of one CSV file as cells aligned on `columns` (b'' where its header lacks one);
  blank lines are skipped."""
  positions = [header.index(c) if c in header else None for c in columns]
  read_records = csv_executor._ReadCsvRecordsFromTextFile()  # pylint: disable=protected-access
  for record in read_records.process(path):
    cells = next(csv.reader([record]), [])
    if cells:
      yield [cells[i].encode('utf-8') if i is not None and i < len(cells) else b''
             for i in positions]


def cells_to_example(cells: Sequence[bytes],
                     column_infos: Sequence[csv_decoder.ColumnInfo]) -> tf.train.Example:
  """One row of CSV cells -> tf.Example; an empty cell leaves its feature out (a missing value)."""
  example = tf.train.Example()
  for cell, info in zip(cells, column_infos, strict=True):
    if not cell:
      continue
    feature = example.features.feature[info.name]
    if info.type == csv_decoder.ColumnType.INT:
      feature.int64_list.value.append(int(cell))
    elif info.type == csv_decoder.ColumnType.FLOAT:
      feature.float_list.value.append(float(cell))
    else:
      feature.bytes_list.value.append(cell)
  return example


@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
class _SpanRangeCsvToExample(beam.PTransform):
  """CSV files of several spans -> tf.Examples with one type per column."""

  def __init__(self, exec_properties: Dict[str, Any], split_pattern: str):
    super().__init__()
    self._input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    self._split_pattern = split_pattern

  def expand(self, pipeline: beam.Pipeline) -> beam.pvalue.PCollection:
    files = list_span_files(self._input_base, self._split_pattern)
    columns = union_of_columns(files)
    cells = (pipeline
             | 'ListFiles' >> beam.Create(files)
             | 'ReadAlignedCells' >> beam.FlatMap(
                 lambda file_and_header: read_aligned_cells(*file_and_header, columns)))
    column_infos = beam.pvalue.AsSingleton(
        cells | 'InferColumnTypes' >> beam.CombineGlobally(
            csv_decoder.ColumnTypeInferrer(columns, skip_blank_lines=True)))
    return cells | 'ToTFExample' >> beam.Map(cells_to_example, column_infos)


def span_files_property(input_base: str, split_patterns: Sequence[str],
                        span_versions: Mapping[int, int]) -> Dict[str, Any]:
  """What `span_files` records: `{"input_base": ..., "spans": [{"span": N, "version": V,
  "files": [{"path": ..., "columns": [...]}, ...]}, ...]}`, spans in order.

  `split_patterns`: each input split's patterns as the driver wrote them, one per span of
  `span_versions`, in span order.
  """
  spans = sorted(span_versions)
  entries = [{'span': span, 'version': span_versions[span], 'files': []} for span in spans]
  for patterns in split_patterns:
    per_span = patterns.split(driver.PATTERN_SEPARATOR)
    if len(per_span) != len(spans):
      raise RuntimeError(f'{len(per_span)} span pattern(s) for span(s) {spans}: the driver of '
                         f'SpanRangeCsvExampleGen resolves one pattern per span')
    for entry, pattern in zip(entries, per_span):
      entry['files'] += [{'path': path, 'columns': header}
                         for path, header in list_pattern_files(input_base, pattern)]
  return {'input_base': input_base, 'spans': entries}


def read_span_files(examples: types.Artifact) -> Dict[str, Any]:
  """The `span_files` an Examples artifact of SpanRangeCsvExampleGen recorded (see above)."""
  if not examples.has_custom_property(SPAN_FILES_PROPERTY):
    raise ValueError(f'Examples artifact {examples.uri} has no {SPAN_FILES_PROPERTY!r} property: '
                     f'it was not written by SpanRangeCsvExampleGen')
  return json.loads(examples.get_string_custom_property(SPAN_FILES_PROPERTY))


class Executor(csv_executor.Executor):
  """CsvExampleGen's executor over a range of spans; records the files it read per span."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _SpanRangeCsvToExample

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    super().Do(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.EXAMPLES_KEY])
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    versions = driver.parse_span_versions(
        examples.get_string_custom_property(driver.SPAN_VERSIONS_PROPERTY))
    examples.set_string_custom_property(SPAN_FILES_PROPERTY, json.dumps(span_files_property(
        exec_properties[standard_component_specs.INPUT_BASE_KEY],
        [split.pattern for split in input_config.splits], versions), sort_keys=True))
