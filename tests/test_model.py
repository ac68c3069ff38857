"""The Keras model builds and trains a step for every normalization; hyperparameter handling."""
import numpy as np
import pytest
import tensorflow as tf

from models import model as model_lib
from models import preprocessing


def _batch(hp, size=8):
  inputs = {}
  categorical = model_lib._categorical_sizes(hp.get('normalization'))   # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  for key in model_lib.model_input_keys(hp.get('normalization')):
    if key in categorical:
      inputs[key] = rng.integers(0, categorical[key], size=(size, 1)).astype('int64')
    else:
      inputs[key] = rng.normal(size=(size, 1)).astype('float32')
  return inputs, rng.integers(0, 2, size=(size, 1)).astype('float32')


@pytest.mark.parametrize('normalization', preprocessing.NORMALIZATIONS)
def test_model_builds_and_trains_a_step(normalization):
  hp = model_lib.search_space()
  hp.values['normalization'] = normalization
  model = model_lib.build_model(hp)
  x, y = _batch(hp)
  before = [w.numpy().copy() for w in model.trainable_weights]
  history = model.fit(x, y, epochs=1, verbose=0)
  assert np.isfinite(history.history['loss'][0])
  assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
  probabilities = model.predict(x, verbose=0)
  assert probabilities.shape == (8, 1) and ((probabilities > 0) & (probabilities < 1)).all()


def test_numeric_inputs_follow_the_normalization():
  assert 'fare_quantile_buckets_xf' in model_lib.model_input_keys('quantile_buckets')
  assert 'fare_z_score_xf' not in model_lib.model_input_keys('quantile_buckets')


def test_defaults_when_no_tuned_hyperparameters():
  assert model_lib.hyperparameters_from(None).values == model_lib.DEFAULT_HYPERPARAMETERS


def test_tuned_hyperparameters_are_read_back():
  hp = model_lib.search_space()
  hp.values['hidden_units'] = 128
  assert model_lib.hyperparameters_from(hp.get_config()).get('hidden_units') == 128


def test_foreign_hyperparameters_are_refused():
  import keras_tuner
  other = keras_tuner.HyperParameters()
  other.Int('units', 1, 2)
  with pytest.raises(ValueError, match='lack'):
    model_lib.hyperparameters_from(other.get_config())
