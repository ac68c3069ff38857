"""Executor of SpanRangeCsvExampleGen: reads the CSV files of several spans as one dataset.

Each split pattern holds one glob per span (newline-separated, written by the driver). Files may
have different headers (an upstream change that adds, drops or reorders a column): rows are
aligned on the union of all columns, absent cells are missing values, and column types are
inferred once over all rows. A column that turned to text in one span therefore becomes a string
feature everywhere, and a dropped column shows up as a presence anomaly: the data gate, not a
crash in ExampleGen, reports both.
"""
import csv
import os
from typing import Any, Dict, Iterable, List, Tuple

import apache_beam as beam
import tensorflow as tf
from tfx.components.example_gen.csv_example_gen import executor as csv_executor
from tfx.dsl.io import fileio
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder

from components.span_example_gen import driver


def list_span_files(input_base: str, split_patterns: str) -> List[Tuple[str, List[str]]]:
  """[(file, header columns)] for every file matched by the newline-separated patterns."""
  files = []
  for pattern in split_patterns.split(driver.PATTERN_SEPARATOR):
    matched = sorted(fileio.glob(os.path.join(input_base, pattern)))
    if not matched:
      raise RuntimeError(f'Span pattern {pattern!r} matches no file under {input_base}')
    for path in matched:
      header = io_utils.load_csv_column_names(path)
      if not any(header):
        raise RuntimeError(f'{path} has no CSV header')
      files.append((path, header))
  return files


def union_of_columns(files: List[Tuple[str, List[str]]]) -> List[str]:
  columns: List[str] = []
  for _, header in files:
    columns.extend(c for c in header if c not in columns)
  return columns


class _ReadAlignedCsvCells(beam.DoFn):
  """Reads one CSV file; yields its rows as cells aligned on `columns` (b'' where absent)."""

  def __init__(self, columns: List[str]):
    self._columns = columns

  def process(self, file_and_header: Tuple[str, List[str]]) -> Iterable[List[bytes]]:
    path, header = file_and_header
    positions = [header.index(c) if c in header else None for c in self._columns]
    read_records = csv_executor._ReadCsvRecordsFromTextFile()  # pylint: disable=protected-access
    for record in read_records.process(path):
      cells = next(csv.reader([record]))
      yield [cells[i].encode('utf-8') if i is not None and i < len(cells) else b''
             for i in positions]


@beam.typehints.with_input_types(beam.Pipeline)
@beam.typehints.with_output_types(tf.train.Example)
class _SpanRangeCsvToExample(beam.PTransform):
  """CSV files of several spans -> tf.Examples with one type per column."""

  def __init__(self, exec_properties: Dict[str, Any], split_pattern: str):
    self._input_base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
    self._split_pattern = split_pattern

  def expand(self, pipeline: beam.Pipeline) -> beam.pvalue.PCollection:
    files = list_span_files(self._input_base, self._split_pattern)
    columns = union_of_columns(files)
    cells = (pipeline
             | 'ListFiles' >> beam.Create(files)
             | 'ReadAlignedCells' >> beam.ParDo(_ReadAlignedCsvCells(columns)))
    column_infos = beam.pvalue.AsSingleton(
        cells | 'InferColumnTypes' >> beam.CombineGlobally(
            csv_decoder.ColumnTypeInferrer(columns, skip_blank_lines=True)))
    return cells | 'ToTFExample' >> beam.ParDo(
        csv_executor._ParsedCsvToTfExample(), column_infos)  # pylint: disable=protected-access


class Executor(csv_executor.Executor):
  """CsvExampleGen's executor over a range of spans."""

  def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
    return _SpanRangeCsvToExample
