"""The monitoring pipeline: serving logs -> statistics -> drift -> realized performance.

    ServingLogExampleGen (request logs of a window + ground truth)
      -> StatisticsGen -> DriftDetector, one per served version, each against the training data
         of that very version (baseline resolved through MLMD lineage, metadata/lineage.py)
      -> Evaluator (model-agnostic: logged predictions vs ground truth, sliced by model_version)
         -> RealizedMetrics, one per served version

It shares the MLMD store with the training pipeline, so a drift verdict is linked to the
statistics and the model it was measured against. Which versions are monitored: the ones the
serving config labels (`stable`, `canary`), else the latest push.

Built `for_cluster` (what `loopline compile` does), the pipeline touches neither ML Metadata nor
the logs while it is built: one version is monitored, the `model_version` of the
TrainingBaselineResolver (a runtime parameter; 0, the default, is the latest push), whose
baseline that component resolves through the same lineage walk at run time; the window is not
fingerprinted (the cluster's ServingLogExampleGen task is never cached), and realized
performance is always evaluated (on no labelled row yet, TFMA returns no slice and RealizedMetrics
records 0 examples).
"""
import os
from typing import Dict, List, Optional

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.baseline_resolver.component import TrainingBaselineResolver
from components.drift_detector.component import DriftDetector
from components.realized_metrics.component import RealizedMetrics
from components.serving_log_gen import feedback as feedback_lib
from components.serving_log_gen import spec as log_gen_spec
from components.serving_log_gen.component import ServingLogExampleGen
from core import home as home_lib
from core.statistics import STATS_OPTIONS
from metadata import lineage
from metadata import connection as metadata_connection
from models import calibration_metric
from models import features
from pipeline import training_pipeline
from pipeline.config import PipelineConfig

# Per version, per training slice, and the two crossed: each version sliced like its training
# evaluation, so canary and stable compare slice by slice on real traffic.
REALIZED_SLICES = ((log_gen_spec.MODEL_VERSION_FEATURE,),) + tuple(
    (key,) for key in features.SLICE_FEATURES) + tuple(
        (log_gen_spec.MODEL_VERSION_FEATURE, key) for key in features.SLICE_FEATURES)


def served_versions(config: PipelineConfig) -> Dict[str, int]:
  """{label: version} from the serving config; {'latest': version} when nothing is labelled."""
  from serving.config import parse_model_config_text
  path = home_lib.serving_config_path(config.home)
  if os.path.exists(path):
    with open(path) as f:
      for model in parse_model_config_text(f.read()).model_config_list.config:
        if model.name == config.model_name and model.version_labels:
          return dict(model.version_labels)
  store = metadata_connection.open_pipeline_store(config)
  versions = lineage.served_versions(store, config.model_name)
  if not versions:
    raise lineage.BaselineNotFoundError('no model was ever pushed: nothing to monitor')
  return {'latest': int(versions[-1])}


def realized_eval_config() -> tfma.EvalConfig:
  """Served predictions against the ground truth, per version and per training slice."""
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(label_key=features.LABEL_KEY,
                                  prediction_key=log_gen_spec.PREDICTION_FEATURE)],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=list(keys))
                                             for keys in REALIZED_SLICES],
      metrics_specs=[tfma.MetricsSpec(metrics=[
          tfma.MetricConfig(class_name=name) for name in (
              'ExampleCount', 'AUC', 'AUCPrecisionRecall', 'BinaryAccuracy', 'Precision',
              'Recall', 'Calibration')] + [calibration_metric.metric_config()])])


