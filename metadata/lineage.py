"""The training baseline of a served model version, resolved through ML Metadata lineage.

Drift must be measured against the data the serving model was trained on, not "the latest
statistics" (a newer run may have trained on other spans, or failed before pushing). The walk:

    PushedModel (custom property pushed_version == the serving version, pushed == 1)
      <- AtomicPusher  (its input `model`)            -> Model
      <- Trainer       (its input `examples`)         -> the examples the model was trained on
      <- Transform     (its input `examples`), and so on up the chain of Examples producers,
                                                       until the ExampleGen's raw Examples
      -> StatisticsGen (an execution that read those Examples; its output `statistics`)
                                                       -> ExampleStatistics of the raw data

`resolve_training_baseline(store, pushed_version)` returns all four artifacts as MLMD protos
(`TrainingBaseline`); `baseline_importers(baseline)` turns them into TFX Importer nodes with
`reimport=False`, which re-use these very MLMD artifacts (same id, same properties), so a
monitoring pipeline's DriftDetector gets the baseline as ordinary input channels and MLMD records
the edge training data -> drift verdict.

The walk finds the pipeline whose pusher wrote the PushedModel and walks that pipeline's lineage
graph (metadata.graph, the one walk the registry and the notebooks use too), in both layouts of ML
Metadata a Loopline pipeline writes, TFX's own and Kubeflow Pipelines v2's (metadata.layout). The
runtime resolver of the cluster pipelines (components/baseline_resolver) runs the same walk inside
the cluster.

Only ml_metadata here (TFX is imported by `baseline_importers` alone).
"""
import dataclasses
import os
from typing import Dict, List, Optional, Union

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from metadata import graph
from metadata import layout
from metadata import queries as mq

PUSHED_MODEL_TYPE = 'PushedModel'
MODEL_TYPE = 'Model'
EXAMPLES_TYPE = 'Examples'
STATISTICS_TYPE = 'ExampleStatistics'
STATISTICS_GEN_SUFFIX = 'StatisticsGen'
_DONE = (metadata_store_pb2.Execution.COMPLETE, metadata_store_pb2.Execution.CACHED)
MAX_CHAIN = 10


class BaselineNotFoundError(LookupError):
  """No baseline for the requested version; the message says which link is missing."""


@dataclasses.dataclass
class TrainingBaseline:
  pushed_version: str
  pushed_model: metadata_store_pb2.Artifact
  model: metadata_store_pb2.Artifact
  examples: metadata_store_pb2.Artifact          # raw (ExampleGen) Examples
  statistics: metadata_store_pb2.Artifact        # StatisticsGen output over `examples`
  trained_on: metadata_store_pb2.Artifact         # the Trainer's input (e.g. Transform's output)

  def describe(self) -> str:
    return (f'version {self.pushed_version}: model {self.model.uri}, trained on examples '
            f'{self.examples.uri} (spans {mq.custom_property(self.examples, "span_range")}), '
            f'statistics {self.statistics.uri}')


def _artifact_types(store: metadata_store.MetadataStore,
                    name: str) -> List[metadata_store_pb2.ArtifactType]:
  """The artifact type `name` as the store has it, in either layout (`name`, KFP's `tfx.name`)."""
  found = []
  for type_name in layout.type_names(name):
    try:
      found.append(store.get_artifact_type(type_name))
    except Exception:  # pylint: disable=broad-except  # NotFoundError: nothing of that type yet
      pass
  return found


def _property(artifact: metadata_store_pb2.Artifact, name: str):
  """A custom property; an integral double (how KFP records TFX's ints) as an int."""
  return layout.number(mq.custom_property(artifact, name))


def pushed_models(store: metadata_store.MetadataStore,
                  model_name: Optional[str] = None) -> List[metadata_store_pb2.Artifact]:
  """Every PushedModel that was actually pushed (pushed == 1), oldest first.

  `model_name`: only pushes whose destination is `<base>/<model_name>/<version>`.
  """
  result = []
  candidates = [artifact for artifact_type in _artifact_types(store, PUSHED_MODEL_TYPE)
                for artifact in store.get_artifacts_by_type(artifact_type.name)]
  for artifact in candidates:
    if _property(artifact, 'pushed') != 1:
      continue
    if model_name:
      destination = str(_property(artifact, 'pushed_destination') or '')
      if os.path.basename(os.path.dirname(destination.rstrip('/'))) != model_name:
        continue
    result.append(artifact)
  return sorted(result, key=lambda a: (a.create_time_since_epoch, a.id))


def served_versions(store: metadata_store.MetadataStore,
                    model_name: Optional[str] = None) -> List[str]:
  return sorted({str(_property(a, 'pushed_version')) for a in pushed_models(
      store, model_name)}, key=lambda v: (len(v), v))


