"""SpanRangeCsvExampleGen on Kubeflow Pipelines v2: span-range resolution as a container command.

On KFP v2, TFX does not run a component's Python driver. For a FileBasedExampleGen it compiles a
`pre_cache_check` lifecycle hook that runs `python -m
tfx.orchestration.kubeflow.v2.file_based_example_gen.driver`, which resolves ONE span and fails on
a static range with start != end. This module replaces it for SpanRangeCsvExampleGen, with the
same contract (an `ExecutorInput` in, an `ExecutorOutput` JSON written to `outputs.output_file`)
and the local driver's span logic (`driver.resolve_span_range`): one pattern per span of the
range (latest version wins), `span`/`version` of the last span, the fingerprint of all files, and
the `span_range`/`span_versions` custom properties on the Examples artifact.

Two invocations, told apart by TFX's own flag `--executor_class_path`:
- driver (the `pre_cache_check` hook; Vertex AI runs it before the executor):
    python -m components.span_example_gen.kfp_v2_driver --json_serialized_invocation_args ...
- executor (the container command of the ExampleGen task):
    python -m components.span_example_gen.kfp_v2_driver --executor_class_path ... \
        --json_serialized_invocation_args ... [beam args]
  The open-source KFP backend never runs `lifecycle.pre_cache_check` (its driver only turns the
  container's image/command/args into the pod), so when no driver output exists yet this runs the
  driver first, applies its result to the ExecutorInput, then hands over to TFX's KFP v2 executor
  entrypoint (`kubeflow_v2_run_executor`, through components/kfp_v2_entrypoint.py). After a
  driver that already ran (Vertex), it only hands over.
pipeline/kubeflow.py points the compiled spec at this module.
"""
import argparse
import os
import sys
from typing import Any, Dict, List, Optional, Tuple

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.components.example_gen import driver as tfx_driver
from tfx.components.example_gen import utils
from tfx.dsl.io import fileio
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_entrypoint_utils as entrypoint_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import proto_utils

from google.protobuf import json_format

from components.span_example_gen import driver

MODULE = 'components.span_example_gen.kfp_v2_driver'
COMMAND = ('python', '-m', MODULE)


def _exec_properties(executor_input: pipeline_spec_pb2.ExecutorInput,
                     inputs_spec: Optional[pipeline_spec_pb2.ComponentInputsSpec]
                     ) -> Dict[str, Any]:
  return entrypoint_utils.parse_execution_properties(
      executor_input.inputs.parameter_values, executor_input.inputs.parameters, inputs_spec)


def resolve(executor_input: pipeline_spec_pb2.ExecutorInput,
            inputs_spec: Optional[pipeline_spec_pb2.ComponentInputsSpec] = None
            ) -> pipeline_spec_pb2.ExecutorOutput:
  """The driver's result for an ExampleGen ExecutorInput: resolved parameters and artifact.

  Raises ValueError when the range config is not a static range or a span has no files.
  """
  exec_properties = _exec_properties(executor_input, inputs_spec)
  for key in (standard_component_specs.INPUT_BASE_KEY, standard_component_specs.INPUT_CONFIG_KEY,
              standard_component_specs.RANGE_CONFIG_KEY):
    if not exec_properties.get(key):
      raise ValueError(f'SpanRangeCsvExampleGen: the ExecutorInput has no {key!r} parameter')
  first_span, last_span = driver._static_range(  # pylint: disable=protected-access
      exec_properties[standard_component_specs.RANGE_CONFIG_KEY])
  input_config = example_gen_pb2.Input()
  proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY],
                            input_config)
  versions, fingerprint, patterns = driver.resolve_span_range(
      exec_properties[standard_component_specs.INPUT_BASE_KEY], input_config, first_span,
      last_span)
  for split in input_config.splits:
    split.pattern = patterns[split.name]
  input_config_json = proto_utils.proto_to_json(input_config)
  exec_properties.update({
      standard_component_specs.INPUT_CONFIG_KEY: input_config_json,
      utils.SPAN_PROPERTY_NAME: last_span,
      utils.VERSION_PROPERTY_NAME: versions[last_span],
      utils.FINGERPRINT_PROPERTY_NAME: fingerprint,
  })

  name_from_id: Dict[int, str] = {}
  outputs = entrypoint_utils.parse_raw_artifact_dict(executor_input.outputs.artifacts,
                                                     name_from_id)
  if standard_component_specs.EXAMPLES_KEY not in outputs:
    raise ValueError('SpanRangeCsvExampleGen: the ExecutorInput has no "examples" output')
  examples = artifact_utils.get_single_instance(outputs[standard_component_specs.EXAMPLES_KEY])
  tfx_driver.update_output_artifact(exec_properties, examples.mlmd_artifact)   # custom:span...
  examples.span = last_span                       # and the Examples type's own properties
  examples.version = versions[last_span]
  examples.set_string_custom_property(driver.SPAN_RANGE_PROPERTY, f'{first_span}-{last_span}')
  examples.set_string_custom_property(
      driver.SPAN_VERSIONS_PROPERTY,
      ','.join(f'{span}:{version}' for span, version in sorted(versions.items())))

  output = pipeline_spec_pb2.ExecutorOutput()
  output.parameter_values[utils.SPAN_PROPERTY_NAME].number_value = last_span
  output.parameter_values[utils.VERSION_PROPERTY_NAME].number_value = versions[last_span]
  output.parameter_values[utils.FINGERPRINT_PROPERTY_NAME].string_value = fingerprint
  output.parameter_values[standard_component_specs.INPUT_CONFIG_KEY].string_value = (
      input_config_json)
  output.artifacts[standard_component_specs.EXAMPLES_KEY].artifacts.add().CopyFrom(
      entrypoint_utils.to_runtime_artifact(examples, name_from_id))
  return output


