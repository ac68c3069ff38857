"""The training pipeline's shape for a configuration (built, not run)."""
import pytest

from pipeline import training_pipeline
from pipeline.config import PipelineConfig


def _ids(pipeline):
  return [c.id for c in pipeline.components]


def test_tuning_on_has_a_tuner_feeding_the_trainer(tmp_path):
  pipeline = training_pipeline.create_pipeline(PipelineConfig.quick(str(tmp_path)))
  assert 'Tuner' in _ids(pipeline) and 'latest_hyperparameters_resolver' not in _ids(pipeline)
  trainer = next(c for c in pipeline.components if c.id == 'Trainer')
  assert trainer.inputs['hyperparameters'].producer_component_id == 'Tuner'


def test_tuning_off_on_an_empty_store_trains_on_defaults(tmp_path):
  config = PipelineConfig.quick(str(tmp_path), enable_tuning=False)
  assert training_pipeline.tuned_hyperparameters_exist(config) is False
  pipeline = training_pipeline.create_pipeline(config, reuse_tuned_hyperparameters=False)
  assert 'Tuner' not in _ids(pipeline) and 'latest_hyperparameters_resolver' not in _ids(pipeline)
  trainer = next(c for c in pipeline.components if c.id == 'Trainer')
  assert 'hyperparameters' not in trainer.inputs


def test_tuning_off_with_tuned_hyperparameters_resolves_them(tmp_path):
  pipeline = training_pipeline.create_pipeline(
      PipelineConfig.quick(str(tmp_path), enable_tuning=False), reuse_tuned_hyperparameters=True)
  trainer = next(c for c in pipeline.components if c.id == 'Trainer')
  assert (trainer.inputs['hyperparameters'].producer_component_id ==
          'latest_hyperparameters_resolver')


def test_transform_waits_for_the_data_gate(tmp_path):
  pipeline = training_pipeline.create_pipeline(PipelineConfig.quick(str(tmp_path)))
  transform = next(c for c in pipeline.components if c.id == 'Transform')
  assert 'DataGate' in {node.id for node in transform.upstream_nodes}


def test_blessing_threshold_applies_to_the_overall_slice_only(tmp_path):
  config = PipelineConfig.quick(str(tmp_path), min_auc=0.9, max_auc_drop=0.02)
  auc = next(m for m in training_pipeline.eval_config(config).metrics_specs[0].metrics
             if m.class_name == 'AUC')
  (per_slice,) = auc.per_slice_thresholds
  assert [s.feature_keys for s in per_slice.slicing_specs] == [[]]
  assert per_slice.threshold.value_threshold.lower_bound.value == 0.9
  assert per_slice.threshold.change_threshold.absolute.value == -0.02


def test_calibration_error_threshold_on_the_overall_slice_by_module_path(tmp_path):
  from tensorflow_model_analysis.metrics import metric_specs
  from models import calibration_metric
  config = PipelineConfig.quick(str(tmp_path), max_ece=0.03)
  (ece,) = [m for m in training_pipeline.eval_config(config).metrics_specs[0].metrics
            if m.class_name == calibration_metric.CLASS_NAME]
  assert ece.module == 'models.calibration_metric'        # importable wherever TFMA runs
  (per_slice,) = ece.per_slice_thresholds
  assert [s.feature_keys for s in per_slice.slicing_specs] == [[]]
  assert per_slice.threshold.value_threshold.upper_bound.value == 0.03
  assert isinstance(metric_specs.metric_instance(ece), calibration_metric.ExpectedCalibrationError)
  with pytest.raises(ValueError, match='max_ece must be within'):
    PipelineConfig.quick(str(tmp_path), max_ece=0.0)


def test_the_worst_slice_is_one_where_auc_means_something():
  from pipeline import run_summary
  slices = [
      # Cash: tips are not recorded, one positive in 1,744 (TFMA still reports an AUC).
      {'slice': 'payment_type=Cash', 'auc': 0.466, 'mean_label': 1 / 1744, 'example_count': 1744.0},
      {'slice': 'payment_type=No Charge', 'auc': 0.0, 'mean_label': 0.0, 'example_count': 60.0},
      {'slice': 'trip_start_hour=3', 'auc': 0.61, 'mean_label': 0.4, 'example_count': 40.0},
      {'slice': 'company=A', 'auc': 0.83, 'mean_label': 0.3, 'example_count': 400.0},
      {'slice': 'company=B', 'auc': 0.79, 'mean_label': 0.05, 'example_count': 400.0},
      {'slice': 'company=C', 'auc': 0.70, 'mean_label': 'NaN', 'example_count': 400.0},
  ]
  assert run_summary.worst_slice(slices)['slice'] == 'company=B'    # 20 positives: enough
  assert run_summary.worst_slice(slices[:3]) is None


def test_the_span_validator_feeds_the_data_gate_and_compares_no_calendar_feature(tmp_path):
  import json
  from components.drift_detector.policy import CALENDAR_FEATURES
  pipeline = training_pipeline.create_pipeline(PipelineConfig.quick(str(tmp_path)))
  gate = next(c for c in pipeline.components if c.id == 'DataGate')
  assert gate.inputs['span_anomalies'].producer_component_id == 'SpanValidator'
  validator = next(c for c in pipeline.components if c.id == 'SpanValidator')
  assert json.loads(validator.exec_properties['drift_excluded_features']) == sorted(
      CALENDAR_FEATURES)


def test_the_run_summary_lists_every_gate_finding_blocking_first_with_its_span():
  from pipeline import run_summary
  finding = dict(feature='payment_type', anomaly_type='COMPARATOR_L_INFTY_HIGH',
                 description='span 6 against spans 1-5: L-infinity 0.21', severity='warning',
                 source='span 6 (version 1)', span=6)
  summary = {'run_id': 'r', 'components': [], 'spans': '1-6', 'span_versions': '1:1,6:1',
             'data_gate': {'verdict': 'warnings', 'num_warnings': 1, 'num_blocking': 0,
                           'findings': [finding]}}
  for text in (run_summary.format_summary(summary), run_summary.format_validation(summary)):
    lines = text.splitlines()
    gate = next(i for i, line in enumerate(lines) if 'data gate:' in line)
    assert lines[gate:gate + 3] == [
        '  data gate:       warnings: 1 warning(s), 0 blocking',
        '    warnings (1):',
        '      - payment_type: span 6 against spans 1-5: L-infinity 0.21 '
        '[COMPARATOR_L_INFTY_HIGH, span 6 (version 1)]']
