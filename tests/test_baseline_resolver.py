"""TrainingBaselineResolver's lineage walk on the ML Metadata layout Kubeflow Pipelines v2 writes,
and its bad inputs (store URL, unknown version, broken lineage, damaged manifest).

The KFP-layout store is a real MLMD (SQLite) store written the way KFP's v2 launcher records a
TFX pipeline's tasks (backend/src/v2/metadata/client.go): executions of type
`system.ContainerExecution` named by the custom property `task_name`, artifact types named by
schema title (`tfx.Examples`), event paths naming the input/output key, and the TFX executor's
artifact properties as custom properties with numbers as doubles.
"""
import os

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.baseline_resolver import executor as resolver
from components.baseline_resolver import manifest as manifest_lib
from metadata import lineage
from metadata import connection as metadata_connection

VERSION = '1795759493'
ROOT = 'gs://bucket/loopline/pipeline_root/loopline-training/run-1'


def _value(value):
  result = metadata_store_pb2.Value()
  if isinstance(value, str):
    result.string_value = value
  else:
    result.double_value = float(value)       # KFP records every number as a double
  return result


class KfpStore:
  """Writes executions and artifacts as KFP v2's launcher does: every task in the contexts
  `system.Pipeline` (the pipeline's name) and `system.PipelineRun` (the run's id)."""
  PIPELINE_CONTEXT_TYPE, RUN_CONTEXT_TYPE = 'system.Pipeline', 'system.PipelineRun'

  def __init__(self, path, pipeline_name='loopline-training', run_id='run-1'):
    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = path
    connection.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE)
    self.path, self.pipeline_name = path, pipeline_name
    self.store = metadata_store.MetadataStore(connection)
    self.types = {}
    self.contexts = [self._context(self.PIPELINE_CONTEXT_TYPE, pipeline_name),
                     self._context(self.RUN_CONTEXT_TYPE, run_id)]

  def _context(self, type_name, name):
    type_id = self.store.put_context_type(metadata_store_pb2.ContextType(name=type_name))
    (context_id,) = self.store.put_contexts([metadata_store_pb2.Context(type_id=type_id,
                                                                        name=name)])
    return self.store.get_contexts_by_id([context_id])[0]

  def artifact_type_name(self, schema_title):
    return schema_title

  def value(self, value):
    return _value(value)

  def artifact(self, schema_title, uri, **metadata):
    type_name = self.artifact_type_name(schema_title)
    if type_name not in self.types:
      self.types[type_name] = self.store.put_artifact_type(
          metadata_store_pb2.ArtifactType(name=type_name))
    artifact = metadata_store_pb2.Artifact(type_id=self.types[type_name], uri=uri)
    for key, value in metadata.items():
      artifact.custom_properties[key].CopyFrom(self.value(value))
    return artifact

  def execution(self, task_name):
    """(the execution, its contexts)."""
    if 'system.ContainerExecution' not in self.types:
      self.types['system.ContainerExecution'] = self.store.put_execution_type(
          metadata_store_pb2.ExecutionType(name='system.ContainerExecution'))
    execution = metadata_store_pb2.Execution(
        type_id=self.types['system.ContainerExecution'],
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    execution.custom_properties['task_name'].string_value = task_name
    return execution, self.contexts

  def task(self, task_name, inputs, outputs):
    """Records one COMPLETE task; returns {output key: stored artifact}."""
    execution, contexts = self.execution(task_name)
    pairs = []
    for kind, artifacts in ((metadata_store_pb2.Event.INPUT, inputs),
                            (metadata_store_pb2.Event.OUTPUT, outputs)):
      for key, artifact in artifacts.items():
        event = metadata_store_pb2.Event(type=kind)
        event.path.steps.add().key = key
        pairs.append((artifact, event))
    _, artifact_ids, _ = self.store.put_execution(execution, pairs, contexts)
    stored = self.store.get_artifacts_by_id(artifact_ids)
    keys = list(inputs) + list(outputs)
    by_key = dict(zip(keys, stored))
    return {key: by_key[key] for key in outputs}


class TfxStore(KfpStore):
  """The same tasks in TFX's own layout (LocalDagRunner): artifact types without `tfx.`, one
  execution type per component, contexts `pipeline`, `pipeline_run` and `node`, ints as ints."""
  PIPELINE_CONTEXT_TYPE, RUN_CONTEXT_TYPE = 'pipeline', 'pipeline_run'

  def artifact_type_name(self, schema_title):
    return schema_title[len('tfx.'):]

  def value(self, value):
    result = metadata_store_pb2.Value()
    if isinstance(value, str):
      result.string_value = value
    else:
      result.int_value = value
    return result

  def execution(self, task_name):
    if task_name not in self.types:
      self.types[task_name] = self.store.put_execution_type(
          metadata_store_pb2.ExecutionType(name=task_name))
    node = self._context('node', f'{self.pipeline_name}.{task_name}')
    return metadata_store_pb2.Execution(
        type_id=self.types[task_name],
        last_known_state=metadata_store_pb2.Execution.COMPLETE), self.contexts + [node]


def kfp_training_run(path, with_statistics=True, store_class=KfpStore):
  """A training run's lineage as KFP v2 records it (or, with `store_class=TfxStore`, as TFX's
  LocalDagRunner does)."""
  kfp = store_class(path)
  splits = '["train", "eval"]'
  examples = kfp.task('SpanRangeCsvExampleGen', {}, {'examples': kfp.artifact(
      'tfx.Examples', f'{ROOT}/SpanRangeCsvExampleGen/examples', split_names=splits,
      span=5, span_range='1-5')})['examples']
  statistics = None
  if with_statistics:
    statistics = kfp.task('StatisticsGen', {'examples': examples}, {'statistics': kfp.artifact(
        'tfx.ExampleStatistics', f'{ROOT}/StatisticsGen/statistics',
        split_names=splits)})['statistics']
  # Transform's statistics of the same data must not be taken for StatisticsGen's.
  transformed = kfp.task('Transform', {'examples': examples}, {
      'transformed_examples': kfp.artifact('tfx.Examples', f'{ROOT}/Transform/transformed',
                                           split_names=splits),
      'pre_transform_stats': kfp.artifact('tfx.ExampleStatistics', f'{ROOT}/Transform/pre')
  })['transformed_examples']
  model = kfp.task('Trainer', {'examples': transformed}, {
      'model': kfp.artifact('tfx.Model', f'{ROOT}/Trainer/model')})['model']
  pushed = kfp.task('AtomicPusher', {'model': model}, {'pushed_model': kfp.artifact(
      'tfx.PushedModel', f'{ROOT}/AtomicPusher/pushed_model', pushed=1, pushed_version=VERSION,
      pushed_destination=f'gs://bucket/loopline/serving/big_tipper/{VERSION}')})['pushed_model']
  return kfp, {'examples': examples, 'statistics': statistics, 'model': model,
               'pushed_model': pushed}


def test_walks_the_kubeflow_layout(tmp_path):
  kfp, artifacts = kfp_training_run(str(tmp_path / 'kfp.sqlite'))
  manifest = resolver.resolve_manifest(kfp.store, 'big_tipper')        # the latest push
  assert manifest.model_version == int(VERSION)
  assert manifest.artifact_ids == {key: artifact.id for key, artifact in artifacts.items()}
  assert manifest.examples_uri == f'{ROOT}/SpanRangeCsvExampleGen/examples'
  assert manifest.statistics_uri == f'{ROOT}/StatisticsGen/statistics'
  assert manifest.examples_splits == manifest.statistics_splits == ['train', 'eval']
  assert resolver.resolve_manifest(kfp.store, 'big_tipper', int(VERSION)) == manifest
  assert lineage.served_versions(kfp.store, 'big_tipper') == [VERSION]


@pytest.mark.parametrize('store_class', [KfpStore, TfxStore])
def test_a_later_pipeline_that_reuses_the_push_does_not_hide_its_lineage(tmp_path, store_class):
  """A monitoring pipeline's Importer records the PushedModel as its output too: the walk still
  follows the pipeline whose pusher wrote it."""
  path = str(tmp_path / 'metadata.sqlite')
  _, artifacts = kfp_training_run(path, store_class=store_class)
  monitoring = store_class(path, pipeline_name='loopline-monitoring', run_id='run-2')
  monitoring.task('baseline_pushed_model', {}, {'result': artifacts['pushed_model']})
  baseline = lineage.resolve_training_baseline(monitoring.store, VERSION)
  assert (baseline.model.id, baseline.examples.id, baseline.statistics.id) == (
      artifacts['model'].id, artifacts['examples'].id, artifacts['statistics'].id)


def test_the_store_is_opened_from_its_url(tmp_path):
  kfp, _ = kfp_training_run(str(tmp_path / 'kfp.sqlite'))
  store = metadata_connection.open_store(
      metadata_connection.connection_from_url(f'sqlite://{kfp.path}'))
  assert resolver.resolve_manifest(store, 'big_tipper').model_version == int(VERSION)
  client = metadata_connection.connection_from_url('grpc://metadata-grpc-service.kubeflow:8080')
  assert (client.host, client.port) == ('metadata-grpc-service.kubeflow', 8080)
  mysql = metadata_connection.connection_from_url('mysql://ml:pw@db:3307/metadb').mysql
  assert (mysql.host, mysql.port, mysql.user, mysql.password, mysql.database) == (
      'db', 3307, 'ml', 'pw', 'metadb')


@pytest.mark.parametrize('url, error, message', [
    ('grpc://host', ValueError, 'must look like grpc://HOST:PORT'),
    ('grpc://:8080', ValueError, 'must look like grpc://HOST:PORT'),
    ('sqlite://relative/m.sqlite', ValueError, 'must be absolute'),
    ('sqlite:///nonexistent/m.sqlite', FileNotFoundError, 'no SQLite file at /nonexistent'),
    ('postgres://u@h/db', ValueError, 'use grpc://HOST:PORT, mysql://USER@HOST/DB or sqlite'),
    ('mysql://h/db', ValueError, 'has no user'),
])
def test_bad_store_urls_are_named(url, error, message):
  with pytest.raises(error, match=message):
    metadata_connection.connection_from_url(url)


def test_unknown_version_and_broken_lineage_are_named(tmp_path):
  kfp, _ = kfp_training_run(str(tmp_path / 'kfp.sqlite'), with_statistics=False)
  with pytest.raises(lineage.BaselineNotFoundError,
                     match=f"version '7'.*pushed versions: {VERSION}"):
    resolver.resolve_manifest(kfp.store, 'big_tipper', 7)
  with pytest.raises(lineage.BaselineNotFoundError,
                     match=f'version {VERSION}: no StatisticsGen output for the training examples'):
    resolver.resolve_manifest(kfp.store, 'big_tipper')
  empty = KfpStore(str(tmp_path / 'empty.sqlite'))
  with pytest.raises(lineage.BaselineNotFoundError, match='no model was ever pushed'):
    resolver.resolve_manifest(empty.store, 'big_tipper')


def test_manifest_round_trip_and_damage(tmp_path):
  kfp, _ = kfp_training_run(str(tmp_path / 'kfp.sqlite'))
  manifest = resolver.resolve_manifest(kfp.store, 'big_tipper')
  manifest_lib.write(str(tmp_path), manifest)
  assert manifest_lib.read(str(tmp_path)) == manifest
  path = tmp_path / manifest_lib.BASELINE_FILE
  path.write_text(path.read_text()[:40])
  with pytest.raises(ValueError, match=f'{path} is not JSON'):
    manifest_lib.read(str(tmp_path))
  path.write_text('{"model_name": "big_tipper", "colour": 1}')
  with pytest.raises(ValueError, match=r"missing fields \[.*'model_version'.*unknown fields "
                                       r"\['colour'\]"):
    manifest_lib.read(str(tmp_path))
  os.remove(path)
  with pytest.raises(FileNotFoundError, match='no baseline.json under'):
    manifest_lib.read(str(tmp_path))


def test_components_take_exactly_one_form_of_baseline():
  from tfx import types
  from tfx.types import standard_artifacts
  from components.baseline_resolver import spec as resolver_spec
  from components.drift_detector.component import DriftDetector
  from components.realized_metrics.component import RealizedMetrics
  examples = types.Channel(type=standard_artifacts.Examples)
  schema = types.Channel(type=standard_artifacts.Schema)
  baseline = types.Channel(type=resolver_spec.TrainingBaseline)
  with pytest.raises(ValueError, match='give exactly one of the two'):
    DriftDetector(examples=examples, schema=schema)
  with pytest.raises(ValueError, match='give exactly one of the two'):
    DriftDetector(examples=examples, schema=schema, baseline_examples=examples,
                  baseline=baseline)
  with pytest.raises(ValueError, match='do not pass them too'):
    DriftDetector(examples=examples, schema=schema, baseline=baseline,
                  model=types.Channel(type=standard_artifacts.Model))
  evaluation = types.Channel(type=standard_artifacts.ModelEvaluation)
  with pytest.raises(ValueError, match='exactly one of `model_version` and `baseline`'):
    RealizedMetrics(evaluation=evaluation, model_name='m', min_auc=0.5)
  assert RealizedMetrics(evaluation=evaluation, model_name='m', min_auc=0.5,
                         baseline=baseline).spec.exec_properties['model_version'] is None
