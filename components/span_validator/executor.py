"""Executor of SpanValidator, and the plain functions it runs.

1. `check_headers` (structure.py): every span file's header against the schema, before any
   statistics;
2. `add_span_statistics`: a Beam pipeline reading each span's files as SpanRangeCsvExampleGen
   reads them (empty cells are missing values; column types by the schema unless the values
   break it, structure.column_types), TFDV statistics per span and over the spans before the
   newest one, in one pass (TFDV slices);
3. `validate_spans`: each span's statistics against the schema (TRAINING environment), and the
   newest span against the spans before it: TFDV's drift comparators (the schema's
   `drift_comparator`, except the features of `drift_excluded_features`) and presence drops
   (structure.presence_drops); the header findings join the span's anomalies.
"""
import copy
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation import constants as tfdv_constants
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.dsl.components.base import base_beam_executor
from tfx.dsl.io import fileio
from tfx.types import artifact_utils
from tfx.utils import io_utils
from tfx_bsl.coders import csv_decoder
from tfx_bsl.public import tfxio

from components.span_example_gen import driver as span_driver
from components.span_example_gen import executor as span_executor
from components.span_validator import spec
from components.span_validator import structure
from core.statistics import STATS_OPTIONS

_COMPARATOR_TYPES = frozenset(
    anomalies_pb2.AnomalyInfo.Type.Value(name) for name in anomalies_pb2.AnomalyInfo.Type.keys()
    if name.startswith('COMPARATOR_'))


SPAN_FEATURE = '__loopline_span__'    # tags each row with its span inside the Beam pipeline
STATISTICS_OF_ALL = 'all_slices.pb'    # the pipeline's output, split into one file per slice


def files_by_span(files: Sequence[structure.SpanFile]) -> Dict[int, List[structure.SpanFile]]:
  result: Dict[int, List[structure.SpanFile]] = {}
  for span_file in files:
    result.setdefault(span_file.span, []).append(span_file)
  return dict(sorted(result.items()))


def statistics_path(output_uri: str, split: str) -> str:
  return os.path.join(output_uri, f'Split-{split}', spec.STATISTICS_FILE)


def span_column_types(span_files: Sequence[structure.SpanFile], columns: Sequence[str],
                      schema: schema_pb2.Schema) -> List[csv_decoder.ColumnInfo]:
  """The types one span's columns are read as: inferred over the span's rows (tfx_bsl's
  ColumnTypeInferrer, as CsvExampleGen does), then structure.column_types with the schema."""
  inferrer = csv_decoder.ColumnTypeInferrer(list(columns), skip_blank_lines=True)
  accumulator = inferrer.create_accumulator()
  for span_file in span_files:
    for cells in span_executor.read_aligned_cells(span_file.path, span_file.columns, columns):
      accumulator = inferrer.add_input(accumulator, cells)
  inferred = inferrer.extract_output(accumulator)
  chosen = structure.column_types({c.name: int(c.type) for c in inferred}, schema)
  return [csv_decoder.ColumnInfo(c.name, csv_decoder.ColumnType(chosen[c.name]))
          for c in inferred]


def tagged_span_examples(span_files: Sequence[structure.SpanFile], columns: Sequence[str],
                         schema: schema_pb2.Schema) -> Iterable[bytes]:
  """One span's rows as serialized tf.Examples tagged with the span (SPAN_FEATURE). Two passes
  over the files (the types, then the rows), so memory does not grow with the span."""
  column_infos = span_column_types(span_files, columns, schema)
  for span_file in span_files:
    for cells in span_executor.read_aligned_cells(span_file.path, span_file.columns, columns):
      example = span_executor.cells_to_example(cells, column_infos)
      example.features.feature[SPAN_FEATURE].int64_list.value.append(span_file.span)
      yield example.SerializeToString()


