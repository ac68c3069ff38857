"""The big-tipper model: Keras wide-and-deep network, Tuner search space, Trainer `run_fn`.

Passed to the Tuner and Trainer by dotted path (`models.model.tuner_fn`, `models.model.run_fn`),
so compiling for Kubeflow needs no module upload: the package is installed in the image.

Hyperparameters (the tuner's search space, and the defaults when tuning is off):
- `normalization`: which transform of the numeric features the network reads
  (z_score | log_z_score | quantile_buckets; see models/preprocessing.py),
- `hidden_units`, `num_layers`: size of the deep part,
- `dropout`, `learning_rate`.
"""
from typing import Dict, List

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import features
from models import preprocessing

LABEL = preprocessing.transformed_name(features.LABEL_KEY)
TRAIN_BATCH_SIZE = 128
EVAL_BATCH_SIZE = 256
STEPS_PER_EPOCH = 50
EARLY_STOPPING_PATIENCE = 4
SEED = 42

DEFAULT_HYPERPARAMETERS = {
    'normalization': 'log_z_score',
    'hidden_units': 64,
    'num_layers': 2,
    'dropout': 0.1,
    'learning_rate': 3e-3,
}


def search_space() -> keras_tuner.HyperParameters:
  """The tuner's search space; defaults are DEFAULT_HYPERPARAMETERS."""
  hp = keras_tuner.HyperParameters()
  hp.Choice('normalization', list(preprocessing.NORMALIZATIONS),
            default=DEFAULT_HYPERPARAMETERS['normalization'])
  hp.Choice('hidden_units', [32, 64, 128], default=DEFAULT_HYPERPARAMETERS['hidden_units'])
  hp.Int('num_layers', 1, 3, default=DEFAULT_HYPERPARAMETERS['num_layers'])
  hp.Choice('dropout', [0.0, 0.1, 0.3], default=DEFAULT_HYPERPARAMETERS['dropout'])
  hp.Float('learning_rate', 1e-3, 1e-2, sampling='log',
           default=DEFAULT_HYPERPARAMETERS['learning_rate'])
  return hp


def model_input_keys(normalization: str) -> List[str]:
  """Transformed columns the network reads for a given numeric normalization."""
  keys = [preprocessing.numeric_input_name(k, normalization) for k in features.NUMERIC_FEATURES]
  keys += [preprocessing.transformed_name(k) for k in features.COORDINATE_FEATURES]
  keys += [preprocessing.transformed_name(k) for k in features.INTEGER_CATEGORICAL_FEATURES]
  keys += [preprocessing.transformed_name(k) for k in features.STRING_CATEGORICAL_FEATURES]
  return keys


def _categorical_sizes(normalization: str) -> Dict[str, int]:
  """{transformed column: number of categories} of every one-hot encoded input."""
  sizes = {preprocessing.transformed_name(k): preprocessing.NUM_COORDINATE_BUCKETS
           for k in features.COORDINATE_FEATURES}
  sizes.update({preprocessing.transformed_name(k): n
                for k, n in features.INTEGER_CATEGORICAL_FEATURES.items()})
  sizes.update({preprocessing.transformed_name(k): preprocessing.vocabulary_size(k)
                for k in features.STRING_CATEGORICAL_FEATURES})
  if normalization == 'quantile_buckets':
    sizes.update({preprocessing.numeric_input_name(k, normalization):
                  preprocessing.NUM_QUANTILE_BUCKETS for k in features.NUMERIC_FEATURES})
  return sizes


def build_model(hp: keras_tuner.HyperParameters) -> tf.keras.Model:
  """Wide (one-hot categories straight to the output) and deep (MLP) binary classifier."""
  normalization = hp.get('normalization')
  categorical = _categorical_sizes(normalization)
  inputs = {}
  encoded_categories, dense_values = [], []
  for key in model_input_keys(normalization):
    if key in categorical:
      inputs[key] = tf.keras.Input(shape=(1,), name=key, dtype='int64')
      encoded_categories.append(tf.keras.layers.CategoryEncoding(
          num_tokens=categorical[key], output_mode='one_hot', name=f'{key}_one_hot')(inputs[key]))
    else:
      inputs[key] = tf.keras.Input(shape=(1,), name=key, dtype='float32')
      dense_values.append(inputs[key])
  wide = tf.keras.layers.Concatenate(name='wide')(encoded_categories)
  deep = tf.keras.layers.Concatenate(name='deep_input')(encoded_categories + dense_values)
  for i in range(hp.get('num_layers')):
    deep = tf.keras.layers.Dense(hp.get('hidden_units'), activation='relu', name=f'dense_{i}')(deep)
    if hp.get('dropout'):
      deep = tf.keras.layers.Dropout(hp.get('dropout'), seed=SEED + i)(deep)
  logit = tf.keras.layers.Dense(1, name='logit')(
      tf.keras.layers.Concatenate(name='wide_and_deep')([wide, deep]))
  probability = tf.keras.layers.Activation('sigmoid', name=features.PREDICTION_KEY)(logit)
  model = tf.keras.Model(inputs=inputs, outputs=probability)
  model.compile(
      optimizer=tf.keras.optimizers.Adam(learning_rate=hp.get('learning_rate')),
      loss='binary_crossentropy',
      metrics=[tf.keras.metrics.AUC(name='auc'), tf.keras.metrics.BinaryAccuracy(name='accuracy')])
  return model


