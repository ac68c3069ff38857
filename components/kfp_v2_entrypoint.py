"""The container command of every Loopline task compiled for Kubeflow Pipelines v2: TFX's own KFP v2
executor entrypoint (`tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor`, pinned
TFX 1.16), after one repair of its input.

Open-source KFP's driver hands a task its upstream artifacts with an empty type schema (its
metadata client does not keep the schema of an output: backend/src/v2/metadata/client.go), and
TFX's entrypoint imports each input artifact's class from the title of that schema: every task
with an input artifact then fails with `AttributeError: 'NoneType' object has no attribute 'get'`
(reported as tensorflow/tfx issue 7768, TFX 1.16 on Kubeflow 1.8). The compiled spec already
passes each component's input definitions, types included, as
`--json_serialized_inputs_spec_args`: an input artifact whose type has no title gets the type of
its definition, then TFX's entrypoint runs unchanged. Artifacts that come with a type (Vertex AI)
are left as they are.

  python -m components.kfp_v2_entrypoint --executor_class_path ... \
      --json_serialized_invocation_args '{{$}}' --json_serialized_inputs_spec_args ... [beam args]

pipeline/kubeflow.py points the compiled spec at this module; the span-range ExampleGen driver
(components/span_example_gen/kfp_v2_driver.py) hands over to `run_executor` too.
"""
import argparse
from typing import List

import yaml
from absl import app
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx.orchestration.kubeflow.v2.container import kubeflow_v2_run_executor



def has_title(artifact_type: pipeline_spec_pb2.ArtifactTypeSchema) -> bool:
  """Whether TFX can tell the artifact's class from this type (a schema title)."""
  kind = artifact_type.WhichOneof('kind')
  if kind == 'schema_title':
    return bool(artifact_type.schema_title)
  if kind == 'instance_schema':
    schema = yaml.safe_load(artifact_type.instance_schema)
    return isinstance(schema, dict) and bool(schema.get('title'))
  return False


def fill_input_types(executor_input: pipeline_spec_pb2.ExecutorInput,
                     inputs_spec: pipeline_spec_pb2.ComponentInputsSpec) -> List[str]:
  """Gives every input artifact without a titled type the type of its input definition.

  Returns the keys it filled. ValueError names an input that has neither.
  """
  filled = []
  for key, artifact_list in executor_input.inputs.artifacts.items():
    for artifact in artifact_list.artifacts:
      if has_title(artifact.type):
        continue
      if key not in inputs_spec.artifacts:
        raise ValueError(f'input artifact {key!r} has no type and the component declares no '
                         f'input {key!r} (inputs: {", ".join(sorted(inputs_spec.artifacts))})')
      artifact.type.CopyFrom(inputs_spec.artifacts[key].artifact_type)
      filled.append(key)
  return filled


def run_executor(args: argparse.Namespace, beam_args: List[str]) -> None:
  """TFX's `_run_executor` on the arguments, with the input types filled in (see the module
  docstring)."""
  if args.json_serialized_inputs_spec_args:
    executor_input = pipeline_spec_pb2.ExecutorInput()
    json_format.Parse(args.json_serialized_invocation_args, executor_input,
                      ignore_unknown_fields=True)
    inputs_spec = pipeline_spec_pb2.ComponentInputsSpec()
    json_format.Parse(args.json_serialized_inputs_spec_args, inputs_spec,
                      ignore_unknown_fields=True)
    if fill_input_types(executor_input, inputs_spec):
      args.json_serialized_invocation_args = json_format.MessageToJson(executor_input)
  kubeflow_v2_run_executor._run_executor(args, beam_args)  # pylint: disable=protected-access


def _main(parsed_argv) -> None:
  args, beam_args = parsed_argv
  run_executor(args, beam_args)


if __name__ == '__main__':
  # TFX's own flag parser: the same arguments, the rest are Beam args.
  app.run(_main,
          flags_parser=kubeflow_v2_run_executor._parse_flags)  # pylint: disable=protected-access
