"""SpanRangeCsvExampleGen: CsvExampleGen over a static range of spans.

TFX's CsvExampleGen ingests one span per run. Loopline trains on a range of spans (by default all
training spans), so this component keeps CsvExampleGen's contract (same spec, same `Examples`
output, same `{SPAN}`/`{VERSION}` patterns, hash split by `output_config`) and changes only span
resolution: every span in `range_config.static_range` is resolved to its latest version and read.
The output records which spans and versions were used (`span`, `version`, `span_range`,
`span_versions`, `input_fingerprint`), so MLMD answers "which data trained this model", and the
fingerprint makes a changed span (a new version) bust the cache while an unchanged range hits it.

Example:
  example_gen = SpanRangeCsvExampleGen(
      input_base='data/spans',
      input_config=example_gen_pb2.Input(splits=[example_gen_pb2.Input.Split(
          name='single_split', pattern='span-{SPAN}/version-{VERSION}/*.csv')]),
      range_config=range_config_pb2.RangeConfig(static_range=
          range_config_pb2.RangeConfig.StaticRange(start_span_number=1, end_span_number=5)))
"""
from tfx.components.example_gen.csv_example_gen import component as csv_component
from tfx.dsl.components.base import executor_spec

from components.span_example_gen import driver
from components.span_example_gen import executor


class SpanRangeCsvExampleGen(csv_component.CsvExampleGen):
  """CsvExampleGen that ingests every span of a static range (see module docstring)."""

  EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)
  DRIVER_CLASS = driver.SpanRangeDriver
