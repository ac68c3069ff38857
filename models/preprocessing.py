"""TensorFlow Transform `preprocessing_fn` of the big-tipper model (passed to Transform by name).

Every numeric feature is emitted in each normalization the tuner may choose from (z-score,
z-score of log1p, quantile buckets): the choice of normalization is a hyperparameter of the model
(models/model.py picks the columns), so one Transform run serves every trial of the search.
The trip's start time passes through unchanged (`TIME_KEY`, missing -> 0): not a model input, it
orders the rows for the time-ordered validation split of the search and the Trainer.
"""
import tensorflow as tf
import tensorflow_transform as tft

from models import features

NORMALIZATIONS = ('z_score', 'log_z_score', 'quantile_buckets')
NUM_QUANTILE_BUCKETS = 20
NUM_COORDINATE_BUCKETS = 16
NUM_OOV_BUCKETS = 1


def transformed_name(key: str, variant: str = '') -> str:
  return f'{key}_{variant}_xf' if variant else f'{key}_xf'


def numeric_input_name(key: str, normalization: str) -> str:
  """The transformed column that carries numeric feature `key` under `normalization`."""
  if normalization not in NORMALIZATIONS:
    raise ValueError(f'unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}')
  return transformed_name(key, normalization)


TIME_KEY = transformed_name(features.TIME_FEATURE)


def vocabulary_size(key: str) -> int:
  """Number of ids of a string feature after the vocabulary (top-k plus OOV)."""
  return features.STRING_CATEGORICAL_FEATURES[key] + NUM_OOV_BUCKETS


def _dense(x, default):
  """A [batch] dense tensor from a possibly sparse [batch, 1] feature, missing -> default."""
  if isinstance(x, tf.sparse.SparseTensor):
    x = tf.sparse.to_dense(tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default)
  return tf.reshape(x, [-1])


def preprocessing_fn(inputs):
  """Raw features -> model inputs and the label."""
  outputs = {}
  for key in features.NUMERIC_FEATURES:
    value = tf.maximum(tf.cast(_dense(inputs[key], 0), tf.float32), 0.0)
    outputs[numeric_input_name(key, 'z_score')] = tft.scale_to_z_score(value)
    outputs[numeric_input_name(key, 'log_z_score')] = tft.scale_to_z_score(tf.math.log1p(value))
    outputs[numeric_input_name(key, 'quantile_buckets')] = tft.bucketize(
        value, NUM_QUANTILE_BUCKETS)
  for key in features.COORDINATE_FEATURES:
    outputs[transformed_name(key)] = tft.bucketize(
        tf.cast(_dense(inputs[key], 0), tf.float32), NUM_COORDINATE_BUCKETS)
  for key, num_values in features.INTEGER_CATEGORICAL_FEATURES.items():
    value = tf.cast(_dense(inputs[key], 0), tf.int64)
    outputs[transformed_name(key)] = tf.clip_by_value(value, 0, num_values - 1)
  for key, top_k in features.STRING_CATEGORICAL_FEATURES.items():
    outputs[transformed_name(key)] = tft.compute_and_apply_vocabulary(
        _dense(inputs[key], ''), top_k=top_k, num_oov_buckets=NUM_OOV_BUCKETS,
        vocab_filename=key)
  outputs[TIME_KEY] = tf.cast(_dense(inputs[features.TIME_FEATURE], 0), tf.int64)
  outputs[transformed_name(features.LABEL_KEY)] = tf.cast(
      _dense(inputs[features.LABEL_KEY], 0), tf.int64)
  return outputs
