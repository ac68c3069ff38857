"""Benchmark of drift detection: cost per window size, and quality against TFDV's fixed thresholds.

    .venv/bin/python bench/drift_bench.py [--quick] [--out bench/results/drift.json]

Data: the training spans 1-5 (11,938 rows) are the population. The baseline is 9,500 rows drawn
from it (a train split's size); windows are drawn from it independently (clean traffic: exactly
the baseline's distribution, so every flag on them is a false alarm), then optionally transformed
by a scenario (traffic/scenarios.py: what it changes is what should be detected).

1. Cost: windows of 1k, 10k and 100k logged requests are written as PredictionLog files, then
   timed: conversion (ServingLogExampleGen's `generate_window`: read, convert, join, write the
   Examples), reading the Examples back, TFDV statistics in memory, and the detection itself
   (`detect_drift`: columns, calibration for the window's size, our measures, TFDV SERVING schema
   validation, TFDV's fixed-threshold comparators, JSON/HTML report), with rows/s and how each
   grows with the window.
2. Quality at 100, 1k, 10k and 100k rows, per scenario (the registered ones, plus two milder
   shifts, fares x1.05 and 10% of cash rides paid by card): the share of windows flagged (on `none`,
   the false-alarm rate), and the share flagged naming exactly the features the scenario changes,
   for our calibrated thresholds (every window through the same Monitor as the executor) and for
   TFDV's fixed thresholds (`validate_statistics` with `previous_statistics`, the schema's 0.1
   L-infinity / Jensen-Shannon comparators, on the same monitored features), side by side. TFDV
   needs statistics per window, so it gets fewer windows (see `WINDOWS`). For the schema-break
   scenarios the TFDV drift comparators can measure nothing on a missing column; TFDV's schema
   validation (SERVING) is reported beside them.
Prints tables and writes JSON. No test asserts any of these numbers.
"""
import argparse
import collections
import csv
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import warnings

warnings.filterwarnings('ignore')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow_data_validation as tfdv
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import prediction_log_pb2

from components.drift_detector import columns as columns_lib
from components.drift_detector import drift
from components.drift_detector import executor as detector
from components.drift_detector import policy as policy_lib
from components.serving_log_gen import executor as log_executor
from core import examples as examples_lib
from core import spans as spans_lib
from pipeline.config import REPO_ROOT
from serving import log_files
from traffic import scenarios

BASELINE_ROWS = 9_500
TIMING_SIZES = (1_000, 10_000, 100_000)
QUALITY_SIZES = (100, 1_000, 10_000, 100_000)
# (size) -> (calibrated windows for `none`, for each scenario, TFDV windows `none`, scenario)
WINDOWS = {100: (2000, 50, 200, 20), 1_000: (2000, 30, 200, 20), 10_000: (500, 10, 40, 5),
           100_000: (100, 4, 8, 2)}
QUICK_WINDOWS = {100: (300, 10, 30, 5), 1_000: (300, 5, 30, 5), 10_000: (100, 3, 8, 2),
                 100_000: (20, 2, 2, 1)}
SCENARIOS = scenarios.names()
# Milder shifts than the registered scenarios (bench only): how power grows with window size.
MILD = {'fare_x1.05': (lambda rows, seed: scenarios.inflate_fares(rows, 1.05), ('fare',)),
        'cash_to_card_10%': (lambda rows, seed: scenarios.cash_to_card(rows, 0.10, seed),
                             ('payment_type',))}


def load_population():
  rows = []
  for span in range(spans_lib.TRAINING_SPANS[0], spans_lib.TRAINING_SPANS[1] + 1):
    with open(spans_lib.span_path(os.path.join(REPO_ROOT, spans_lib.SPANS_DIR), span)) as f:
      rows.extend(csv.DictReader(f))
  return rows


def serialized_rows(rows, types):
  return [examples_lib.row_to_example({k: v for k, v in row.items() if k != 'big_tipper'},
                                      types).SerializeToString() for row in rows]