def write_output(output: pipeline_spec_pb2.ExecutorOutput, path: str) -> None:
  fileio.makedirs(os.path.dirname(path))
  with fileio.open(path, 'wb') as f:
    f.write(json_format.MessageToJson(output, sort_keys=True))


def apply_driver_output(executor_input: pipeline_spec_pb2.ExecutorInput,
                        output: pipeline_spec_pb2.ExecutorOutput) -> None:
  """What Vertex does between driver and executor: the resolved artifact metadata goes in.

  (TFX's executor entrypoint itself reads the resolved parameters back from the output file.)
  """
  for key, artifact_list in output.artifacts.items():
    targets = executor_input.outputs.artifacts[key].artifacts
    for target, resolved in zip(targets, artifact_list.artifacts):
      target.metadata.MergeFrom(resolved.metadata)


def _parse_args(argv: List[str]) -> Tuple[argparse.Namespace, List[str]]:
  parser = argparse.ArgumentParser(prog=MODULE, description=__doc__.split('\n')[0])
  parser.add_argument('--executor_class_path')
  parser.add_argument('--json_serialized_invocation_args', required=True)
  parser.add_argument('--json_serialized_inputs_spec_args')
  return parser.parse_known_args(argv)   # the rest are Beam args, as for TFX's entrypoints


def main(argv: List[str]) -> int:
  args, beam_args = _parse_args(argv)
  executor_input = pipeline_spec_pb2.ExecutorInput()
  json_format.Parse(args.json_serialized_invocation_args, executor_input,
                    ignore_unknown_fields=True)
  inputs_spec = None
  if args.json_serialized_inputs_spec_args:
    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    json_format.Parse(args.json_serialized_inputs_spec_args, inputs_spec,
                      ignore_unknown_fields=True)
  output_file = executor_input.outputs.output_file
  if not output_file:
    raise ValueError('the ExecutorInput has no outputs.output_file')

  if args.executor_class_path is None:                      # the pre_cache_check hook
    write_output(resolve(executor_input, inputs_spec), output_file)
    return 0

  if not fileio.exists(output_file):                        # open-source KFP: no hook ran
    output = resolve(executor_input, inputs_spec)
    write_output(output, output_file)
    apply_driver_output(executor_input, output)
    args.json_serialized_invocation_args = json_format.MessageToJson(executor_input)
  # TFX's own KFP v2 executor entrypoint (pinned TFX 1.16), through Loopline's container
  # command; it reads the driver's output file.
  from components import kfp_v2_entrypoint
  kfp_v2_entrypoint.run_executor(args, beam_args)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
