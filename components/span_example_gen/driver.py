"""Driver of SpanRangeCsvExampleGen: resolves every span of a static range, not just one.

TFX's FileBasedDriver resolves a single span (`static_range` with start == end, or the latest
span). This driver resolves each span of `[start_span_number, end_span_number]` with TFX's own
FileBasedInputProcessor (so `{SPAN}`, `{VERSION}` and "latest version wins" keep their meaning),
passes one pattern per span to the executor, and records the range on the output artifact:
`span` (last span, standard property), `version` (of the last span), `input_fingerprint` (all
files), plus the custom properties `span_range` ("1-5") and `span_versions` ("1:1,2:1,...").
"""
from typing import Any, Dict, List, Tuple

from tfx.components.example_gen import driver
from tfx.components.example_gen import input_processor
from tfx.components.example_gen import utils
from tfx.orchestration.portable import data_types as portable_data_types
from tfx.proto import example_gen_pb2
from tfx.proto import range_config_pb2
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

PATTERN_SEPARATOR = '\n'
SPAN_RANGE_PROPERTY = 'span_range'
SPAN_VERSIONS_PROPERTY = 'span_versions'


def format_span_versions(versions: Dict[int, int]) -> str:
  """{1: 1, 2: 3} -> '1:1,2:3' (the `span_versions` custom property)."""
  return ','.join(f'{span}:{version}' for span, version in sorted(versions.items()))


def parse_span_versions(text: str) -> Dict[int, int]:
  """'1:1,2:3' -> {1: 1, 2: 3}; ValueError naming the text when it is not of that form."""
  try:
    return {int(span): int(version) for span, version in
            (item.split(':') for item in text.split(',') if item)}
  except ValueError as e:
    raise ValueError(f'span_versions {text!r} is not of the form "1:1,2:3"') from e


def _static_range(range_config_json: str) -> Tuple[int, int]:
  range_config = range_config_pb2.RangeConfig()
  proto_utils.json_to_proto(range_config_json, range_config)
  if not range_config.HasField('static_range'):
    raise ValueError('SpanRangeCsvExampleGen needs a RangeConfig.static_range')
  return (range_config.static_range.start_span_number,
          range_config.static_range.end_span_number)


def resolve_span_range(input_base: str, input_config: example_gen_pb2.Input, first_span: int,
                       last_span: int) -> Tuple[Dict[int, int], str, Dict[str, str]]:
  """Resolves each span of the range to its latest version.

  Returns ({span: version}, fingerprint of all files, {split name: patterns joined by newline}).
  Raises ValueError naming the span when one has no files.
  """
  versions: Dict[int, int] = {}
  fingerprints: List[str] = []
  patterns: Dict[str, List[str]] = {split.name: [] for split in input_config.splits}
  for span in range(first_span, last_span + 1):
    one_span = range_config_pb2.RangeConfig(
        static_range=range_config_pb2.StaticRange(
            start_span_number=span, end_span_number=span))
    processor = input_processor.FileBasedInputProcessor(input_base, input_config.splits,
                                                         one_span)
    try:
      resolved_span, version = processor.resolve_span_and_version()
      fingerprints.append(processor.get_input_fingerprint(resolved_span, version))
    except ValueError as e:
      raise ValueError(f'span {span} under {input_base}: {e}') from e
    versions[span] = version if version is not None else 0
    for split in input_config.splits:
      patterns[split.name].append(
          processor.get_pattern_for_span_version(split.pattern, resolved_span, version))
  joined = {name: PATTERN_SEPARATOR.join(p) for name, p in patterns.items()}
  return versions, '\n'.join(fingerprints), joined


class SpanRangeDriver(driver.FileBasedDriver):
  """FileBasedDriver that resolves a whole static span range."""

  def resolve_exec_properties(self, exec_properties: Dict[str, Any], pipeline_info,
                              component_info) -> Dict[str, Any]:
    first_span, last_span = _static_range(
        exec_properties[standard_component_specs.RANGE_CONFIG_KEY])
    input_config = example_gen_pb2.Input()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                              input_config)
    versions, fingerprint, patterns = resolve_span_range(
        exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config, first_span,
        last_span)
    for split in input_config.splits:
      split.pattern = patterns[split.name]
    exec_properties[standard_component_specs.INPUT_CONFIG_KEY] = proto_utils.proto_to_json(
        input_config)
    exec_properties[utils.SPAN_PROPERTY_NAME] = last_span
    exec_properties[utils.VERSION_PROPERTY_NAME] = versions[last_span]
    exec_properties[utils.FINGERPRINT_PROPERTY_NAME] = fingerprint
    self._span_versions = versions
    return exec_properties

  def run(self, execution_info: portable_data_types.ExecutionInfo):
    result = super().run(execution_info)
    versions = self._span_versions
    for artifact in result.output_artifacts[standard_component_specs.EXAMPLES_KEY].artifacts:
      artifact.custom_properties[SPAN_RANGE_PROPERTY].string_value = (
          f'{min(versions)}-{max(versions)}')
      artifact.custom_properties[SPAN_VERSIONS_PROPERTY].string_value = (
          format_span_versions(versions))
    return result
