"""Contract of SpanValidator: its inputs, outputs, parameters and properties, in one place."""
from tfx import types
from tfx.types import component_spec
from tfx.types import standard_artifacts

# Inputs.
EXAMPLES_KEY = 'examples'      # SpanRangeCsvExampleGen's output: its `span_files` property
SCHEMA_KEY = 'schema'
# Parameters.
STATS_OPTIONS_KEY = 'stats_options_json'      # tfdv.StatsOptions JSON (without a schema)
DRIFT_EXCLUDED_KEY = 'drift_excluded_features'  # JSON list: features the newest span is not
#                                               compared on (their drift comparator is ignored)
# Outputs.
STATISTICS_KEY = 'statistics'  # splits `span-<N>` (each span) and `spans-<first>-<last>` (the
#                                spans before the newest one, together)
ANOMALIES_KEY = 'anomalies'    # splits `span-<N>`: structure, schema, and for the newest span
#                                drift and presence against the spans before it

ANOMALIES_FILE = 'SchemaDiff.pb'      # as ExampleValidator writes it, under Split-<split>/
STATISTICS_FILE = 'FeatureStats.pb'   # as StatisticsGen writes it, under Split-<split>/

# Custom properties of both outputs.
SPAN_VERSIONS_PROPERTY = 'span_versions'   # '1:1,2:1,...' as on the Examples artifact
NEWEST_SPAN_PROPERTY = 'newest_span'       # the span compared with the ones before it
PREVIOUS_SPANS_PROPERTY = 'previous_spans'  # '1-5', or '' when the range has one span


def span_split(span: int) -> str:
  return f'span-{span}'


def span_of_split(split: str) -> int:
  """'span-6' -> 6; ValueError for another name."""
  prefix, _, number = split.partition('-')
  if prefix != 'span' or not number.isdigit():
    raise ValueError(f'{split!r} is not a span split (span-<N>)')
  return int(number)


def previous_split(first: int, last: int) -> str:
  return f'spans-{first}-{last}'


class SpanValidatorSpec(types.ComponentSpec):
  PARAMETERS = {
      STATS_OPTIONS_KEY: component_spec.ExecutionParameter(type=str, optional=True),
      DRIFT_EXCLUDED_KEY: component_spec.ExecutionParameter(type=str, optional=True),
  }
  INPUTS = {
      EXAMPLES_KEY: component_spec.ChannelParameter(type=standard_artifacts.Examples),
      SCHEMA_KEY: component_spec.ChannelParameter(type=standard_artifacts.Schema),
  }
  OUTPUTS = {
      STATISTICS_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleStatistics),
      ANOMALIES_KEY: component_spec.ChannelParameter(type=standard_artifacts.ExampleAnomalies),
  }
