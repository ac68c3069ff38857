"""The big-tipper model: two families searched on the future, calibrated, exported for serving.

Passed to the Tuner and Trainer by dotted path (`models.model.tuner_fn`, `models.model.run_fn`),
so compiling for Kubeflow needs no module upload: the package is installed in the image.

Families (hyperparameter `family`; the rest of the space depends on it):
- `gradient_boosted_trees`: gradient boosted trees grown by YDF (TensorFlow Decision Forests'
  learning library), early-stopped on the validation window; exported as plain TensorFlow ops
  (models/trees.py), so the SavedModel needs no TF-DF op to load. Hyperparameters `max_depth`,
  `shrinkage`, `min_examples`.
- `network`: a Keras wide-and-deep network, early-stopped on the validation window's log loss.
  Hyperparameters `normalization` (which transform of the numeric features it reads:
  z_score | log_z_score | quantile_buckets, models/preprocessing.py), `hidden_units`,
  `num_layers`, `dropout`, `learning_rate`.

Time-ordered validation: the Tuner and the Trainer split the train split by the trip's start time:
the model fits the older rows and everything that selects (early stopping, the search's ranking
by log loss, the calibrator) looks at the latest VALIDATION_FRACTION, the rows most like what the
model will serve. The eval split stays the Evaluator's.

The search (`FamilyAlternatingOracle`) alternates the families, each one's first trial at its
defaults, later ones drawn at random from its part of the space; trials are ranked by the
validation window's log loss.

Export (`tf.saved_model.save`): `serving_default` (serialized tf.Example -> `probabilities`
[-1, 1], calibrated by the calibrator fitted on the validation window, models/calibration.py),
`raw_logit` (the same input -> the uncalibrated `logit` [-1, 1]), `transform_features` (for
TFMA); the calibrator itself in `assets.extra/calibration.json`.
"""
import dataclasses
import os
from typing import Callable, Dict, List, Optional

import keras_tuner
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from models import calibration
from models import features
from models import preprocessing
from models import trees

LABEL = preprocessing.transformed_name(features.LABEL_KEY)
VALIDATION_FRACTION = 0.2
TRAIN_BATCH_SIZE = 128
EVAL_BATCH_SIZE = 1024
LOAD_BATCH_SIZE = 4096
STEPS_PER_EPOCH = 50
EARLY_STOPPING_PATIENCE = 4
MAX_TREES = 500
DEFAULT_SEED = 42

FAMILY = 'family'
TREES, NETWORK = 'gradient_boosted_trees', 'network'
FAMILIES = (TREES, NETWORK)
# The trees won the time-ordered search on the bundled data (README, "Model quality").
DEFAULT_FAMILY = TREES
DEFAULT_HYPERPARAMETERS = {
    TREES: {'max_depth': 4, 'shrinkage': 0.05, 'min_examples': 5},
    NETWORK: {'normalization': 'log_z_score', 'hidden_units': 64, 'num_layers': 2,
              'dropout': 0.1, 'learning_rate': 3e-3},
}


def search_space() -> keras_tuner.HyperParameters:
  """The tuner's search space; defaults are DEFAULT_FAMILY's DEFAULT_HYPERPARAMETERS."""
  hp = keras_tuner.HyperParameters()
  hp.Choice(FAMILY, list(FAMILIES), default=DEFAULT_FAMILY)
  with hp.conditional_scope(FAMILY, [TREES]):
    defaults = DEFAULT_HYPERPARAMETERS[TREES]
    hp.Choice('max_depth', [3, 4, 6], default=defaults['max_depth'])
    hp.Choice('shrinkage', [0.05, 0.1], default=defaults['shrinkage'])
    hp.Choice('min_examples', [5, 20], default=defaults['min_examples'])
  with hp.conditional_scope(FAMILY, [NETWORK]):
    defaults = DEFAULT_HYPERPARAMETERS[NETWORK]
    hp.Choice('normalization', list(preprocessing.NORMALIZATIONS),
              default=defaults['normalization'])
    hp.Choice('hidden_units', [32, 64, 128], default=defaults['hidden_units'])
    hp.Int('num_layers', 1, 3, default=defaults['num_layers'])
    hp.Choice('dropout', [0.0, 0.1, 0.3], default=defaults['dropout'])
    hp.Float('learning_rate', 1e-3, 1e-2, sampling='log', default=defaults['learning_rate'])
  return hp