def write_logs(directory, serialized, start=1_800_000_000, per_file=20_000):
  """PredictionLog files as the server writes them (one record per example)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(0)
  probabilities = rng.uniform(size=len(serialized))
  for first in range(0, len(serialized), per_file):
    chunk = []
    for i in range(first, min(first + per_file, len(serialized))):
      log = prediction_log_pb2.PredictionLog()
      metadata = log.log_metadata
      metadata.model_spec.name = 'big_tipper'
      metadata.model_spec.version.value = 1
      metadata.model_spec.signature_name = 'serving_default'
      metadata.timestamp_secs = start + i
      metadata.request_origin = f'request_id=bench-{i}'
      log.predict_log.request.inputs['examples'].CopyFrom(tensor_pb2.TensorProto(
          dtype=types_pb2.DT_STRING, string_val=[serialized[i]]))
      output = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[probabilities[i]])
      output.tensor_shape.dim.add(size=1)
      output.tensor_shape.dim.add(size=1)
      log.predict_log.response.outputs['probabilities'].CopyFrom(output)
      chunk.append(log_files.frame_record(log.SerializeToString()))
    name = log_files.final_name(start + first, first // per_file + 1, 'be0c40')
    with open(os.path.join(directory, name), 'wb') as f:
      f.write(b''.join(chunk))


def time_sizes(sizes, population, types, schema, baseline, baseline_stats, work_dir):
  results = []
  rng = np.random.default_rng(1)
  for size in (200,) + tuple(sizes):     # 200: an untimed warm-up (TF graphs, TFDV generators)
    picked = rng.integers(0, len(population), size)
    serialized = serialized_rows([population[i] for i in picked], types)
    log_dir = os.path.join(work_dir, f'logs-{size}')
    write_logs(log_dir, serialized)
    out = os.path.join(work_dir, f'examples-{size}')
    timings = {}
    started = time.perf_counter()
    log_executor.generate_window(log_dir, out)
    timings['conversion'] = time.perf_counter() - started
    started = time.perf_counter()
    rows = detector.read_split(out, 'serving')
    timings['read_examples'] = time.perf_counter() - started
    started = time.perf_counter()
    stats = detector.window_statistics(rows, detector.serving_schema(schema))
    timings['statistics'] = time.perf_counter() - started
    monitor = drift.Monitor(baseline)      # cold: calibration for this size is included
    started = time.perf_counter()
    outcome = detector.detect_drift(rows, schema, baseline, baseline_statistics=baseline_stats,
                                    window_stats=stats, monitor=monitor)
    timings['detection'] = time.perf_counter() - started
    started = time.perf_counter()
    drift.Monitor(baseline).thresholds(size)
    timings['of_which_calibration'] = time.perf_counter() - started
    total = sum(v for k, v in timings.items() if not k.startswith('of_which'))
    shutil.rmtree(log_dir)
    shutil.rmtree(out)
    if size not in sizes:
      continue
    results.append({'rows': size, 'seconds': {k: round(v, 3) for k, v in timings.items()},
                    'total_seconds': round(total, 3), 'rows_per_second': round(size / total),
                    'verdict': outcome.verdict})
    print(f'  {size:>7} rows: ' + ', '.join(f'{k} {v:.2f}s' for k, v in timings.items()) +
          f' | total {total:.2f}s, {size / total:,.0f} rows/s', flush=True)
  for previous, current in zip(results, results[1:]):
    current['growth_vs_previous'] = round(current['total_seconds'] / previous['total_seconds'], 2)
  return results


def tfdv_flags(window_stats, baseline_stats, schema, monitored):
  """The monitored features TFDV's fixed-threshold drift comparators flag."""
  values = detector.tfdv_fixed_thresholds(window_stats, baseline_stats, schema)
  drifted = sorted(k for k, v in values.items() if v['flagged'] and k in monitored)
  return drifted


