"""Executor of SpanValidator, and the plain functions it runs.

1. `check_headers` (structure.py): every span file's header against the schema, before any
   statistics;
2. `span_statistics`: each span's files read once (empty cells are missing values, as
   SpanRangeCsvExampleGen reads them; values typed by the schema, a cell of the wrong type
   counted as a type break, structure.TypeBreaks) in record batches of BATCH_SIZE rows, fed to
   TFDV's statistics generators in this process: the statistics of each span and of the spans
   before the newest one. No Beam pipeline: on the thousands of rows of a span its start-up
   costs more than the work (measured on spans 1-5, 11,938 rows, 2 cores at load ~6: a Beam
   version 9-15 s in one process, 31-40 s with worker processes; this one 5 s), and memory
   holds one batch;
3. `validate_spans`: each span's statistics against the schema (TRAINING environment), and the
   newest span against the spans before it: TFDV's drift comparators (the schema's
   `drift_comparator`, except the features of `drift_excluded_features`) and presence drops
   (structure.presence_drops); the header findings and type breaks join the span's anomalies.
"""
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.span_example_gen import driver as span_driver
from components.span_example_gen import executor as span_executor
from components.span_validator import spec
from components.span_validator import structure
from core.statistics import STATS_OPTIONS

_COMPARATOR_TYPES = frozenset(
    anomalies_pb2.AnomalyInfo.Type.Value(name) for name in anomalies_pb2.AnomalyInfo.Type.keys()
    if name.startswith('COMPARATOR_'))
# The Arrow types TFDV reads tf.Examples as.
_ARROW_TYPES = {schema_pb2.INT: pa.large_list(pa.int64()),
                schema_pb2.FLOAT: pa.large_list(pa.float32()),
                schema_pb2.BYTES: pa.large_list(pa.large_binary())}
BATCH_SIZE = 10000

Statistics = statistics_pb2.DatasetFeatureStatisticsList


def files_by_span(files: Sequence[structure.SpanFile]) -> Dict[int, List[structure.SpanFile]]:
  result: Dict[int, List[structure.SpanFile]] = {}
  for span_file in files:
    result.setdefault(span_file.span, []).append(span_file)
  return dict(sorted(result.items()))


def statistics_path(output_uri: str, split: str) -> str:
  return os.path.join(output_uri, f'Split-{split}', spec.STATISTICS_FILE)


def span_record_batches(span_files: Sequence[structure.SpanFile], schema: schema_pb2.Schema,
                        breaks: structure.TypeBreaks,
                        batch_size: int = BATCH_SIZE) -> Iterable[pa.RecordBatch]:
  """One span's rows as Arrow record batches of its schema columns, typed by the schema: an
  empty cell, or one that does not fit its type (counted in `breaks`), is a missing value."""
  types = {f.name: f.type for f in schema.feature}
  for span_file in span_files:
    columns = [c for c in span_file.columns if c in types]
    values: Dict[str, list] = {c: [] for c in columns}
    rows = 0
    for cells in span_executor.read_aligned_cells(span_file.path, span_file.columns, columns):
      for column, cell in zip(columns, cells):
        value = structure.typed_value(cell, types[column]) if cell else None
        if cell and value is None:
          breaks.add(column, cell)
        values[column].append(None if value is None else [value])
      rows += 1
      breaks.rows += 1
      if rows == batch_size:
        yield _record_batch(values, types)
        values, rows = {c: [] for c in columns}, 0
    if rows:
      yield _record_batch(values, types)


def _record_batch(values: Dict[str, list], types: Dict[str, int]) -> pa.RecordBatch:
  return pa.RecordBatch.from_arrays(
      [pa.array(column, type=_ARROW_TYPES[types[name]]) for name, column in values.items()],
      list(values))


def span_statistics(files: Sequence[structure.SpanFile], schema: schema_pb2.Schema,
                    options: tfdv.StatsOptions
                    ) -> Tuple[Dict[int, Statistics], Optional[Statistics],
                               Dict[int, structure.TypeBreaks]]:
  """({span: statistics}, statistics of the spans before the newest one (None for one span),
  {span: type breaks}). TFDV's generators in this process, one accumulator per span and one for
  the spans before the newest, fed batch by batch."""
  generators = stats_impl.get_generators(options, in_memory=True)
  by_span = files_by_span(files)
  newest = max(by_span)
  previous = [g.create_accumulator() for g in generators] if len(by_span) > 1 else None
  statistics, type_breaks = {}, {}
  for span, span_files in by_span.items():
    breaks = type_breaks[span] = structure.TypeBreaks(span, span_files[0].version)
    accumulators = [g.create_accumulator() for g in generators]
    for batch in span_record_batches(span_files, schema, breaks):
      accumulators = [g.add_input(a, batch) for g, a in zip(generators, accumulators)]
      if span != newest:
        previous = [g.add_input(a, batch) for g, a in zip(generators, previous)]
    statistics[span] = stats_impl.extract_statistics_output(accumulators, generators)
  return (statistics,
          stats_impl.extract_statistics_output(previous, generators) if previous else None,
          type_breaks)


def validate_spans(statistics: Mapping[int, Statistics], previous: Optional[Statistics],
                   files: Sequence[structure.SpanFile], schema: schema_pb2.Schema,
                   drift_excluded: Sequence[str] = (), root: Optional[str] = None,
                   type_breaks: Optional[Mapping[int, structure.TypeBreaks]] = None
                   ) -> Dict[int, anomalies_pb2.Anomalies]:
  """{span: Anomalies}: header findings, type breaks and schema anomalies of every span; for the
  newest span (with `previous`, the statistics of the spans before it) drift and presence drops
  too."""
  findings = structure.check_headers(files, schema, root=root)
  for breaks in (type_breaks or {}).values():
    findings += breaks.findings(schema)
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
      missing = {f.feature for f in span_findings
                 if f.anomaly_type in (structure.MISSING_COLUMN, structure.TYPE_BREAK)}
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


class Executor(base_executor.BaseExecutor):
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
    spans = list(versions)
    options = stats_options(exec_properties.get(spec.STATS_OPTIONS_KEY), schema)
    drift_excluded = json.loads(exec_properties.get(spec.DRIFT_EXCLUDED_KEY) or '[]')

    by_span, previous, type_breaks = span_statistics(files, schema, options)
    statistics = artifact_utils.get_single_instance(output_dict[spec.STATISTICS_KEY])
    splits = {spec.span_split(span): stats for span, stats in by_span.items()}
    if previous is not None:
      splits[spec.previous_split(spans[0], spans[-2])] = previous
    for split, stats in splits.items():
      io_utils.write_bytes_file(statistics_path(statistics.uri, split), stats.SerializeToString())
    anomalies_by_span = validate_spans(by_span, previous, files, schema, drift_excluded,
                                       recorded.get('input_base'), type_breaks)

    anomalies = artifact_utils.get_single_instance(output_dict[spec.ANOMALIES_KEY])
    statistics.split_names = artifact_utils.encode_split_names(list(splits))
    anomalies.split_names = artifact_utils.encode_split_names(
        write_anomalies(anomalies.uri, anomalies_by_span))
    for artifact in (statistics, anomalies):
      artifact.set_string_custom_property(spec.SPAN_VERSIONS_PROPERTY,
                                          span_driver.format_span_versions(versions))
      artifact.set_int_custom_property(spec.NEWEST_SPAN_PROPERTY, spans[-1])
      artifact.set_string_custom_property(
          spec.PREVIOUS_SPANS_PROPERTY, f'{spans[0]}-{spans[-2]}' if len(spans) > 1 else '')