def hyperparameters_from(config) -> keras_tuner.HyperParameters:
  """The Tuner's best hyperparameters (a HyperParameters config dict), or the defaults."""
  if not config:
    return search_space()
  hp = keras_tuner.HyperParameters.from_config(config)
  family = hp.values.get(FAMILY)
  if family not in FAMILIES:
    raise ValueError(f'hyperparameters have family {family!r}, expected one of {FAMILIES}: they '
                     'were not produced by this model\'s tuner_fn (tuned by a Loopline before '
                     'the model families? run once with tuning on)')
  missing = sorted(set(DEFAULT_HYPERPARAMETERS[family]) - set(hp.values))
  if missing:
    raise ValueError(f'hyperparameters of family {family} lack {missing}; they were not '
                     'produced by this model\'s tuner_fn')
  return hp


# ---------------------------------------------------------------------------------------------
# Data: the transformed train split in memory, split in time.

Columns = Dict[str, np.ndarray]


def load_split(file_pattern: List[str], data_accessor: tfx.components.DataAccessor,
               tf_transform_output: tft.TFTransformOutput) -> Columns:
  """Every transformed column of a split, as [rows] arrays (a few MB on the bundled data)."""
  dataset = data_accessor.tf_dataset_factory(
      file_pattern,
      tfxio.TensorFlowDatasetOptions(batch_size=LOAD_BATCH_SIZE, shuffle=False, num_epochs=1),
      tf_transform_output.transformed_metadata.schema)
  batches: Dict[str, List[np.ndarray]] = {}
  for batch in dataset:
    for key, tensor in batch.items():
      batches.setdefault(key, []).append(tensor.numpy().reshape(-1))
  if not batches:
    raise ValueError(f'no rows in {file_pattern}')
  return {key: np.concatenate(parts) for key, parts in batches.items()}


@dataclasses.dataclass(frozen=True)
class TimeOrderedSplit:
  """The rows a model fits (`fit`) and the latest ones it is selected on (`validation`)."""
  fit: Columns
  validation: Columns
  cutoff: int          # unix seconds: validation rows start at or after it

  def describe(self) -> str:
    start = np.datetime64(int(self.cutoff), 's').astype('datetime64[D]')
    return (f'fit on {len(self.fit[LABEL])} rows, validation window {len(self.validation[LABEL])} '
            f'rows from {start} on')


def time_ordered_split(columns: Columns,
                       fraction: float = VALIDATION_FRACTION) -> TimeOrderedSplit:
  """The latest `fraction` of the rows by trip start time as the validation window (rows at the
  cutoff second go with it). Raises ValueError when either side would be empty."""
  times = columns[preprocessing.TIME_KEY]
  cutoff = int(np.quantile(times, 1.0 - fraction, method='higher'))
  latest = times >= cutoff
  if latest.all() or not latest.any():
    raise ValueError(
        f'cannot split {len(times)} training rows in time: every row starts at '
        f'{features.TIME_FEATURE} = {cutoff} (is the column empty?); a time-ordered validation '
        'window needs rows of different times')
  return TimeOrderedSplit(fit={k: v[~latest] for k, v in columns.items()},
                          validation={k: v[latest] for k, v in columns.items()}, cutoff=cutoff)


def _labels(columns: Columns) -> np.ndarray:
  return columns[LABEL].astype(np.float32).reshape(-1, 1)


# ---------------------------------------------------------------------------------------------
# The network family.

def model_input_keys(normalization: str) -> List[str]:
  """Transformed columns a model reads for a given numeric normalization."""
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
  """Wide (one-hot categories straight to the output) and deep (MLP) binary classifier; its
  layer `logit` is the logit before the sigmoid."""
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
      deep = tf.keras.layers.Dropout(hp.get('dropout'), seed=DEFAULT_SEED + i)(deep)
  logit = tf.keras.layers.Dense(1, name='logit')(
      tf.keras.layers.Concatenate(name='wide_and_deep')([wide, deep]))
  probability = tf.keras.layers.Activation('sigmoid', name=features.PREDICTION_KEY)(logit)
  model = tf.keras.Model(inputs=inputs, outputs=probability)
  model.compile(
      optimizer=tf.keras.optimizers.Adam(learning_rate=hp.get('learning_rate')),
      loss='binary_crossentropy',
      metrics=[tf.keras.metrics.AUC(name='auc'), tf.keras.metrics.BinaryAccuracy(name='accuracy')])
  return model