def quality(sizes, windows, population, population_columns, types, schema, policy, monitor,
            baseline, baseline_stats):
  specs = monitor.baseline.specs
  monitored = {s.name for s in specs}
  serving = detector.serving_schema(schema)
  results = []
  for size in sizes:
    n_clean, n_scenario, n_tfdv_clean, n_tfdv_scenario = windows[size]
    for name in SCENARIOS + list(MILD):
      if name in MILD:
        transform, affected = MILD[name]
        scenario = scenarios.Scenario(name, 'bench-only mild shift', lambda r, g: r,
                                      shifted_features=affected)
        scenario = dataclasses.replace(
            scenario, transform=lambda rows, rng, t=transform: t(rows, rng.randrange(2 ** 32)))
      else:
        scenario = scenarios.get(name)
      expected = sorted(scenario.affected_features)
      scenario_types = scenario.example_types(types)
      rng = np.random.default_rng([size] + [ord(c) for c in name])
      n_ours = n_clean if name == 'none' else n_scenario
      n_tfdv = n_tfdv_clean if name == 'none' else n_tfdv_scenario
      ours = collections.Counter()
      started = time.perf_counter()
      for w in range(n_ours):
        picked = rng.integers(0, len(population), size)
        if name == 'none':
          columns = population_columns.take(picked)
        else:
          rows = scenario.apply([population[i] for i in picked], seed=w)
          columns = columns_lib.columns_from_rows(rows, specs, scenario_types)
        assessment = monitor.assess(columns)
        ours['flagged'] += assessment.verdict != policy_lib.NO_DRIFT
        ours['critical'] += assessment.verdict == policy_lib.CRITICAL
        ours['exact'] += sorted(assessment.drifted) == expected
      ours_seconds = time.perf_counter() - started
      theirs = collections.Counter()
      full = collections.Counter()
      for w in range(n_tfdv):
        picked = rng.integers(0, len(population), size)
        rows = scenario.apply([population[i] for i in picked], seed=1000 + w)
        serialized = serialized_rows(rows, scenario_types)
        stats = detector.window_statistics(serialized, serving)
        drifted = tfdv_flags(stats, baseline_stats, serving, monitored)
        theirs['flagged'] += bool(drifted)
        theirs['exact'] += drifted == expected
        anomalies = tfdv.validate_statistics(stats, serving, environment='SERVING')
        blocking = [f for f in detector.gate_policy.classify({'s': anomalies},
                                                              policy.schema_policy)
                    if f.severity == 'blocking']
        theirs['schema_flagged'] += bool(blocking)
        # Our full executor path on the same windows (TFDV schema validation included).
        outcome = detector.detect_drift(serialized, schema, baseline, window_stats=stats,
                                        monitor=monitor)
        full['flagged'] += outcome.verdict != policy_lib.NO_DRIFT
      row = {'rows': size, 'scenario': name, 'expected': expected,
             'calibrated': {'windows': n_ours, 'flagged_rate': ours['flagged'] / n_ours,
                            'critical_rate': ours['critical'] / n_ours,
                            'exact_naming_rate': ours['exact'] / n_ours,
                            'seconds_per_window': round(ours_seconds / max(1, n_ours), 4)},
             'calibrated_full_path': {'windows': n_tfdv,
                                      'flagged_rate': full['flagged'] / max(1, n_tfdv)},
             'tfdv_fixed': {'windows': n_tfdv,
                            'flagged_rate': theirs['flagged'] / max(1, n_tfdv),
                            'exact_naming_rate': theirs['exact'] / max(1, n_tfdv),
                            'schema_validation_flagged_rate':
                                theirs['schema_flagged'] / max(1, n_tfdv)}}
      results.append(row)
      print(f'  {size:>7} {name:<17} ours {row["calibrated"]["flagged_rate"]:6.1%} '
            f'(exact {row["calibrated"]["exact_naming_rate"]:6.1%}, n={n_ours})  '
            f'ours-full {row["calibrated_full_path"]["flagged_rate"]:6.1%}  '
            f'TFDV fixed {row["tfdv_fixed"]["flagged_rate"]:6.1%} '
            f'(exact {row["tfdv_fixed"]["exact_naming_rate"]:6.1%}, '
            f'schema {row["tfdv_fixed"]["schema_validation_flagged_rate"]:6.1%}, n={n_tfdv})',
            flush=True)
  return results


