"""TrainingBaselineResolver: the training baseline of a served version, found at run time.

The local monitoring pipeline resolves each served version's baseline through ML Metadata
lineage when the pipeline is built (metadata/lineage.py) and brings the artifacts in with
Importers. A pipeline compiled for a cluster cannot: compiling touches no store, and open-source
Kubeflow Pipelines runs no TFX Resolver. This component does the same lineage walk inside the
run, against the store named by `metadata_url` (the cluster's ML Metadata gRPC service, or MySQL,
or a local SQLite file), in either layout (TFX's or Kubeflow Pipelines v2's), and outputs a
`LooplineTrainingBaseline`: `baseline.json` naming the version, the raw training Examples, their
statistics, the model and the push (URIs, split names, MLMD ids; manifest.py), read by
DriftDetector and RealizedMetrics through their `baseline` input.

A version that was never pushed, or whose lineage is broken, fails the run with an error naming
the version and the missing link (lineage.BaselineNotFoundError).

Example:
  resolver = TrainingBaselineResolver(
      metadata_url='grpc://metadata-grpc-service.kubeflow:8080', model_name='big_tipper',
      model_version=0)    # 0: the latest push
  detector = DriftDetector(examples=..., schema=..., baseline=resolver.outputs['baseline'])
"""
from typing import Optional, Union

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.orchestration import data_types

from components.baseline_resolver import executor
from components.baseline_resolver import spec


class TrainingBaselineResolver(base_component.BaseComponent):
  """Resolves a served version's training baseline through ML Metadata at run time."""

  SPEC_CLASS = spec.TrainingBaselineResolverSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, metadata_url: str, model_name: str,
               model_version: Optional[Union[int, data_types.RuntimeParameter]] = spec.LATEST):
    super().__init__(spec=spec.TrainingBaselineResolverSpec(
        metadata_url=metadata_url, model_name=model_name, model_version=model_version,
        baseline=types.Channel(type=spec.TrainingBaseline)))