def span_slicer(spans: Sequence[int]):
  """TFDV slice function: each span's rows (`span-<N>`) and the rows of the spans before the
  newest (`spans-<first>-<last>`), without the span tag."""
  spans = sorted(spans)

  def slice_by_span(record_batch: pa.RecordBatch):
    index = record_batch.schema.get_field_index(SPAN_FEATURE)
    tags = np.asarray(record_batch.column(index).flatten())
    untagged = pa.RecordBatch.from_arrays(
        [c for i, c in enumerate(record_batch.columns) if i != index],
        [n for i, n in enumerate(record_batch.schema.names) if i != index])
    for span in np.unique(tags):
      yield spec.span_split(int(span)), untagged.filter(pa.array(tags == span))
    if len(spans) > 1:
      yield (spec.previous_split(spans[0], spans[-2]),
             untagged.filter(pa.array(tags < spans[-1])))
  return slice_by_span


def add_span_statistics(pipeline: beam.Pipeline, files: Sequence[structure.SpanFile],
                        schema: schema_pb2.Schema, options: tfdv.StatsOptions,
                        output_path: str) -> None:
  """Adds to `pipeline` the statistics of each span and of the spans before the newest one,
  computed in one pass (TFDV slices, span_slicer) and written to `output_path`. Each span is
  read as SpanRangeCsvExampleGen reads the range (tagged_span_examples)."""
  by_span = files_by_span(files)
  columns = span_executor.union_of_columns([(f.path, f.columns) for f in files])
  sliced = copy.copy(options)
  sliced.experimental_slice_functions = [span_slicer(list(by_span))]
  record = tfxio.TFExampleBeamRecord(physical_format='inmem',
                                     telemetry_descriptors=['SpanValidator'])
  _ = (pipeline
       | 'ListSpans' >> beam.Create(list(by_span.values()))
       | 'ReadSpans' >> beam.FlatMap(tagged_span_examples, columns=columns, schema=schema)
       | 'Decode' >> record.BeamSource()
       | 'Statistics' >> tfdv.GenerateStatistics(sliced)
       | 'Write' >> tfdv.WriteStatisticsToBinaryFile(output_path))


def write_split_statistics(all_slices: statistics_pb2.DatasetFeatureStatisticsList,
                           output_uri: str) -> List[str]:
  """Each slice of `all_slices` but TFDV's default one as its own split (StatisticsGen's
  layout); returns the split names, spans first."""
  splits = []
  for dataset in all_slices.datasets:
    if dataset.name == tfdv_constants.DEFAULT_SLICE_KEY:
      continue
    one = statistics_pb2.DatasetFeatureStatisticsList(datasets=[dataset])
    io_utils.write_bytes_file(statistics_path(output_uri, dataset.name), one.SerializeToString())
    splits.append(dataset.name)
  return sorted(splits, key=lambda name: (not name.startswith('span-'), len(name), name))


def validate_spans(statistics: Mapping[int, statistics_pb2.DatasetFeatureStatisticsList],
                   previous: Optional[statistics_pb2.DatasetFeatureStatisticsList],
                   files: Sequence[structure.SpanFile], schema: schema_pb2.Schema,
                   drift_excluded: Sequence[str] = (), root: Optional[str] = None
                   ) -> Dict[int, anomalies_pb2.Anomalies]:
  """{span: Anomalies}: header findings and schema anomalies of every span; for the newest span
  (with `previous`, the statistics of the spans before it) drift and presence drops too."""
  findings = structure.check_headers(files, schema, root=root)
  spans = sorted(statistics)
  newest = spans[-1]
  result = {}
  for span in spans:
    span_findings = [f for f in findings if f.span == span]
    if span == newest and previous is not None:
      label = (f'span {spans[0]}' if len(spans) == 2 else f'spans {spans[0]}-{spans[-2]}')
      anomalies = tfdv.validate_statistics(
          statistics[span], structure.without_drift_comparators(schema, drift_excluded),
          environment=structure.TRAINING, previous_statistics=previous)
      _name_the_comparison(anomalies, f'span {span} against {label}')
      missing = {f.feature for f in span_findings if f.anomaly_type == structure.MISSING_COLUMN}
      span_findings += structure.presence_drops(
          statistics[span].datasets[0], previous.datasets[0], span, label,
          [c for c in structure.schema_columns(schema) if c not in missing])
    else:
      anomalies = tfdv.validate_statistics(statistics[span], schema,
                                           environment=structure.TRAINING)
    structure.add_findings(anomalies, span_findings)
    result[span] = anomalies
  return result