def print_tables(report):
  print('\nCost per window (seconds; conversion + read + statistics + detection)')
  print(f'{"rows":>8} {"convert":>8} {"read":>6} {"stats":>6} {"detect":>7} {"(calib)":>8} '
        f'{"total":>7} {"rows/s":>8} {"growth":>7}')
  for t in report['timing']:
    s = t['seconds']
    print(f'{t["rows"]:>8} {s["conversion"]:>8.2f} {s["read_examples"]:>6.2f} '
          f'{s["statistics"]:>6.2f} {s["detection"]:>7.2f} {s["of_which_calibration"]:>8.2f} '
          f'{t["total_seconds"]:>7.2f} {t["rows_per_second"]:>8,} '
          f'{t.get("growth_vs_previous", ""):>7}')
  print('\nFlagged windows (false-alarm rate on `none`, detection rate otherwise)')
  print(f'{"rows":>8} {"scenario":<17} {"calibrated":>10} {"critical":>8} {"exact":>7} '
        f'{"TFDV 0.1":>9} {"exact":>7} {"TFDV schema":>11}')
  for q in report['quality']:
    print(f'{q["rows"]:>8} {q["scenario"]:<17} {q["calibrated"]["flagged_rate"]:>10.1%} '
          f'{q["calibrated"]["critical_rate"]:>8.1%} '
          f'{q["calibrated"]["exact_naming_rate"]:>7.1%} {q["tfdv_fixed"]["flagged_rate"]:>9.1%} '
          f'{q["tfdv_fixed"]["exact_naming_rate"]:>7.1%} '
          f'{q["tfdv_fixed"]["schema_validation_flagged_rate"]:>11.1%}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='fewer windows (a smoke run)')
  parser.add_argument('--skip-timing', action='store_true')
  parser.add_argument('--out', default=os.path.join(REPO_ROOT, 'bench', 'results', 'drift.json'))
  args = parser.parse_args(argv)
  windows = QUICK_WINDOWS if args.quick else WINDOWS
  schema = tfdv.load_schema_text(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'))
  types = examples_lib.feature_types(schema)
  policy = policy_lib.DriftPolicy()
  population = load_population()
  rng = np.random.default_rng(20261127)
  baseline_rows = [population[i] for i in rng.integers(0, len(population), BASELINE_ROWS)]
  baseline_serialized = examples_lib.rows_to_serialized_examples(baseline_rows, types)
  started = time.perf_counter()
  baseline = detector.build_baseline(baseline_serialized, schema, policy)
  baseline_seconds = time.perf_counter() - started
  baseline_stats = detector.window_statistics(baseline_serialized,
                                              detector.serving_schema(schema))
  monitor = drift.Monitor(baseline)
  population_columns = columns_lib.columns_from_rows(population, baseline.specs)
  report = {
      'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                  'load_average_at_start': os.getloadavg()},
      'settings': {'baseline_rows': BASELINE_ROWS, 'population_rows': len(population),
                   'monitored': [s.name for s in baseline.specs],
                   'policy': json.loads(policy.to_json()), 'windows': windows,
                   'quick': args.quick, 'baseline_build_seconds': round(baseline_seconds, 3)},
  }
  work_dir = tempfile.mkdtemp(prefix='drift-bench-')
  try:
    if not args.skip_timing:
      print('Cost per window size:', flush=True)
      report['timing'] = time_sizes(TIMING_SIZES, population, types, schema, baseline,
                                    baseline_stats, work_dir)
    print('Quality per window size and scenario:', flush=True)
    report['quality'] = quality(QUALITY_SIZES, windows, population, population_columns, types,
                                schema, policy, monitor, baseline, baseline_stats)
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  report.setdefault('timing', [])
  print_tables(report)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, 'w') as f:
    json.dump(report, f, indent=2, sort_keys=True)
  print(f'\nwritten: {args.out}')


if __name__ == '__main__':
  main()
