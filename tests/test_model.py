"""The model's two families, the time-ordered split, the family-alternating search, the trees
compiled to plain TensorFlow ops (against YDF's own inference), hyperparameter handling."""
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from models import features
from models import model as model_lib
from models import preprocessing
from models import trees

TIME = preprocessing.TIME_KEY
LABEL = model_lib.LABEL


def _columns(rows=800, seed=0):
  """Transformed columns of every normalization, a label that depends on two of them, times."""
  rng = np.random.default_rng(seed)
  columns = {}
  categorical = model_lib._categorical_sizes('z_score')   # pylint: disable=protected-access
  for key in model_lib.model_input_keys('z_score'):
    columns[key] = (rng.integers(0, categorical[key], rows).astype(np.int64) if key in categorical
                    else rng.normal(size=rows).astype(np.float32))
  for key in features.NUMERIC_FEATURES:          # the other normalizations of the same values
    value = columns[preprocessing.numeric_input_name(key, 'z_score')]
    columns[preprocessing.numeric_input_name(key, 'log_z_score')] = np.tanh(value)
    columns[preprocessing.numeric_input_name(key, 'quantile_buckets')] = np.digitize(
        value, np.quantile(value, np.linspace(0, 1, preprocessing.NUM_QUANTILE_BUCKETS + 1)[1:-1]))
  logit = 2.0 * columns['fare_z_score_xf'] - 1.5 * (columns['payment_type_xf'] % 2)
  columns[LABEL] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
  columns[TIME] = rng.permutation(rows).astype(np.int64) + 1_400_000_000
  return columns


def _network_hp(normalization='log_z_score'):
  hp = model_lib.search_space()
  hp.values[model_lib.FAMILY] = model_lib.NETWORK
  hp.values.update(model_lib.DEFAULT_HYPERPARAMETERS[model_lib.NETWORK])
  hp.values['normalization'] = normalization
  return hp


