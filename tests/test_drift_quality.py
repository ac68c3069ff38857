"""Drift detection quality, measured: false alarms on clean windows, detection of every scenario.

The null model is made exact: the population is every row of the training spans 1-5 (11,938);
the baseline is 9,500 rows drawn from it (the size of a train split), the clean windows are drawn
from it independently. A clean window is therefore a sample of the baseline's own distribution,
which is what "no drift" means, at every window size. Scenario windows are drawn the same way and
then transformed by traffic/scenarios.py.

The fast numpy path (no TFX, no Beam): the same Monitor the DriftDetector executor uses.
"""
import collections

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from components.drift_detector import columns as columns_lib
from components.drift_detector import drift
from components.drift_detector import policy as policy_lib
from pipeline.config import REPO_ROOT
from tests.conftest import read_span
from traffic import scenarios

BASELINE_ROWS = 9_500
CLEAN_WINDOWS = {100: 1000, 1_000: 1000, 10_000: 250}     # window size -> clean windows measured
MAX_FALSE_ALARM_RATE = 0.01


@pytest.fixture(scope='module')
def world():
  with open(f'{REPO_ROOT}/schema/schema.pbtxt') as f:
    schema = text_format.Parse(f.read(), schema_pb2.Schema())
  rows = [row for span in range(1, 6) for row in read_span(span)[1]]
  policy = policy_lib.DriftPolicy()
  specs = columns_lib.feature_specs(schema, policy.features)
  population = columns_lib.columns_from_rows(rows, specs)
  labels = np.array([int(r['big_tipper']) for r in rows])
  rng = np.random.default_rng(20261127)
  picked = rng.integers(0, len(rows), BASELINE_ROWS)
  baseline = drift.Baseline(population.take(picked), specs, policy, labels=labels[picked])
  types = {f.name: f.type for f in schema.feature}
  return dict(rows=rows, population=population, labels=labels, monitor=drift.Monitor(baseline),
              types=types, specs=specs, rng=rng)


@pytest.mark.parametrize('size', sorted(CLEAN_WINDOWS))
def test_false_alarm_rate_on_clean_windows_is_at_most_one_percent(world, size):
  monitor, population, labels = world['monitor'], world['population'], world['labels']
  rng = np.random.default_rng(size)
  verdicts, named = collections.Counter(), collections.Counter()
  windows = CLEAN_WINDOWS[size]
  for _ in range(windows):
    picked = rng.integers(0, population.n_rows, size)
    assessment = monitor.assess(population.take(picked), labels=labels[picked])
    verdicts[assessment.verdict] += 1
    named.update(assessment.drifted)
  flagged = verdicts[policy_lib.WARNING] + verdicts[policy_lib.CRITICAL]
  print(f'{size} rows: {dict(verdicts)} over {windows} clean windows; named {dict(named)}')
  assert verdicts[policy_lib.INSUFFICIENT_DATA] == 0
  assert flagged / windows <= MAX_FALSE_ALARM_RATE
  assert verdicts[policy_lib.CRITICAL] / windows <= MAX_FALSE_ALARM_RATE / 2


def test_thresholds_follow_the_window_size(world):
  """JSD between samples of one distribution shrinks with their size: so must the thresholds."""
  monitor = world['monitor']
  small, large = monitor.thresholds(100, 100), monitor.thresholds(10_000, 10_000)
  for name in ('fare', 'payment_type', 'big_tipper'):
    assert small[name].null_mean > 3 * large[name].null_mean
    assert small[name].by_tier['warning'] > large[name].by_tier['warning']
  # The critical tier's effect-size floor holds at any size.
  assert large['fare'].by_tier['critical'] >= 0.01
  assert large['payment_type'].by_tier['critical'] >= 0.05


DETECTION_WINDOWS = {100: 8, 1_000: 4, 10_000: 2}


@pytest.mark.parametrize('name', [n for n in scenarios.names() if n != 'none'])
def test_each_scenario_is_detected_naming_exactly_the_features_it_changes(world, name):
  scenario = scenarios.get(name)
  rng = np.random.default_rng(len(name))
  types = scenario.example_types(world['types'])
  for size, windows in DETECTION_WINDOWS.items():
    for window in range(windows):
      picked = rng.integers(0, len(world['rows']), size)
      rows = scenario.apply([world['rows'][i] for i in picked], seed=window)
      assessment = world['monitor'].assess(
          columns_lib.columns_from_rows(rows, world['specs'], types))
      assert assessment.verdict == policy_lib.CRITICAL, (name, size, assessment.reason)
      assert sorted(assessment.drifted) == sorted(scenario.affected_features), (name, size)


def test_clean_scenario_is_not_flagged_and_a_tiny_window_is_insufficient(world):
  rows = world['rows']
  rng = np.random.default_rng(7)
  picked = rng.integers(0, len(rows), 2_000)
  clean = scenarios.apply('none', [rows[i] for i in picked])
  assessment = world['monitor'].assess(columns_lib.columns_from_rows(clean, world['specs']))
  assert assessment.verdict == policy_lib.NO_DRIFT, assessment.reason
  tiny = columns_lib.columns_from_rows(clean[:20], world['specs'])
  assessment = world['monitor'].assess(tiny)
  assert assessment.verdict == policy_lib.INSUFFICIENT_DATA
  assert all(m.status == policy_lib.INSUFFICIENT_DATA for m in assessment.measures)