def create_monitoring_pipeline(config: PipelineConfig, window_start: Optional[int] = None,
                               window_end: Optional[int] = None,
                               versions: Optional[Dict[str, int]] = None,
                               for_cluster: bool = False) -> tfx.dsl.Pipeline:
  """The monitoring pipeline of one traffic window (unix seconds, end exclusive).

  `for_cluster`: built without ML Metadata or the logs (see the module docstring).
  """
  feedback_dir = home_lib.feedback_dir(config.home)
  schema_importer = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
  log_gen = ServingLogExampleGen(
      log_dir=home_lib.request_log_dir(config.home), feedback_dir=feedback_dir,
      window_start=window_start, window_end=window_end, model_name=config.model_name,
      schema=schema_importer.outputs['schema'],
      **({'input_fingerprint': ''} if for_cluster else {}))
  statistics_gen = tfx.components.StatisticsGen(
      examples=log_gen.outputs['examples'], schema=schema_importer.outputs['schema'],
      stats_options=tfdv.StatsOptions(**STATS_OPTIONS),
      exclude_splits=[log_gen_spec.LABELED_SPLIT])
  components: List = [log_gen, schema_importer, statistics_gen]
  if for_cluster:
    return _pipeline(config, components + _runtime_baseline_nodes(config, log_gen, statistics_gen,
                                                                   schema_importer))
  store = metadata_connection.open_pipeline_store(config)
  versions = versions or served_versions(config)
  for version in sorted(set(versions.values())):
    baseline = lineage.resolve_training_baseline(store, version, config.model_name)
    importers = lineage.baseline_importers(baseline, prefix=f'baseline_{version}')
    components += list(importers.values())
    components.append(DriftDetector(
        examples=log_gen.outputs['examples'], statistics=statistics_gen.outputs['statistics'],
        baseline_examples=importers['examples'].outputs['result'],
        baseline_statistics=importers['statistics'].outputs['result'],
        schema=schema_importer.outputs['schema'], model=importers['model'].outputs['result'],
        pushed_model=importers['pushed_model'].outputs['result'],
        policy=config.drift_policy).with_id(f'DriftDetector_{version}'))
  if feedback_lib.feedback_files(feedback_dir, feedback_lib.FeedbackCounts()):
    evaluator = _realized_evaluator(log_gen)
    components.append(evaluator)
    components += [RealizedMetrics(evaluation=evaluator.outputs['evaluation'],
                                   model_name=config.model_name, model_version=version,
                                   min_auc=config.min_realized_auc
                                   ).with_id(f'RealizedMetrics_{version}')
                   for version in sorted(set(versions.values()))]
  return _pipeline(config, components)


def _realized_evaluator(log_gen) -> tfx.components.Evaluator:
  """Model-agnostic TFMA on the window's labelled rows (logged predictions vs ground truth)."""
  return tfx.components.Evaluator(
      examples=log_gen.outputs['examples'], eval_config=realized_eval_config(),
      example_splits=[log_gen_spec.LABELED_SPLIT]).with_id('RealizedEvaluator')


def _runtime_baseline_nodes(config: PipelineConfig, log_gen, statistics_gen,
                            schema_importer) -> List:
  """Resolver -> DriftDetector, and the realized evaluation of the resolved version."""
  resolver = TrainingBaselineResolver(metadata_url=metadata_connection.metadata_url(config),
                                      model_name=config.model_name)
  detector = DriftDetector(
      examples=log_gen.outputs['examples'], statistics=statistics_gen.outputs['statistics'],
      schema=schema_importer.outputs['schema'], baseline=resolver.outputs['baseline'],
      policy=config.drift_policy)
  evaluator = _realized_evaluator(log_gen)
  realized = RealizedMetrics(evaluation=evaluator.outputs['evaluation'],
                             model_name=config.model_name, min_auc=config.min_realized_auc,
                             baseline=resolver.outputs['baseline'])
  return [resolver, detector, evaluator, realized]


def _pipeline(config: PipelineConfig, components: List) -> tfx.dsl.Pipeline:
  return tfx.dsl.Pipeline(
      pipeline_name=config.monitoring_pipeline_name,
      pipeline_root=os.path.join(config.home, 'monitoring_root'),
      components=components,
      enable_cache=config.enable_cache,
      metadata_connection_config=training_pipeline.metadata_connection_config(config),
      beam_pipeline_args=list(config.beam_pipeline_args))