@pytest.mark.parametrize('normalization', preprocessing.NORMALIZATIONS)
def test_network_builds_and_trains_a_step(normalization):
  hp = _network_hp(normalization)
  model = model_lib.build_model(hp)
  columns = _columns(rows=8)
  x = {k: columns[k].reshape(-1, 1) for k in model_lib.model_input_keys(normalization)}
  before = [w.numpy().copy() for w in model.trainable_weights]
  history = model.fit(x, columns[LABEL].reshape(-1, 1).astype('float32'), epochs=1, verbose=0)
  assert np.isfinite(history.history['loss'][0])
  assert any(not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
  probabilities = model.predict(x, verbose=0)
  assert probabilities.shape == (8, 1) and ((probabilities > 0) & (probabilities < 1)).all()


def test_numeric_inputs_follow_the_normalization():
  assert 'fare_quantile_buckets_xf' in model_lib.model_input_keys('quantile_buckets')
  assert 'fare_z_score_xf' not in model_lib.model_input_keys('quantile_buckets')


def test_validation_window_is_the_latest_fifth_of_the_rows():
  columns = _columns(rows=1000)
  split = model_lib.time_ordered_split(columns)
  assert len(split.validation[LABEL]) == 200 and len(split.fit[LABEL]) == 800
  assert split.fit[TIME].max() < split.cutoff == split.validation[TIME].min()
  # Rows keep their columns together.
  order = np.argsort(columns[TIME])[-200:]
  assert sorted(split.validation['fare_z_score_xf']) == sorted(columns['fare_z_score_xf'][order])


def test_rows_without_time_order_are_refused():
  columns = _columns(rows=50)
  columns[TIME] = np.zeros(50, np.int64)            # the column was empty: every row -> 0
  with pytest.raises(ValueError, match='every row starts at trip_start_timestamp = 0'):
    model_lib.time_ordered_split(columns)


def test_trees_in_tensorflow_ops_give_ydfs_own_probabilities():
  import ydf
  columns = _columns(rows=600)
  keys = ['fare_z_score_xf', 'payment_type_xf', 'trip_start_hour_xf', 'company_xf']
  data = {**{k: columns[k].astype(np.float32) for k in keys}, LABEL: columns[LABEL]}
  forest = ydf.GradientBoostedTreesLearner(
      label=LABEL, task=ydf.Task.CLASSIFICATION, num_trees=30, max_depth=5,
      validation_ratio=0.0).train(data, verbose=0)
  assert forest.label_classes() == ['0', '1']        # predict() is P(big tipper)
  arrays = trees.from_ydf(forest)
  assert arrays.num_trees == 30 and 2 <= arrays.depth <= 5
  assert set(arrays.feature_names) <= set(keys)
  expected = forest.predict(data)
  compiled = trees.TreeEnsemble(arrays)({k: tf.constant(columns[k]) for k in keys})
  assert compiled.shape == (600, 1)
  np.testing.assert_allclose(tf.sigmoid(compiled).numpy().reshape(-1), expected, atol=1e-5)


def test_a_forest_with_categorical_conditions_is_refused():
  import ydf
  rng = np.random.default_rng(0)
  colour = rng.choice(['red', 'blue', 'green'], 300)
  label = (colour == 'red').astype(np.int64)
  forest = ydf.GradientBoostedTreesLearner(
      label='label', task=ydf.Task.CLASSIFICATION, num_trees=3, validation_ratio=0.0).train(
          {'colour': colour, 'label': label}, verbose=0)
  with pytest.raises(trees.UnsupportedTreeError, match="CategoricalIsInCondition on 'colour'"):
    trees.from_ydf(forest)


def test_search_alternates_families_from_their_defaults_and_ranks_by_validation_log_loss(
    tmp_path):
  split = model_lib.time_ordered_split(_columns())
  search = model_lib.TimeOrderedSearch(
      split, train_steps=100, seed=1, directory=str(tmp_path), project_name='search',
      oracle=model_lib.FamilyAlternatingOracle(
          objective=keras_tuner.Objective('val_loss', 'min'), max_trials=3,
          hyperparameters=model_lib.search_space(), allow_new_entries=False, seed=1))
  search.search()
  trials = [search.oracle.trials[i] for i in sorted(search.oracle.trials)]
  assert [t.hyperparameters.values[model_lib.FAMILY] for t in trials] == [
      model_lib.TREES, model_lib.NETWORK, model_lib.TREES]
  for trial in trials[:2]:          # each family's first trial: its defaults
    family = trial.hyperparameters.values[model_lib.FAMILY]
    assert trial.hyperparameters.values == {model_lib.FAMILY: family,
                                            **model_lib.DEFAULT_HYPERPARAMETERS[family]}
  assert trials[2].hyperparameters.values != trials[0].hyperparameters.values
  scores = [t.score for t in trials]
  assert all(np.isfinite(scores)) and scores[0] < 0.6   # the trees learnt (a coin: log 2 = 0.69)
  best = search.oracle.get_best_trials(1)[0]
  assert best.score == min(scores)


def test_a_failing_trial_stops_the_search(tmp_path):
  columns = _columns(rows=200)
  del columns['company_xf']                          # a column the models read
  split = model_lib.time_ordered_split(columns)
  search = model_lib.TimeOrderedSearch(
      split, train_steps=50, seed=1, directory=str(tmp_path), project_name='failing',
      oracle=model_lib.FamilyAlternatingOracle(
          objective=keras_tuner.Objective('val_loss', 'min'), max_trials=2,
          hyperparameters=model_lib.search_space(), allow_new_entries=False, seed=1))
  with pytest.raises(keras_tuner.errors.FatalError, match="trial 0 .*gradient_boosted_trees.*"
                                                          "company_xf"):
    search.search()


def test_defaults_when_no_tuned_hyperparameters():
  assert model_lib.hyperparameters_from(None).values == {
      model_lib.FAMILY: model_lib.DEFAULT_FAMILY,
      **model_lib.DEFAULT_HYPERPARAMETERS[model_lib.DEFAULT_FAMILY]}


def test_tuned_hyperparameters_are_read_back():
  hp = _network_hp()
  hp.values['hidden_units'] = 128
  again = model_lib.hyperparameters_from(hp.get_config())
  assert again.get('hidden_units') == 128 and again.get(model_lib.FAMILY) == model_lib.NETWORK


def test_foreign_hyperparameters_are_refused():
  other = keras_tuner.HyperParameters()
  other.Int('units', 1, 2)
  with pytest.raises(ValueError, match="family None"):
    model_lib.hyperparameters_from(other.get_config())
  partial = keras_tuner.HyperParameters()
  partial.Fixed(model_lib.FAMILY, model_lib.NETWORK)
  partial.Fixed('hidden_units', 32)
  with pytest.raises(ValueError, match=r"family network lack \['dropout'"):
    model_lib.hyperparameters_from(partial.get_config())
