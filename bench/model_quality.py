"""Model quality on the future: Loopline's model beside a HistGradientBoosting baseline.

    .venv/bin/python bench/model_quality.py [--home DIR] [--out bench/results/model_quality.json]

Both are trained on the training spans 1-5 (2013 H1 - 2015 H1) and scored on the same
time-ordered holdout, the held-back spans 6-8 (2015 H2 - 2016 H2, 3,064 rows), with 3 seeds each:

- Loopline: the real training pipeline (`loopline train`'s defaults: the family-alternating search
  on the time-ordered validation window, the Trainer, the calibrator in the export), once per
  seed (`PipelineConfig.seed`; ExampleGen to Transform come from the cache after the first), the
  pushed model's `serving_default` scored as the server answers (pipeline/holdout.py).
- HistGradientBoosting (scikit-learn, defaults, its own early stopping) on the same raw columns
  of all of spans 1-5, `payment_type` and `company` as categories, `random_state` = the seed.

Measured: AUC, PR-AUC (average precision), log loss and expected calibration error (10 bins,
models/calibration.py), overall, on credit-card trips alone, per payment type and per hour; for
each, the median over the seeds and the spread (min-max). Also the search of each Loopline run
(the families' validation log loss: which family won and by how much) and, on the first run's
transformed data, the engineered feature groups issue 14 proposed, each added to the trees'
inputs, scored on the same time-ordered validation window the search ranks on: a group is useful
if it lowers that window's log loss by more than twice the standard error of the row-by-row
difference (paired, the same rows with and without the group).

Ends with the issue's targets (median log loss <= the baseline's, median AUC within the
baseline's seed spread or above, holdout ECE < 0.02) as met / NOT met. Prints tables and writes
JSON. No test asserts any of these numbers.
"""
import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top

from core import spans as spans_lib
from models import calibration
from models import features
from pipeline.config import REPO_ROOT, PipelineConfig

SEEDS = (42, 43, 44)
HGB_SEEDS = (0, 1, 2)
HOLDOUT_SPANS = spans_lib.FUTURE_SPANS
METRICS = ('auc', 'pr_auc', 'log_loss', 'ece')
HGB_NUMERIC = (features.NUMERIC_FEATURES + features.COORDINATE_FEATURES +
               tuple(features.INTEGER_CATEGORICAL_FEATURES))
HGB_CATEGORICAL = tuple(features.STRING_CATEGORICAL_FEATURES)
CREDIT_CARD = 'Credit Card'
MIN_SLICE_ROWS = 20
ECE_TARGET = 0.02
BASE_GROUP = 'none'               # the pipeline's own inputs


def say(text: str) -> None:
  print(text, flush=True)


def read_rows(data_root: str, first: int, last: int):
  rows = []
  for span, version in spans_lib.check_span_range(data_root, first, last).items():
    with open(spans_lib.span_path(data_root, span, version), newline='') as f:
      rows.extend(csv.DictReader(f))
  return rows


def scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """The four measures of one set of rows (AUC and PR-AUC need both classes)."""
  from sklearn import metrics
  result = {'rows': int(len(labels)), 'base_rate': float(labels.mean()),
            'log_loss': calibration.log_loss(labels, probabilities),
            'ece': calibration.expected_calibration_error(labels, probabilities)}
  if 0 < labels.sum() < len(labels):
    result['auc'] = float(metrics.roc_auc_score(labels, probabilities))
    result['pr_auc'] = float(metrics.average_precision_score(labels, probabilities))
  return result


