"""The training run's summary for people: the search's spread beside its pick, the calibrator."""
from pipeline import run_summary

TRIALS = [  # as TFX's Tuner writes tuner_results.json: best first
    {'trial_id': '0', 'score': 0.2290, 'family': 'gradient_boosted_trees', 'max_depth': 4},
    {'trial_id': '2', 'score': 0.2301, 'family': 'gradient_boosted_trees', 'max_depth': 6},
    {'trial_id': '1', 'score': 0.2455, 'family': 'network', 'hidden_units': 64},
    {'trial_id': '3', 'score': 0.2612, 'family': 'network', 'hidden_units': 32},
]


def test_search_summary_gives_the_spread_per_family_and_the_pick():
  search = run_summary.search_summary(TRIALS)
  assert search == {
      'trials': 4, 'best': 0.2290, 'best_family': 'gradient_boosted_trees',
      'range': [0.2290, 0.2612],
      'by_family': {'gradient_boosted_trees': {'trials': 2, 'range': [0.2290, 0.2301]},
                    'network': {'trials': 2, 'range': [0.2455, 0.2612]}}}
  assert run_summary.search_summary([{'trial_id': '0', 'score': None}]) is None


def test_the_summary_shows_search_calibration_and_calibration_errors():
  summary = {
      'run_id': 'r', 'components': [], 'hyperparameters': {'family': 'gradient_boosted_trees'},
      'hyperparameters_source': 'tuner (this run)', 'search': run_summary.search_summary(TRIALS),
      'calibration': {'method': 'isotonic', 'rows': 1910, 'window_start': 1420416000,
                      'validation_log_loss': {'raw': 0.229, 'platt': 0.2281, 'isotonic': 0.2275}},
      'overall': {'auc': 0.959, 'expected_calibration_error': 0.0104, 'example_count': 2389},
      'holdout': {'spans': '6-8', 'auc': 0.943, 'log_loss': 0.2357,
                  'expected_calibration_error': 0.017, 'accuracy': 0.89, 'rows': 3064}}
  text = run_summary.format_summary(summary)
  assert ('search:          4 trials, validation log loss (latest rows in time) 0.2290-0.2612 '
          '(gradient_boosted_trees 2: 0.2290-0.2301; network 2: 0.2455-0.2612); picked '
          'gradient_boosted_trees 0.2290') in text
  assert ('calibration:     isotonic, fitted on 1910 rows from 2015-01-05 on (cross-validated '
          'log loss: raw 0.2290, platt 0.2281, isotonic 0.2275)') in text
  assert 'ECE 0.010, examples 2389' in text
  assert 'future spans 6-8: AUC 0.943, log loss 0.236, ECE 0.017, accuracy 0.890' in text