def hyperparameters_from(config) -> keras_tuner.HyperParameters:
  """The Tuner's best hyperparameters (a HyperParameters config dict), or the defaults."""
  if config:
    hp = keras_tuner.HyperParameters.from_config(config)
    missing = sorted(set(DEFAULT_HYPERPARAMETERS) - set(hp.values))
    if missing:
      raise ValueError(f'hyperparameters lack {missing}; they were not produced by this model\'s '
                       'tuner_fn')
    return hp
  return search_space()


def input_dataset(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
                  tf_transform_output: tft.TFTransformOutput, normalization: str,
                  batch_size: int, shuffle: bool) -> tf.data.Dataset:
  """(transformed model inputs, label) batches, repeated forever."""
  keys = model_input_keys(normalization)
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=batch_size, label_key=LABEL, shuffle=shuffle,
                                     shuffle_seed=SEED if shuffle else None,
                                     num_epochs=None),
      tf_transform_output.transformed_metadata.schema)
  return dataset.map(lambda x, y: ({k: x[k] for k in keys}, y))


def _datasets(fn_args, tf_transform_output: tft.TFTransformOutput, normalization: str) -> dict:
  return dict(
      x=input_dataset(fn_args.train_files, fn_args.data_accessor, tf_transform_output,
                      normalization, TRAIN_BATCH_SIZE, shuffle=True),
      validation_data=input_dataset(fn_args.eval_files, fn_args.data_accessor,
                                    tf_transform_output, normalization, EVAL_BATCH_SIZE,
                                    shuffle=False))


def _fit_schedule(fn_args) -> dict:
  """Steps, epochs and early stopping shared by the tuner's trials and the trainer."""
  return dict(
      steps_per_epoch=STEPS_PER_EPOCH,
      validation_steps=max(1, fn_args.eval_steps),
      epochs=max(1, fn_args.train_steps // STEPS_PER_EPOCH),
      callbacks=[tf.keras.callbacks.EarlyStopping(
          monitor='val_auc', mode='max', patience=EARLY_STOPPING_PATIENCE,
          restore_best_weights=True)],
  )


class NormalizationAwareRandomSearch(keras_tuner.RandomSearch):
  """RandomSearch whose trials read the numeric columns of the normalization they drew."""

  def __init__(self, fn_args, tf_transform_output: tft.TFTransformOutput, **kwargs):
    super().__init__(**kwargs)
    self._fn_args = fn_args
    self._tf_transform_output = tf_transform_output

  def run_trial(self, trial, *args, **kwargs):
    normalization = trial.hyperparameters.get('normalization')
    kwargs.update(_datasets(self._fn_args, self._tf_transform_output, normalization))
    return super().run_trial(trial, *args, **kwargs)


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
  """Random search over `search_space()`, each trial with early stopping on validation AUC.

  `fn_args.custom_config['max_trials']` sets the budget (default 4).
  """
  tf.keras.utils.set_random_seed(SEED)
  max_trials = int((fn_args.custom_config or {}).get('max_trials', 4))
  tuner = NormalizationAwareRandomSearch(
      fn_args, tft.TFTransformOutput(fn_args.transform_graph_path),
      hypermodel=build_model,
      max_trials=max_trials,
      hyperparameters=search_space(),
      allow_new_entries=False,
      objective=keras_tuner.Objective('val_auc', 'max'),
      directory=fn_args.working_dir,
      project_name='big_tipper_tuning',
      seed=SEED)
  return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs=_fit_schedule(fn_args))


def _serving_signatures(model: tf.keras.Model, tf_transform_output: tft.TFTransformOutput,
                        input_keys: List[str]) -> dict:
  """`serving_default` (serialized tf.Example -> probability) and `transform_features` (TFMA)."""
  model.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = tf_transform_output.raw_feature_spec()
  serving_spec = {k: v for k, v in raw_spec.items() if k != features.LABEL_KEY}
  examples_spec = tf.TensorSpec(shape=[None], dtype=tf.string, name=features.SERVING_INPUT_KEY)

  @tf.function(input_signature=[examples_spec])
  def serve_examples(examples):
    transformed = model.tft_layer(tf.io.parse_example(examples, serving_spec))
    return {features.PREDICTION_KEY: model({k: transformed[k] for k in input_keys})}

  @tf.function(input_signature=[examples_spec])
  def transform_features(examples):
    return model.tft_layer(tf.io.parse_example(examples, raw_spec))

  return {features.SERVING_SIGNATURE: serve_examples,
          features.TRANSFORM_SIGNATURE: transform_features}


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Trains with the Tuner's best hyperparameters (or the defaults), exports the SavedModel."""
  tf.keras.utils.set_random_seed(SEED)
  hp = hyperparameters_from(fn_args.hyperparameters)
  logging.info('Training with hyperparameters %s', hp.values)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  normalization = hp.get('normalization')
  model = build_model(hp)
  schedule = _fit_schedule(fn_args)
  schedule['callbacks'].append(tf.keras.callbacks.TensorBoard(
      log_dir=fn_args.model_run_dir, update_freq='epoch'))
  model.fit(**_datasets(fn_args, tf_transform_output, normalization), **schedule)
  signatures = _serving_signatures(model, tf_transform_output, model_input_keys(normalization))
  tf.saved_model.save(model, fn_args.serving_model_dir, signatures=signatures)