def resolve_training_baseline(store: metadata_store.MetadataStore,
                              pushed_version: Union[int, str, None] = None,
                              model_name: Optional[str] = None) -> TrainingBaseline:
  """The baseline of a served version (None: the latest push). See the module docstring.

  Raises BaselineNotFoundError naming the version and the missing link (an unknown version lists
  the versions that were pushed).
  """
  pushes = pushed_models(store, model_name)
  if pushed_version is None:
    if not pushes:
      raise BaselineNotFoundError('no model was ever pushed (no PushedModel with pushed=1 in ML '
                                  'Metadata)')
    pushed = pushes[-1]
  else:
    wanted = str(pushed_version)
    matching = [a for a in pushes if str(_property(a, 'pushed_version')) == wanted]
    if not matching:
      known = served_versions(store, model_name)
      raise BaselineNotFoundError(
          f'no pushed model with version {wanted!r}'
          f'{" for model " + repr(model_name) if model_name else ""} in ML Metadata '
          f'(pushed versions: {", ".join(known) or "none"})')
    # The first push of the version created it; a later identical model re-recorded it.
    pushed = matching[0]
  version = str(_property(pushed, 'pushed_version'))

  pipeline_name = graph.producing_pipeline(store, pushed.id)
  if pipeline_name is None:
    raise BaselineNotFoundError(f'version {version}: no execution produced PushedModel '
                                f'{pushed.id}')
  pipeline_graph = graph.Graph(store, pipeline_name)
  pusher = pipeline_graph.producer(pushed.id)
  model = pipeline_graph.first_input(pusher, 'model')
  if model is None:
    raise BaselineNotFoundError(f'version {version}: the pusher (execution {pusher}) has no '
                                'input model')
  trainer = pipeline_graph.producer(model.id)
  if trainer is None:
    raise BaselineNotFoundError(f'version {version}: no execution produced model {model.id}')
  trained_on = pipeline_graph.first_input(trainer, 'examples')
  if trained_on is None:
    raise BaselineNotFoundError(f'version {version}: the trainer (execution {trainer}) has no '
                                'input examples')
  examples = _raw_examples(pipeline_graph, trained_on)
  statistics = _statistics(pipeline_graph, examples)
  if statistics is None:
    raise BaselineNotFoundError(f'version {version}: no StatisticsGen output for the training '
                                f'examples {examples.uri} (artifact {examples.id})')
  return TrainingBaseline(version, pushed, model, examples, statistics, trained_on)


def _raw_examples(pipeline_graph: graph.Graph, examples: metadata_store_pb2.Artifact
                  ) -> metadata_store_pb2.Artifact:
  """Walks producers' `examples` inputs up to the Examples an ExampleGen wrote."""
  current = examples
  for _ in range(MAX_CHAIN):
    producer = pipeline_graph.producer(current.id)
    parents = [] if producer is None else [
        a for a in pipeline_graph.input(producer, 'examples')
        if pipeline_graph.type_name(a) == EXAMPLES_TYPE]
    if not parents:
      return current          # an ExampleGen's output, imported, or produced outside the pipeline
    current = parents[0]
  raise BaselineNotFoundError(f'Examples lineage of artifact {examples.id} deeper than '
                              f'{MAX_CHAIN} steps')


def _statistics(pipeline_graph: graph.Graph, examples: metadata_store_pb2.Artifact
                ) -> Optional[metadata_store_pb2.Artifact]:
  """The `statistics` output of the latest StatisticsGen execution that read `examples`.

  (Transform's `pre_transform_stats` are also ExampleStatistics of the same data, computed with
  other options: they are not what the training pipeline's validation saw, so they are skipped.)
  """
  for execution in reversed(pipeline_graph.consuming(examples.id, 'examples')):
    if (pipeline_graph.node.get(execution, '').endswith(STATISTICS_GEN_SUFFIX) and
        pipeline_graph.executions[execution].last_known_state in _DONE):
      statistics = pipeline_graph.first_output(execution, 'statistics')
      if statistics is not None:
        return statistics
  return None


def split_names(artifact: metadata_store_pb2.Artifact) -> Optional[str]:
  """The JSON-encoded split names of Examples or statistics: a property in TFX's layout, a custom
  property (KFP's artifact metadata) in Kubeflow's; None when there are none."""
  return (mq.artifact_property(artifact, 'split_names') or
          mq.custom_property(artifact, 'split_names'))


def baseline_importers(baseline: TrainingBaseline, prefix: str = 'baseline') -> Dict[str, object]:
  """TFX Importer nodes for the baseline's artifacts, re-using them in MLMD (reimport=False).

  Keys: 'examples', 'statistics', 'model', 'pushed_model'; each node's output is
  `.outputs['result']`. Node ids are `<prefix>_<key>` (pass another prefix per served version).
  Split names and the push's custom properties are passed so that the Importer matches (and
  re-uses) exactly the resolved artifact.
  """
  from tfx import v1 as tfx
  from tfx.types import standard_artifacts
  nodes = {}
  for key, artifact, artifact_type in (
      ('examples', baseline.examples, standard_artifacts.Examples),
      ('statistics', baseline.statistics, standard_artifacts.ExampleStatistics),
      ('model', baseline.model, standard_artifacts.Model),
      ('pushed_model', baseline.pushed_model, standard_artifacts.PushedModel)):
    properties = {}
    if split_names(artifact):
      properties['split_names'] = split_names(artifact)
    custom = {}
    if key == 'pushed_model':
      custom = {'pushed_version': baseline.pushed_version, 'pushed': 1}
    nodes[key] = tfx.dsl.Importer(source_uri=artifact.uri, artifact_type=artifact_type,
                                  reimport=False, properties=properties or None,
                                  custom_properties=custom or None).with_id(f'{prefix}_{key}')
  return nodes
