"""The two layouts of ML Metadata a Loopline pipeline writes, in one place.

- TFX's own (LocalDagRunner, and Vertex AI): artifact types `PushedModel`, execution types named
  after the component, contexts `pipeline` (name: the pipeline), `pipeline_run` and `node`
  (`<pipeline>.<node id>`), typed properties.
- Kubeflow Pipelines v2's (its launcher, backend/src/v2/metadata/client.go): artifact types named
  by schema title (`tfx.PushedModel`), executions of type `system.ContainerExecution` with the
  component's id in the custom property `task_name`, contexts `system.Pipeline` and
  `system.PipelineRun`, the component's parameters in the execution's custom property `inputs`
  (a struct), artifact metadata as custom properties with every number a double.

Event paths name the input or output key in both. The lineage walk (metadata.lineage) and the
lineage graph (metadata.graph) read either through these functions.
"""
from typing import Optional, Tuple

PIPELINE_CONTEXT_TYPE = 'pipeline'
RUN_CONTEXT_TYPE = 'pipeline_run'
NODE_CONTEXT_TYPE = 'node'
KFP_TYPE_PREFIX = 'tfx.'
KFP_TASK_NAME_PROPERTY = 'task_name'
KFP_INPUTS_PROPERTY = 'inputs'          # an execution's input parameters, one struct
KFP_PIPELINE_CONTEXT_TYPE = 'system.Pipeline'
KFP_RUN_CONTEXT_TYPE = 'system.PipelineRun'


def type_names(name: str) -> Tuple[str, str]:
  """The names an artifact type has in either layout: `PushedModel`, `tfx.PushedModel`."""
  return name, KFP_TYPE_PREFIX + name


def artifact_type_name(stored_name: str) -> str:
  """The TFX name of a stored artifact type name (`tfx.Model` -> `Model`)."""
  return stored_name[len(KFP_TYPE_PREFIX):] if stored_name.startswith(KFP_TYPE_PREFIX) else \
      stored_name


def task_name(execution) -> Optional[str]:
  """KFP's `task_name` of an execution (the component's id), None in TFX's layout."""
  if KFP_TASK_NAME_PROPERTY in execution.custom_properties:
    return execution.custom_properties[KFP_TASK_NAME_PROPERTY].string_value
  return None


def number(value):
  """An integral double (how KFP records TFX's ints) as an int; anything else as it is."""
  if isinstance(value, float) and value.is_integer():
    return int(value)
  return value