def sliced_scores(rows, labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """{slice name: scores}: overall, credit-card trips, each payment type, each hour."""
  payment = np.array([r['payment_type'] for r in rows])
  hour = np.array([int(r['trip_start_hour'] or -1) for r in rows])
  slices = {'overall': np.ones(len(rows), bool), 'credit_card_trips': payment == CREDIT_CARD}
  slices.update({f'payment_type={p}': payment == p for p in sorted(set(payment))})
  slices.update({f'trip_start_hour={h}': hour == h for h in sorted(set(hour))})
  return {name: scores(labels[mask], probabilities[mask]) for name, mask in slices.items()
          if mask.sum() >= MIN_SLICE_ROWS}


def train_loopline(home: str, seed: int) -> dict:
  """One run of the training pipeline (loopline train's defaults) with `seed`."""
  from pipeline import training_run
  config = PipelineConfig(home=home, seed=seed)
  started = time.monotonic()
  summary = training_run.train(config, out=open(os.devnull, 'w'))
  summary['bench_seconds'] = time.monotonic() - started
  if not summary.get('model_uri'):
    raise RuntimeError(f'the training run of seed {seed} produced no model')
  return summary


def score_loopline(summary: dict, rows, schema_path: str) -> np.ndarray:
  from pipeline import holdout
  return holdout.score_rows(summary['model_uri'], rows, schema_path)


def hgb_frame(rows):
  import pandas as pd
  frame = pd.DataFrame({k: pd.to_numeric([r[k] for r in rows], errors='coerce')
                        for k in HGB_NUMERIC})
  for key in HGB_CATEGORICAL:
    frame[key] = pd.Categorical([r[key] or 'missing' for r in rows])
  return frame


def train_and_score_hgb(train_rows, test_rows, seed: int) -> np.ndarray:
  import pandas as pd
  from sklearn.ensemble import HistGradientBoostingClassifier
  train, test = hgb_frame(train_rows), hgb_frame(test_rows)
  for key in HGB_CATEGORICAL:          # one category set for both
    categories = sorted(set(train[key].astype(str)) | set(test[key].astype(str)))
    train[key] = pd.Categorical(train[key].astype(str), categories=categories)
    test[key] = pd.Categorical(test[key].astype(str), categories=categories)
  labels = np.array([int(r[features.LABEL_KEY]) for r in train_rows])
  model = HistGradientBoostingClassifier(categorical_features='from_dtype', random_state=seed)
  return model.fit(train, labels).predict_proba(test)[:, 1]


def aggregate(per_seed: list) -> dict:
  """{slice: {metric: {median, min, max, values}}} over the seeds' sliced scores."""
  result = {}
  for name in per_seed[0]:
    result[name] = {'rows': per_seed[0][name]['rows'], 'base_rate': per_seed[0][name]['base_rate']}
    for metric in METRICS:
      values = [s[name][metric] for s in per_seed if name in s and metric in s[name]]
      if values:
        result[name][metric] = {'median': statistics.median(values), 'min': min(values),
                                'max': max(values), 'values': values}
  return result


# ---------------------------------------------------------------------------------------------
# Engineered feature groups, on the trees' inputs, ranked on the time-ordered validation window.

def feature_groups(rows) -> dict:
  """{group: {column: values}}: the candidates of issue 14 (computed here from the raw rows; a
  group that helped would move into models/preprocessing.py)."""
  def number(key):
    return np.array([float(r[key]) if r[key] else np.nan for r in rows], np.float32)
  fare, miles, seconds = (np.nan_to_num(number(k)) for k in ('fare', 'trip_miles',
                                                              'trip_seconds'))
  hour = np.nan_to_num(number('trip_start_hour'))
  coordinates = {k: np.nan_to_num(number(k), nan=0.0) for k in features.COORDINATE_FEATURES}
  return {
      'fare_rates_and_speed': {'fare_per_mile': fare / np.maximum(miles, 0.1),
                               'fare_per_minute': fare / np.maximum(seconds / 60, 1.0),
                               'miles_per_hour': miles / np.maximum(seconds / 3600, 0.01)},
      'pickup_dropoff_distance': {'distance': np.hypot(
          coordinates['pickup_latitude'] - coordinates['dropoff_latitude'],
          (coordinates['pickup_longitude'] - coordinates['dropoff_longitude']) * 0.74)},
      'cyclical_hour': {'hour_sin': np.sin(2 * np.pi * hour / 24),
                        'hour_cos': np.cos(2 * np.pi * hour / 24)},
      'raw_coordinates': {f'{k}_raw': v for k, v in coordinates.items()},
  }


def transformed_columns(transform_graph_uri: str, rows, schema_path: str) -> dict:
  """The Transform output of raw rows (what the Trainer reads), as [rows] arrays."""
  import tensorflow as tf
  import tensorflow_data_validation as tfdv
  import tensorflow_transform as tft
  from core import examples as examples_lib
  output = tft.TFTransformOutput(transform_graph_uri)
  layer = output.transform_features_layer()
  types = examples_lib.feature_types(tfdv.load_schema_text(schema_path))
  serialized = examples_lib.rows_to_serialized_examples(rows, types)
  parts = {}
  for start in range(0, len(serialized), 4096):
    parsed = tf.io.parse_example(tf.constant(serialized[start:start + 4096]),
                                 output.raw_feature_spec())
    for key, tensor in layer(parsed).items():
      parts.setdefault(key, []).append(tensor.numpy().reshape(-1))
  return {k: np.concatenate(v) for k, v in parts.items()}


def feature_group_study(transform_graph_uri: str, train_rows, test_rows, schema_path: str,
                        tree_hyperparameters: dict) -> dict:
  from models import model as model_lib
  train = transformed_columns(transform_graph_uri, train_rows, schema_path)
  test = transformed_columns(transform_graph_uri, test_rows, schema_path)
  train_groups, test_groups = feature_groups(train_rows), feature_groups(test_rows)
  hp = model_lib.search_space()
  hp.values.update({model_lib.FAMILY: model_lib.TREES, **tree_hyperparameters})
  result = {}
  base_losses = None
  for group in [None] + list(train_groups):
    extra_train = train_groups.get(group, {})
    extra_test = test_groups.get(group, {})
    split = model_lib.time_ordered_split({**train, **extra_train})
    keys = model_lib.tree_input_keys() + list(extra_train)
    ensemble = model_lib.fit_trees(hp, split, model_lib.DEFAULT_SEED, keys=keys)
    validation = model_lib.validation_metrics(ensemble, split)
    losses = calibration.row_log_loss(
        split.validation[model_lib.LABEL],
        calibration.sigmoid(model_lib.logits(ensemble, split.validation)))
    base_losses = losses if base_losses is None else base_losses
    gain = base_losses - losses             # per row: how much lower the log loss is with it
    test_columns = {**test, **extra_test}
    holdout = calibration.sigmoid(model_lib.logits(ensemble, test_columns))
    test_labels = test_columns[model_lib.LABEL]
    row = {'columns': list(extra_train), 'validation_log_loss': validation['val_loss'],
           'validation_auc': validation.get('val_auc'),
           'validation_log_loss_gain': float(gain.mean()),
           'gain_standard_error': float(gain.std(ddof=1) / np.sqrt(len(gain))),
           'useful': bool(group) and calibration.clearly_lower(losses, base_losses),
           'holdout_log_loss': calibration.log_loss(test_labels, holdout),
           'holdout_auc': scores(test_labels, holdout).get('auc')}
    result[group or BASE_GROUP] = row
    say(f'  {group or BASE_GROUP:<24} validation log loss {row["validation_log_loss"]:.4f} '
        f'(lower by {row["validation_log_loss_gain"]:+.4f} +- {row["gain_standard_error"]:.4f}: '
        f'{"useful" if row["useful"] else "not useful"}), holdout log loss '
        f'{row["holdout_log_loss"]:.4f}')
  return result


# ---------------------------------------------------------------------------------------------

def table(models: dict, slice_name: str) -> str:
  lines = [f'{"model":<28} {"AUC":>22} {"PR-AUC":>22} {"log loss":>22} {"ECE":>22}']
  for name, result in models.items():
    row = result['slices'].get(slice_name, {})
    cells = [f'{row[m]["median"]:.4f} ({row[m]["min"]:.4f}-{row[m]["max"]:.4f})'
             if m in row else 'n/a' for m in METRICS]
    lines.append(f'{name:<28} ' + ' '.join(f'{c:>22}' for c in cells))
  return '\n'.join(lines)


def targets(loopline: dict, baseline: dict) -> list:
  ours, theirs = loopline['slices']['overall'], baseline['slices']['overall']
  return [
      ('median log loss <= the baseline\'s median',
       f'{ours["log_loss"]["median"]:.4f} vs {theirs["log_loss"]["median"]:.4f}',
       ours['log_loss']['median'] <= theirs['log_loss']['median']),
      ('median AUC within the baseline\'s seed spread or above',
       f'{ours["auc"]["median"]:.4f} vs {theirs["auc"]["min"]:.4f}-{theirs["auc"]["max"]:.4f}',
       ours['auc']['median'] >= theirs['auc']['min']),
      (f'holdout ECE < {ECE_TARGET} (every seed)',
       f'{ours["ece"]["max"]:.4f} (median {ours["ece"]["median"]:.4f})',
       ours['ece']['max'] < ECE_TARGET),
  ]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--home', help='the training runs\' home (default: a new temporary one)')
  parser.add_argument('--out', default=os.path.join(REPO_ROOT, 'bench', 'results',
                                                    'model_quality.json'))
  parser.add_argument('--seeds', default=','.join(map(str, SEEDS)))
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(',')]
  home = args.home or tempfile.mkdtemp(prefix='loopline-model-quality-')
  config = PipelineConfig(home=home)
  train_rows = read_rows(config.data_root, *spans_lib.TRAINING_SPANS)
  test_rows = read_rows(config.data_root, *HOLDOUT_SPANS)
  labels = np.array([int(r[features.LABEL_KEY]) for r in test_rows])
  say(f'Model quality: train on spans {spans_lib.TRAINING_SPANS[0]}-{spans_lib.TRAINING_SPANS[1]} '
      f'({len(train_rows)} rows), score on spans {HOLDOUT_SPANS[0]}-{HOLDOUT_SPANS[1]} '
      f'({len(test_rows)} rows); home {home}')
  started = time.monotonic()

  loopline_runs, loopline_scores = [], []
  for seed in seeds:
    say(f'Loopline, seed {seed}: training pipeline (search, Trainer, Evaluator) ...')
    summary = train_loopline(home, seed)
    probabilities = score_loopline(summary, test_rows, config.schema_path)
    loopline_scores.append(sliced_scores(test_rows, labels, probabilities))
    overall = loopline_scores[-1]['overall']
    loopline_runs.append({
        'seed': seed, 'seconds': summary['bench_seconds'],
        'hyperparameters': summary.get('hyperparameters'), 'search': summary.get('search'),
        'calibration': summary.get('calibration'), 'eval_split': summary.get('overall'),
        'blessed': summary.get('blessed'), 'run_id': summary['run_id']})
    say(f'  {summary["bench_seconds"]:.0f} s; picked {summary["hyperparameters"].get("family")}; '
        f'holdout AUC {overall["auc"]:.4f}, log loss {overall["log_loss"]:.4f}, ECE '
        f'{overall["ece"]:.4f}; eval split AUC {summary["overall"].get("auc", float("nan")):.4f}, '
        f'ECE {summary["overall"].get("expected_calibration_error", float("nan")):.4f}')

  hgb_scores = []
  for seed in HGB_SEEDS:
    probabilities = train_and_score_hgb(train_rows, test_rows, seed)
    hgb_scores.append(sliced_scores(test_rows, labels, probabilities))
    overall = hgb_scores[-1]['overall']
    say(f'HistGradientBoosting, seed {seed}: holdout AUC {overall["auc"]:.4f}, log loss '
        f'{overall["log_loss"]:.4f}, ECE {overall["ece"]:.4f}')

  models = {
      'loopline': {'seeds': seeds, 'runs': loopline_runs, 'slices': aggregate(loopline_scores)},
      'hist_gradient_boosting': {'seeds': list(HGB_SEEDS), 'slices': aggregate(hgb_scores)},
  }

  say('Engineered feature groups (trees, time-ordered validation window of spans 1-5):')
  from metadata import connection as metadata_connection
  from metadata import queries as mq
  store = metadata_connection.open_pipeline_store(config)
  records = {r.node_id: r for r in mq.execution_records(
      store, mq.run_contexts(store, config.pipeline_name)[0])}
  transform_graph = records['Transform'].outputs['transform_graph'][0].uri
  picked_trees = next((r['hyperparameters'] for r in loopline_runs
                       if r['hyperparameters'].get('family') == 'gradient_boosted_trees'), None)
  from models import model as model_lib
  tree_hp = {k: v for k, v in (picked_trees or model_lib.DEFAULT_HYPERPARAMETERS[
      model_lib.TREES]).items() if k != model_lib.FAMILY}
  groups = feature_group_study(transform_graph, train_rows, test_rows, config.schema_path,
                               tree_hp)

  checks = targets(models['loopline'], models['hist_gradient_boosting'])
  result = {
      'machine': {'platform': platform.platform(), 'cpus': os.cpu_count(),
                  'load_average': os.getloadavg()},
      'settings': {'train_spans': list(spans_lib.TRAINING_SPANS),
                   'holdout_spans': list(HOLDOUT_SPANS), 'train_rows': len(train_rows),
                   'holdout_rows': len(test_rows), 'ece_bins': calibration.ECE_BINS},
      'models': models, 'feature_groups': groups,
      'targets': [{'target': t, 'value': v, 'met': met} for t, v, met in checks],
      'seconds': time.monotonic() - started,
  }
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(result, f, indent=1)

  say('\nOverall (median over seeds, spread min-max):')
  say(table(models, 'overall'))
  say('\nCredit-card trips alone:')
  say(table(models, 'credit_card_trips'))
  say('\nSearch per Loopline run (validation log loss, lower is better):')
  for run in loopline_runs:
    search = run['search'] or {}
    families = ', '.join(f'{family} best {info["range"][0]:.4f}'
                         for family, info in (search.get('by_family') or {}).items())
    say(f'  seed {run["seed"]}: picked {run["hyperparameters"].get("family")} ({families}); '
        f'calibration {(run["calibration"] or {}).get("method")}')
  say('\nEngineered feature groups on the trees (useful: validation log loss lower by more than '
      'twice its standard error):')
  for name, row in groups.items():
    if name != BASE_GROUP:
      say(f'  {name:<24} {row["validation_log_loss_gain"]:+.4f} +- '
          f'{row["gain_standard_error"]:.4f}: {"useful" if row["useful"] else "not useful"}')
  say('\nTargets:')
  for target, value, met in checks:
    say(f'  {"met    " if met else "NOT met"}  {target}: {value}')
  say(f'\n{result["seconds"]:.0f} s; JSON: {args.out}')
  return 0 if all(met for _, _, met in checks) else 1


if __name__ == '__main__':
  sys.exit(main())
