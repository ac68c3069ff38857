"""The training pipeline: spans -> validated data -> Transform -> Tuner -> Trainer -> Evaluator
-> AtomicPusher. `create_pipeline(config)` builds it for any runner (LocalDagRunner here,
KubeflowV2DagRunner for Kubeflow); `metadata_connection_config(config)` is its MLMD store.
"""
from typing import List

import tensorflow_data_validation as tfdv
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx
from tfx.proto import range_config_pb2

from components.atomic_pusher.component import AtomicPusher
from components.data_gate.component import DataGate
from components.drift_detector.policy import CALENDAR_FEATURES
from components.span_example_gen.component import SpanRangeCsvExampleGen
from components.span_validator.component import SpanValidator
from core.statistics import STATS_OPTIONS
from metadata import connection as metadata_connection
from metadata import layout
from metadata import queries as metadata_queries
from models import calibration_metric
from models import features
from pipeline.config import PipelineConfig

PREPROCESSING_FN = 'models.preprocessing.preprocessing_fn'
TUNER_FN = 'models.model.tuner_fn'
RUN_FN = 'models.model.run_fn'

def metadata_connection_config(config: PipelineConfig):
  """The pipeline's ML Metadata store (SQLite in the home, or MySQL when configured)."""
  return metadata_connection.connection_config(config)


# 1,000 thresholds instead of TFMA's 10,000 for the AUC curves: AUC moves by < 1e-3 and the
# Evaluator, computing them for every slice, gets cheaper.
AUC_CONFIG = '{"num_thresholds": 1000}'


def tuned_hyperparameters_exist(config: PipelineConfig) -> bool:
  """Whether ML Metadata holds HyperParameters produced by this pipeline's Tuner."""
  store = metadata_connection.open_pipeline_store(config)
  pipeline_context = metadata_queries.context(store, layout.PIPELINE_CONTEXT_TYPE,
                                              config.pipeline_name)
  if pipeline_context is None:
    return False
  return any(store.get_artifact_types_by_id([a.type_id])[0].name == 'HyperParameters'
             for a in store.get_artifacts_by_context(pipeline_context.id))


def _overall_threshold(threshold: tfma.MetricThreshold) -> List[tfma.PerSliceMetricThreshold]:
  return [tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)]


def eval_config(config: PipelineConfig) -> tfma.EvalConfig:
  """Sliced metrics; blessing: an absolute AUC threshold, a change threshold against the
  baseline, and the expected calibration error below `max_ece`."""
  auc_threshold = tfma.MetricThreshold(
      value_threshold=tfma.GenericValueThreshold(lower_bound={'value': config.min_auc}),
      change_threshold=tfma.GenericChangeThreshold(
          direction=tfma.MetricDirection.HIGHER_IS_BETTER,
          absolute={'value': -config.max_auc_drop}))
  metrics = [
      tfma.MetricConfig(class_name='ExampleCount'),
      # Thresholds on the overall slice only: small slices (one company, one hour) are too noisy
      # to gate on; the run summary and the model-analysis notebook show the worst slices.
      tfma.MetricConfig(class_name='AUC', config=AUC_CONFIG,
                        per_slice_thresholds=_overall_threshold(auc_threshold)),
      tfma.MetricConfig(class_name='AUCPrecisionRecall', config=AUC_CONFIG),
      tfma.MetricConfig(class_name='BinaryAccuracy'),
      tfma.MetricConfig(class_name='Precision'),
      tfma.MetricConfig(class_name='Recall'),
      tfma.MetricConfig(class_name='Calibration'),
      calibration_metric.metric_config(per_slice_thresholds=_overall_threshold(
          tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
              upper_bound={'value': config.max_ece})))),
      tfma.MetricConfig(class_name='MeanLabel'),
      tfma.MetricConfig(class_name='MeanPrediction'),
  ]
  return tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(signature_name=features.SERVING_SIGNATURE,
                                  label_key=features.LABEL_KEY,
                                  preprocessing_function_names=[features.TRANSFORM_SIGNATURE])],
      slicing_specs=[tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[key])
                                             for key in features.SLICE_FEATURES],
      metrics_specs=[tfma.MetricsSpec(metrics=metrics)])


