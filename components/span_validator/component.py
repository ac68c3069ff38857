"""SpanValidator: each span checked on its own, and the newest span against the ones before it.

StatisticsGen and ExampleValidator see the whole span range as one dataset (split train/eval):
a column dropped from one span, or emptied on part of its rows, is diluted by the other spans
and named nowhere. SpanValidator reads the files SpanRangeCsvExampleGen recorded on its Examples
(`span_files`: every span version's files with their headers) and, per span:
- structure, before statistics: a schema feature missing from a file's header is a
  SCHEMA_MISSING_COLUMN anomaly, a column the schema does not know a SCHEMA_NEW_COLUMN one, each
  naming the span, the version, the file and the column;
- values typed by the schema: a cell of the wrong type (text in a numeric column) is counted and
  named per span (UNEXPECTED_DATA_TYPE);
- statistics (TFDV, the pipeline's statistics options, computed in this process: spans are a
  few thousand rows, where a Beam pipeline's start-up costs more than the work) validated
  against the schema (TRAINING environment): presence, domains, ranges of that span alone;
- for the newest span, against the spans before it: TFDV's drift comparators as the schema sets
  them (L-infinity for categorical features, Jensen-Shannon divergence for numeric ones; the
  features of `drift_excluded_features`, e.g. the calendar ones a half-year span cannot share
  with its predecessors, are not compared) and presence drops (a column going empty on part of
  the rows while the schema's minimum still holds).

It decides nothing: DataGate (components/data_gate/) gives each anomaly a severity and stops the
run on blocking ones, naming the span it came from.

Outputs: `statistics` (ExampleStatistics, splits `span-<N>` and `spans-<first>-<last>`, the spans
before the newest together) and `anomalies` (ExampleAnomalies, splits `span-<N>`), both with the
custom properties `span_versions`, `newest_span`, `previous_spans`.

Example:
  span_validator = SpanValidator(examples=example_gen.outputs['examples'],
                                 schema=schema_importer.outputs['schema'],
                                 stats_options=tfdv.StatsOptions(**STATS_OPTIONS),
                                 drift_excluded_features=('trip_start_month',))
"""
import json
from typing import Optional, Sequence

import tensorflow_data_validation as tfdv
from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.span_validator import executor
from components.span_validator import spec


class SpanValidator(base_component.BaseComponent):
  """Per-span structure, statistics and validation; the newest span against the others."""

  SPEC_CLASS = spec.SpanValidatorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, schema: types.BaseChannel,
               stats_options: Optional[tfdv.StatsOptions] = None,
               drift_excluded_features: Sequence[str] = ()):
    super().__init__(spec=spec.SpanValidatorSpec(
        examples=examples, schema=schema,
        stats_options_json=stats_options.to_json() if stats_options else None,
        drift_excluded_features=json.dumps(sorted(drift_excluded_features)),
        statistics=types.Channel(type=standard_artifacts.ExampleStatistics),
        anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies)))