def _name_the_comparison(anomalies: anomalies_pb2.Anomalies, comparison: str) -> None:
  """Drift reasons say 'current' and 'previous'; they get the spans' names."""
  for info in anomalies.anomaly_info.values():
    for reason in info.reason:
      if reason.type in _COMPARATOR_TYPES:
        reason.description = f'{comparison}: {reason.description}'
    if any(r.type in _COMPARATOR_TYPES for r in info.reason):
      info.description = ' '.join(r.description for r in info.reason)


def write_anomalies(output_uri: str, anomalies_by_span: Mapping[int, anomalies_pb2.Anomalies]
                    ) -> List[str]:
  splits = []
  for span, anomalies in sorted(anomalies_by_span.items()):
    splits.append(spec.span_split(span))
    io_utils.write_bytes_file(os.path.join(output_uri, f'Split-{splits[-1]}',
                                           spec.ANOMALIES_FILE), anomalies.SerializeToString())
  return splits


def stats_options(options_json: Optional[str], schema: schema_pb2.Schema) -> tfdv.StatsOptions:
  """The parameter's StatsOptions (default: core.statistics.STATS_OPTIONS) with the schema."""
  options = (tfdv.StatsOptions.from_json(options_json) if options_json
             else tfdv.StatsOptions(**STATS_OPTIONS))
  if options.schema is not None:
    raise ValueError(f'{spec.STATS_OPTIONS_KEY} must not carry a schema: it comes from the '
                     f'{spec.SCHEMA_KEY!r} input')
  options.schema = schema
  return options


def _load_statistics(uri: str, split: str) -> statistics_pb2.DatasetFeatureStatisticsList:
  return tfdv.load_stats_binary(statistics_path(uri, split))


class Executor(base_beam_executor.BaseBeamExecutor):
  """Reads each span's files, computes their statistics, validates them (module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(
        artifact_utils.get_single_uri(input_dict[spec.SCHEMA_KEY])))
    recorded = span_executor.read_span_files(examples)
    files = structure.span_files_from_json(recorded)
    versions = structure.spans_of(files)
    options = stats_options(exec_properties.get(spec.STATS_OPTIONS_KEY), schema)
    drift_excluded = json.loads(exec_properties.get(spec.DRIFT_EXCLUDED_KEY) or '[]')

    statistics = artifact_utils.get_single_instance(output_dict[spec.STATISTICS_KEY])
    all_slices = os.path.join(statistics.uri, STATISTICS_OF_ALL)
    with self._make_beam_pipeline() as pipeline:
      add_span_statistics(pipeline, files, schema, options, all_slices)
    splits = write_split_statistics(tfdv.load_stats_binary(all_slices), statistics.uri)
    fileio.remove(all_slices)
    spans = list(versions)
    previous = (_load_statistics(statistics.uri, spec.previous_split(spans[0], spans[-2]))
                if len(spans) > 1 else None)
    anomalies_by_span = validate_spans(
        {span: _load_statistics(statistics.uri, spec.span_split(span)) for span in spans},
        previous, files, schema, drift_excluded, recorded.get('input_base'))

    anomalies = artifact_utils.get_single_instance(output_dict[spec.ANOMALIES_KEY])
    statistics.split_names = artifact_utils.encode_split_names(splits)
    anomalies.split_names = artifact_utils.encode_split_names(
        write_anomalies(anomalies.uri, anomalies_by_span))
    for artifact in (statistics, anomalies):
      artifact.set_string_custom_property(spec.SPAN_VERSIONS_PROPERTY,
                                          span_driver.format_span_versions(versions))
      artifact.set_int_custom_property(spec.NEWEST_SPAN_PROPERTY, spans[-1])
      artifact.set_string_custom_property(
          spec.PREVIOUS_SPANS_PROPERTY, f'{spans[0]}-{spans[-2]}' if len(spans) > 1 else '')
