"""Calibrators (Platt and isotonic, chosen by cross-validated log loss), the ECE, and the ECE as a
TFMA metric (run by TFMA itself, loaded by module path as the Evaluator loads it)."""
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from models import calibration
from models import calibration_metric
from models import model as model_lib


def _sample(truth, rows=6000, seed=0):
  """Logits and labels drawn with P(label | logit) = truth(logit)."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0.0, 2.0, rows)
  return logits, (rng.random(rows) < truth(logits)).astype(float)


def test_platt_is_chosen_and_recovers_a_sigmoidal_miscalibration():
  logits, labels = _sample(lambda z: calibration.sigmoid(0.5 * z - 1.0))
  fitted = calibration.fit(logits, labels)
  assert fitted.method == calibration.PLATT
  assert fitted.slope == pytest.approx(0.5, abs=0.08)
  assert fitted.intercept == pytest.approx(-1.0, abs=0.1)
  assert fitted.rows == len(labels)
  assert set(fitted.validation_log_loss) == {'raw', 'platt', 'isotonic'}
  assert fitted.validation_log_loss['platt'] < fitted.validation_log_loss['raw']


def test_isotonic_is_chosen_where_no_sigmoid_fits():
  # A step: 10% below logit 0, 90% above; a sigmoid of the logit cannot bend that sharply.
  logits, labels = _sample(lambda z: np.where(z < 0.0, 0.1, 0.9))
  fitted = calibration.fit(logits, labels)
  assert fitted.method == calibration.ISOTONIC
  assert fitted.validation_log_loss['isotonic'] < fitted.validation_log_loss['platt']
  assert fitted.apply(np.array([-3.0, 3.0])) == pytest.approx([0.1, 0.9], abs=0.05)
  assert all(b >= a for a, b in zip(fitted.y, fitted.y[1:]))


def test_isotonic_needs_an_edge_beyond_the_folds_noise():
  rng = np.random.default_rng(0)
  platt = rng.exponential(0.3, 2000)
  # A consistent gain of 0.01 a row: clearly lower.
  assert calibration.clearly_lower(platt - 0.01, platt)
  # A mean gain of 0.002 under noise of 0.3 a row (standard error ~0.007): the folds' luck.
  noisy = platt - 0.002 + rng.normal(0, 0.3, 2000)
  assert noisy.mean() < platt.mean() and not calibration.clearly_lower(noisy, platt)
  assert not calibration.clearly_lower(platt + 0.01, platt)


def test_calibrator_round_trips_through_json():
  logits, labels = _sample(lambda z: np.where(z < 0.0, 0.1, 0.9))
  fitted = calibration.fit(logits, labels)
  again = calibration.Calibrator.from_json(fitted.to_json())
  assert again == fitted
  np.testing.assert_array_equal(again.apply(logits), fitted.apply(logits))


@pytest.mark.parametrize('labels, message', [
    (np.zeros(50), '0 positive and 50 negative'),
    (np.array([1.0] + [0.0] * 49), 'at least 2 of each'),
])
def test_a_window_with_one_class_cannot_be_calibrated(labels, message):
  with pytest.raises(calibration.CalibrationError, match=message):
    calibration.fit(np.linspace(-2, 2, len(labels)), labels)


def test_unknown_method_is_refused():
  with pytest.raises(calibration.CalibrationError, match="unknown calibration method 'beta'"):
    calibration.Calibrator('beta')


@pytest.mark.parametrize('calibrator', [
    calibration.Calibrator(calibration.PLATT, slope=0.7, intercept=-0.4),
    calibration.Calibrator(calibration.ISOTONIC, x=(-2.0, -0.5, 0.0, 1.5), y=(0.01, 0.2, 0.2, 0.95)),
    calibration.Calibrator(calibration.ISOTONIC, x=(0.3,), y=(0.4,)),
])
def test_the_exported_tensorflow_map_is_the_numpy_calibrator(calibrator):
  logits = np.array([-5.0, -2.0, -1.0, -0.5, 0.0, 0.2, 1.5, 1.6, 9.0], np.float32).reshape(-1, 1)
  exported = model_lib.calibrated_probabilities(calibrator, tf.constant(logits)).numpy()
  assert exported.shape == logits.shape and exported.dtype == np.float32
  np.testing.assert_allclose(exported, calibrator.apply(logits), atol=1e-6)


def test_expected_calibration_error_by_hand():
  # Bin [0.1, 0.2): predictions 0.1, 0.15, labels 0, 1 -> |0.25 - 1| = 0.75;
  # bin [0.9, 1.0): 0.95, label 1 -> 0.05; 1.0 is a bin of its own: |1 - 0| = 1.
  probabilities = np.array([0.1, 0.15, 0.95, 1.0])
  labels = np.array([0, 1, 1, 0])
  assert calibration.expected_calibration_error(labels, probabilities) == pytest.approx(
      (0.75 + 0.05 + 1.0) / 4)
  assert np.isnan(calibration.expected_calibration_error(labels[:0], probabilities[:0]))


def test_tfma_metric_equals_the_numpy_ece_overall_and_per_slice(tmp_path):
  rng = np.random.default_rng(3)
  rows = 2000
  prediction = np.concatenate([rng.random(rows - 2), [0.0, 1.0]])    # both edges included
  label = (rng.random(rows) < prediction ** 1.5).astype(float)
  group = np.where(rng.random(rows) < 0.3, 'a', 'b')
  config = tfma.EvalConfig(
      model_specs=[tfma.ModelSpec(label_key='label', prediction_key='prediction')],
      slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=['group'])],
      metrics_specs=[tfma.MetricsSpec(metrics=[calibration_metric.metric_config()])])
  result = tfma.analyze_raw_data(
      pd.DataFrame({'label': label, 'prediction': prediction, 'group': group}), config,
      output_path=str(tmp_path))
  measured = {slice_key: by_output['']['']['expected_calibration_error']['doubleValue']
              for slice_key, by_output in result.slicing_metrics}
  assert measured[()] == pytest.approx(calibration.expected_calibration_error(label, prediction))
  for name in ('a', 'b'):
    in_group = group == name
    assert measured[(('group', name),)] == pytest.approx(
        calibration.expected_calibration_error(label[in_group], prediction[in_group]))
  assert measured[()] > 0.05          # predictions p against rates p ** 1.5: visibly off