def create_pipeline(config: PipelineConfig,
                    reuse_tuned_hyperparameters: bool = True) -> tfx.dsl.Pipeline:
  """The training pipeline for `config` (see module docstring).

  With tuning off, the Trainer reuses the last tuned hyperparameters through a Resolver; TFX's
  LatestArtifactStrategy fails that Resolver when there are none, so a local run that knows the
  store holds none (`reuse_tuned_hyperparameters=False`) leaves it out and trains on the model's
  defaults.
  """
  example_gen = SpanRangeCsvExampleGen(
      input_base=config.data_root,
      input_config=tfx.proto.Input(splits=[
          tfx.proto.Input.Split(name='single_split', pattern=config.span_pattern)]),
      output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
          tfx.proto.SplitConfig.Split(name='train', hash_buckets=config.eval_hash_buckets[0]),
          tfx.proto.SplitConfig.Split(name='eval', hash_buckets=config.eval_hash_buckets[1])])),
      range_config=range_config_pb2.RangeConfig(
          static_range=range_config_pb2.StaticRange(
              start_span_number=config.first_span, end_span_number=config.last_span)))
  schema_importer = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs['examples'],
      schema=schema_importer.outputs['schema'],
      stats_options=tfdv.StatsOptions(**STATS_OPTIONS))
  example_validator = tfx.components.ExampleValidator(
      statistics=statistics_gen.outputs['statistics'],
      schema=schema_importer.outputs['schema'])
  # Each span on its own, and the newest against the ones before it. Calendar features are not
  # compared: a half-year span cannot have the month mix of the years before it.
  span_validator = SpanValidator(examples=example_gen.outputs['examples'],
                                 schema=schema_importer.outputs['schema'],
                                 stats_options=tfdv.StatsOptions(**STATS_OPTIONS),
                                 drift_excluded_features=CALENDAR_FEATURES)
  data_gate = DataGate(anomalies=example_validator.outputs['anomalies'],
                       span_anomalies=span_validator.outputs['anomalies'],
                       severity_policy=config.severity_policy)
  # No pre/post-transform statistics inside Transform: the raw data's statistics are
  # StatisticsGen's (validated by the gate, the drift baseline), and nothing reads the others.
  # Computing them is two more TFDV passes over the data (measured: bench/pipeline_bench.py).
  transform = tfx.components.Transform(
      examples=example_gen.outputs['examples'],
      schema=schema_importer.outputs['schema'],
      preprocessing_fn=PREPROCESSING_FN,
      disable_statistics=True)
  transform.add_upstream_node(data_gate)

  components = [example_gen, statistics_gen, schema_importer, example_validator, span_validator,
                data_gate, transform]
  if config.enable_tuning:
    tuner = tfx.components.Tuner(
        tuner_fn=TUNER_FN,
        examples=transform.outputs['transformed_examples'],
        transform_graph=transform.outputs['transform_graph'],
        # Every trial validates on the whole time-ordered window (models/model.py): no eval steps.
        train_args=tfx.proto.TrainArgs(num_steps=config.tuner_train_steps),
        custom_config={'max_trials': config.max_trials, 'seed': config.seed})
    hyperparameters = tuner.outputs['best_hyperparameters']
    components.append(tuner)
  elif reuse_tuned_hyperparameters:
    # Tuning off: the last best hyperparameters this pipeline found.
    latest_hyperparameters = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        hyperparameters=tfx.dsl.Channel(type=tfx.types.standard_artifacts.HyperParameters),
    ).with_id('latest_hyperparameters_resolver')
    hyperparameters = latest_hyperparameters.outputs['hyperparameters']
    components.append(latest_hyperparameters)
  else:
    hyperparameters = None       # the model's defaults

  trainer = tfx.components.Trainer(
      run_fn=RUN_FN,
      examples=transform.outputs['transformed_examples'],
      transform_graph=transform.outputs['transform_graph'],
      schema=schema_importer.outputs['schema'],
      hyperparameters=hyperparameters,
      custom_config={'seed': config.seed},
      train_args=tfx.proto.TrainArgs(num_steps=config.train_steps))
  baseline_resolver = tfx.dsl.Resolver(
      strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
      model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
      model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
  ).with_id('latest_blessed_model_resolver')
  evaluator = tfx.components.Evaluator(
      examples=example_gen.outputs['examples'],
      model=trainer.outputs['model'],
      baseline_model=baseline_resolver.outputs['model'],
      eval_config=eval_config(config))
  pusher = AtomicPusher(
      model=trainer.outputs['model'],
      model_blessing=evaluator.outputs['blessing'],
      examples=example_gen.outputs['examples'],  # Its eval split: the version's warm-up requests.
      push_destination=tfx.proto.PushDestination(
          filesystem=tfx.proto.PushDestination.Filesystem(
              base_directory=config.serving_model_dir)))
  components += [trainer, baseline_resolver, evaluator, pusher]

  return tfx.dsl.Pipeline(
      pipeline_name=config.pipeline_name,
      pipeline_root=config.pipeline_root,
      components=components,
      enable_cache=config.enable_cache,
      metadata_connection_config=metadata_connection_config(config),
      beam_pipeline_args=list(config.beam_pipeline_args))