class NetworkScorer(tf.Module):
  """{transformed column: [batch] tensor} -> the network's logits [batch, 1]."""

  def __init__(self, model: tf.keras.Model, input_keys: List[str]):
    super().__init__(name='network')
    self.input_keys = list(input_keys)
    self.logit_model = tf.keras.Model(model.inputs, model.get_layer('logit').output)

  def __call__(self, columns: Dict[str, tf.Tensor]) -> tf.Tensor:
    return self.logit_model({k: tf.reshape(columns[k], [-1, 1]) for k in self.input_keys})


def _fit_network(hp: keras_tuner.HyperParameters, split: TimeOrderedSplit, train_steps: int,
                 seed: int, callbacks: List[tf.keras.callbacks.Callback]) -> NetworkScorer:
  tf.keras.utils.set_random_seed(seed)
  keys = model_input_keys(hp.get('normalization'))

  def dataset(columns: Columns) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
        ({k: columns[k].reshape(-1, 1) for k in keys}, _labels(columns)))

  model = build_model(hp)
  model.fit(dataset(split.fit).shuffle(len(split.fit[LABEL]), seed=seed).repeat()
            .batch(TRAIN_BATCH_SIZE),
            validation_data=dataset(split.validation).batch(EVAL_BATCH_SIZE),
            steps_per_epoch=STEPS_PER_EPOCH, epochs=max(1, train_steps // STEPS_PER_EPOCH),
            callbacks=[tf.keras.callbacks.EarlyStopping(
                monitor='val_loss', mode='min', patience=EARLY_STOPPING_PATIENCE,
                restore_best_weights=True)] + callbacks,
            verbose=2)
  return NetworkScorer(model, keys)


# ---------------------------------------------------------------------------------------------
# The gradient boosted trees family.

def tree_input_keys() -> List[str]:
  """The columns the trees split on: the numeric features' z-scores (any monotonic transform
  splits alike), the coordinate buckets, and the category ids, all as numbers."""
  return model_input_keys('z_score')


def fit_trees(hp: keras_tuner.HyperParameters, split: TimeOrderedSplit, seed: int,
              keys: Optional[List[str]] = None) -> trees.TreeEnsemble:
  """Gradient boosted trees on `keys` (default `tree_input_keys()`), early-stopped on the
  validation window."""
  import ydf    # only here: the trees' learner (models/trees.py)
  keys = keys or tree_input_keys()

  def data(columns: Columns) -> Dict[str, np.ndarray]:
    return {**{k: columns[k].astype(np.float32) for k in keys},
            LABEL: columns[LABEL].astype(np.int64)}

  learner = ydf.GradientBoostedTreesLearner(
      label=LABEL, task=ydf.Task.CLASSIFICATION, num_trees=MAX_TREES,
      max_depth=hp.get('max_depth'), shrinkage=hp.get('shrinkage'),
      min_examples=hp.get('min_examples'), random_seed=seed,
      features=[ydf.Feature(k, ydf.Semantic.NUMERICAL) for k in keys], include_all_columns=False)
  # The validation window is what the trees early-stop on (instead of a random tenth of the rows).
  model = learner.train(data(split.fit), valid=data(split.validation), verbose=0)
  ensemble = trees.TreeEnsemble(trees.from_ydf(model))
  logging.info('Gradient boosted trees: %d trees, depth %d', ensemble.num_trees, ensemble.depth)
  return ensemble


Scorer = Callable[[Dict[str, tf.Tensor]], tf.Tensor]


def fit_family(hp: keras_tuner.HyperParameters, split: TimeOrderedSplit, train_steps: int,
               seed: int, callbacks: Optional[List[tf.keras.callbacks.Callback]] = None
               ) -> Scorer:
  """The model of `hp`'s family, fitted on `split` (see module docstring): a callable from
  transformed columns to logits [batch, 1]."""
  if hp.get(FAMILY) == TREES:
    return fit_trees(hp, split, seed)
  return _fit_network(hp, split, train_steps, seed, callbacks or [])


def logits(scorer: Scorer, columns: Columns) -> np.ndarray:
  """The scorer's logits of every row, [rows]."""
  rows = len(columns[LABEL])
  parts = [scorer({k: tf.constant(v[start:start + EVAL_BATCH_SIZE])
                   for k, v in columns.items()}).numpy().reshape(-1)
           for start in range(0, rows, EVAL_BATCH_SIZE)]
  return np.concatenate(parts)


def validation_metrics(scorer: Scorer, split: TimeOrderedSplit) -> Dict[str, float]:
  """Log loss and AUC of the uncalibrated model on the validation window."""
  from sklearn import metrics
  labels = split.validation[LABEL]
  probabilities = calibration.sigmoid(logits(scorer, split.validation))
  result = {'val_loss': calibration.log_loss(labels, probabilities)}
  if 0 < labels.sum() < len(labels):
    result['val_auc'] = float(metrics.roc_auc_score(labels, probabilities))
  return result


# ---------------------------------------------------------------------------------------------
# The search.

class FamilyAlternatingOracle(keras_tuner.oracles.RandomSearchOracle):
  """Trial i searches family FAMILIES[i % 2]: its defaults the first time, then random values
  of its part of the space (a family whose part is exhausted gives way to the other)."""

  MAX_DRAWS = 50

  def populate_space(self, trial_id):
    number = len(self.trials)
    order = FAMILIES[number % len(FAMILIES):] + FAMILIES[:number % len(FAMILIES)]
    for family in order:
      for draw in range(self.MAX_DRAWS):
        values = self._family_values(family, defaults=number < len(FAMILIES) and draw == 0)
        if not self._duplicate(values):
          return {'status': keras_tuner.engine.trial.TrialStatus.RUNNING, 'values': values}
    return {'status': keras_tuner.engine.trial.TrialStatus.STOPPED, 'values': None}

  def _family_values(self, family: str, defaults: bool) -> Dict[str, object]:
    hps = keras_tuner.HyperParameters()
    for hp in self.hyperparameters.space:
      hps.merge([hp])
      if hp.name == FAMILY:
        hps.values[FAMILY] = family
      elif hps.is_active(hp):
        hps.values[hp.name] = hp.default if defaults else hp.random_sample(self._seed_state)
        self._seed_state += 1
    return hps.values


class TimeOrderedSearch(keras_tuner.Tuner):
  """Runs each trial on the time-ordered split, scored by the validation window's log loss."""

  def __init__(self, split: TimeOrderedSplit, train_steps: int, seed: int, **kwargs):
    super().__init__(**kwargs)
    self._split, self._train_steps, self._seed = split, train_steps, seed

  def run_trial(self, trial, *args, **kwargs):
    # A failing trial stops the search: Keras Tuner would skip it, and a broken family would
    # then lose every time without anyone noticing.
    try:
      scorer = fit_family(trial.hyperparameters, self._split, self._train_steps, self._seed)
      result = validation_metrics(scorer, self._split)
    except Exception as e:
      raise keras_tuner.errors.FatalError(
          f'trial {trial.trial_id} {trial.hyperparameters.values} failed: {e}') from e
    logging.info('Trial %s %s: %s', trial.trial_id, trial.hyperparameters.values, result)
    return result


def _seed(fn_args) -> int:
  return int((fn_args.custom_config or {}).get('seed', DEFAULT_SEED))


def tuner_fn(fn_args: tfx.components.FnArgs) -> tfx.components.TunerFnResult:
  """The family-alternating search on the time-ordered split (see module docstring).

  `fn_args.custom_config`: `max_trials` (default 6), `seed`.
  """
  seed = _seed(fn_args)
  tf.keras.utils.set_random_seed(seed)
  max_trials = int((fn_args.custom_config or {}).get('max_trials', 6))
  split = time_ordered_split(load_split(fn_args.train_files, fn_args.data_accessor,
                                        tft.TFTransformOutput(fn_args.transform_graph_path)))
  logging.info('Time-ordered search: %s', split.describe())
  tuner = TimeOrderedSearch(
      split, fn_args.train_steps, seed,
      oracle=FamilyAlternatingOracle(
          objective=keras_tuner.Objective('val_loss', 'min'), max_trials=max_trials,
          hyperparameters=search_space(), allow_new_entries=False, seed=seed),
      directory=fn_args.working_dir, project_name='big_tipper_tuning')
  return tfx.components.TunerFnResult(tuner=tuner, fit_kwargs={})


# ---------------------------------------------------------------------------------------------
# Calibration and export.

def calibrated_probabilities(calibrator: calibration.Calibrator, logit: tf.Tensor) -> tf.Tensor:
  """`calibrator.apply` in TensorFlow ops, float32, the shape of `logit`."""
  if calibrator.method == calibration.PLATT:
    return tf.sigmoid(calibrator.slope * logit + calibrator.intercept)
  x = tf.constant(calibrator.x, tf.float32)
  y = tf.constant(calibrator.y, tf.float32)
  if len(calibrator.x) == 1:
    return tf.fill(tf.shape(logit), y[0])
  flat = tf.reshape(logit, [-1])
  upper = tf.clip_by_value(tf.searchsorted(x, flat, side='right'), 1, len(calibrator.x) - 1)
  x0, x1 = tf.gather(x, upper - 1), tf.gather(x, upper)
  y0, y1 = tf.gather(y, upper - 1), tf.gather(y, upper)
  weight = tf.clip_by_value(tf.math.divide_no_nan(flat - x0, x1 - x0), 0.0, 1.0)
  return tf.reshape(y0 + weight * (y1 - y0), tf.shape(logit))


def export(scorer: Scorer, calibrator: calibration.Calibrator,
           tf_transform_output: tft.TFTransformOutput, serving_model_dir: str) -> None:
  """The SavedModel with its three signatures and the calibrator (module docstring)."""
  module = tf.Module()
  module.scorer = scorer
  module.tft_layer = tf_transform_output.transform_features_layer()
  raw_spec = tf_transform_output.raw_feature_spec()
  serving_spec = {k: v for k, v in raw_spec.items() if k != features.LABEL_KEY}
  examples_spec = tf.TensorSpec(shape=[None], dtype=tf.string, name=features.SERVING_INPUT_KEY)

  def logit_of(examples):
    return module.scorer(module.tft_layer(tf.io.parse_example(examples, serving_spec)))

  @tf.function(input_signature=[examples_spec])
  def serve_examples(examples):
    return {features.PREDICTION_KEY: calibrated_probabilities(calibrator, logit_of(examples))}

  @tf.function(input_signature=[examples_spec])
  def raw_logit(examples):
    return {features.RAW_LOGIT_KEY: logit_of(examples)}

  @tf.function(input_signature=[examples_spec])
  def transform_features(examples):
    return module.tft_layer(tf.io.parse_example(examples, raw_spec))

  tf.saved_model.save(module, serving_model_dir, signatures={
      features.SERVING_SIGNATURE: serve_examples,
      features.RAW_LOGIT_SIGNATURE: raw_logit,
      features.TRANSFORM_SIGNATURE: transform_features})
  path = os.path.join(serving_model_dir, calibration.EXPORT_FILE)
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(calibrator.to_json())


def run_fn(fn_args: tfx.components.FnArgs) -> None:
  """Fits the Tuner's best hyperparameters (or the defaults) on the time-ordered split, fits the
  calibrator on the validation window, exports the SavedModel."""
  seed = _seed(fn_args)
  hp = hyperparameters_from(fn_args.hyperparameters)
  logging.info('Training with hyperparameters %s', hp.values)
  tf_transform_output = tft.TFTransformOutput(fn_args.transform_output)
  split = time_ordered_split(load_split(fn_args.train_files, fn_args.data_accessor,
                                        tf_transform_output))
  logging.info('Time-ordered training: %s', split.describe())
  scorer = fit_family(hp, split, fn_args.train_steps, seed, callbacks=[
      tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq='epoch')])
  calibrator = calibration.fit(logits(scorer, split.validation), split.validation[LABEL], seed)
  calibrator = dataclasses.replace(calibrator, window_start=split.cutoff)
  logging.info('Calibration on the validation window: %s (log loss %s)', calibrator.method,
               calibrator.validation_log_loss)
  export(scorer, calibrator, tf_transform_output, fn_args.serving_model_dir)
