"""DriftDetector's executor path: TFDV validation, verdicts on bad input, versions, reports.

Baseline and windows are built from the bundled spans as tf.Examples; statistics are computed in
memory (no Beam). The trained-model path (predictions, lineage, Importers) is in
test_drift_pipeline.py.
"""
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.data_gate import executor as gate_executor
from components.drift_detector import drift
from components.drift_detector import executor as detector
from components.drift_detector import policy as policy_lib
from components.drift_detector import spec
from components.serving_log_gen import spec as log_spec
from core import examples as examples_lib
from pipeline.config import REPO_ROOT
from tests.conftest import read_span
from traffic import scenarios

SCHEMA_PATH = os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt')


@pytest.fixture(scope='module')
def setup():
  schema = tfdv.load_schema_text(SCHEMA_PATH)
  types = examples_lib.feature_types(schema)
  rows = [row for span in (1, 2, 3) for row in read_span(span)[1]]
  # A 3:1 split of the same spans: the held-out rows are clean traffic for this baseline.
  train = [row for i, row in enumerate(rows) if i % 4]
  held_out = rows[::4]
  baseline_rows = examples_lib.rows_to_serialized_examples(train, types)
  policy = policy_lib.DriftPolicy()
  baseline = detector.build_baseline(baseline_rows, schema, policy)
  return dict(schema=schema, types=types, train=train, held_out=held_out,
              baseline_rows=baseline_rows, baseline=baseline, policy=policy,
              monitor=drift.Monitor(baseline))


def window_examples(rows, types, version=1, predictions=None, labels=True):
  """Serving examples as ServingLogExampleGen writes them."""
  result = []
  for i, row in enumerate(rows):
    example = examples_lib.row_to_example(
        {k: v for k, v in row.items() if k != 'big_tipper'}, types)
    feature = example.features.feature
    feature[log_spec.MODEL_VERSION_FEATURE].int64_list.value.append(version)
    feature[log_spec.REQUEST_ID_FEATURE].bytes_list.value.append(f'r{i}'.encode())
    feature[log_spec.TIMESTAMP_FEATURE].int64_list.value.append(1_700_000_000 + i)
    if predictions is not None:
      feature[log_spec.PREDICTION_FEATURE].float_list.value.append(float(predictions[i]))
    if labels and row.get('big_tipper', '') != '':
      feature['big_tipper'].int64_list.value.append(int(row['big_tipper']))
    result.append(example.SerializeToString())
  return result


def detect(setup, rows, **kwargs):
  return detector.detect_drift(rows, setup['schema'], setup['baseline'],
                               monitor=setup['monitor'], **kwargs)


def test_clean_held_out_rows_are_no_drift_and_tfdv_runs_beside(setup):
  rows = window_examples(setup['held_out'], setup['types'])
  baseline_stats = detector.window_statistics(setup['baseline_rows'],
                                              detector.serving_schema(setup['schema']))
  outcome = detect(setup, rows, baseline_statistics=baseline_stats)
  assert outcome.verdict in (policy_lib.NO_DRIFT, policy_lib.WARNING), outcome.summary['reason']
  assert not outcome.summary['schema_break']
  assert outcome.summary['window']['labeled'] == len(rows)
  by_name = {m['name']: m for m in outcome.summary['measures']}
  assert by_name['big_tipper']['status'] != policy_lib.INSUFFICIENT_DATA    # label drift measured
  assert by_name['fare']['tfdv']['threshold'] == pytest.approx(0.1)          # TFDV beside ours
  # Every measurement is in the anomalies proto, whether it drifted or not.
  assert {tuple(i.path.step) for i in outcome.anomalies.drift_skew_info} == {
      (m,) for m in by_name}


def test_an_empty_window_is_insufficient_data_not_a_crash(setup):
  outcome = detect(setup, [])
  assert outcome.verdict == policy_lib.INSUFFICIENT_DATA
  assert outcome.summary['window']['rows'] == 0 and not outcome.summary['schema_break']
  assert not outcome.anomalies.anomaly_info
  assert 'insufficient_data' in outcome.html


def test_a_schema_break_window_is_critical_with_named_anomalies(setup):
  scenario = scenarios.get('schema_break')
  types = scenario.example_types(setup['types'])
  rows = window_examples(scenario.apply(setup['held_out'][:800]), types)
  outcome = detect(setup, rows)
  assert outcome.verdict == policy_lib.CRITICAL and outcome.summary['schema_break']
  anomaly_types = {(a['feature'], a['anomaly_type']) for a in outcome.summary['schema_anomalies']
                   if a['severity'] == 'blocking'}
  assert ('trip_seconds', 'UNEXPECTED_DATA_TYPE') in anomaly_types
  assert ('taxi_company', 'SCHEMA_NEW_COLUMN') in anomaly_types
  assert ('dropoff_latitude', 'SCHEMA_MISSING_COLUMN') in anomaly_types
  assert set(scenario.affected_features) <= set(outcome.summary['critical'])
  assert {m['name']: m['invalid'] for m in outcome.summary['measures']}['trip_seconds'] == 800
  # One plot per drifted measure, with its value against its thresholds.
  assert len(re.findall('<svg', outcome.html)) == len(outcome.summary['drifted'])
  assert 'trip_seconds: jensen_shannon' in outcome.html
  # The anomalies carry our drift findings next to TFDV's own.
  info = outcome.anomalies.anomaly_info['company']
  assert any(r.type == anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH for r in info.reason)


def test_a_tiny_window_with_a_schema_break_is_still_critical(setup):
  types = scenarios.get('number_as_text').example_types(setup['types'])
  outcome = detect(setup, window_examples(setup['held_out'][:10], types))
  assert outcome.assessment.verdict == policy_lib.INSUFFICIENT_DATA
  assert outcome.verdict == policy_lib.CRITICAL and outcome.summary['schema_break']


def test_each_version_is_compared_with_its_own_baseline(setup):
  held_out = setup['held_out'][:1200]
  stable = window_examples(held_out[:600], setup['types'], version=1)
  canary = window_examples(scenarios.apply('fare_inflation', held_out[600:]), setup['types'],
                           version=2)
  mixed = stable + canary
  for_stable = detect(setup, mixed, model_version=1)
  assert for_stable.verdict in (policy_lib.NO_DRIFT, policy_lib.WARNING)
  assert 'fare' not in for_stable.summary['drifted']
  assert for_stable.summary['window'] == {
      'rows': 1200, 'rows_assessed': 600, 'labeled': 600, 'model_versions': {'1': 600, '2': 600},
      'model_version_assessed': 1, 'rows_other_versions': 600}
  for_canary = detect(setup, mixed, model_version=2)
  assert for_canary.verdict == policy_lib.CRITICAL and 'fare' in for_canary.summary['critical']


def test_prediction_and_label_drift(setup):
  rng = np.random.default_rng(0)
  baseline = detector.build_baseline(setup['baseline_rows'], setup['schema'], setup['policy'],
                                     baseline_predictions=rng.beta(2, 6, 3000))
  held_out = setup['held_out'][:1000]
  same = window_examples(held_out, setup['types'], predictions=rng.beta(2, 6, 1000))
  outcome = detector.detect_drift(same, setup['schema'], baseline)
  assert 'prediction' not in outcome.summary['drifted']
  shifted_rows = [dict(row, big_tipper='1') if i % 2 else row for i, row in enumerate(held_out)]
  shifted = window_examples(shifted_rows, setup['types'], predictions=rng.beta(4, 4, 1000))
  outcome = detector.detect_drift(shifted, setup['schema'], baseline)
  assert {'prediction', 'big_tipper'} <= set(outcome.summary['critical'])
  assert outcome.summary['drifted_features'] == []      # no input feature moved


def _artifact(cls, uri, splits=None):
  artifact = cls()
  artifact.uri = uri
  if splits:
    artifact.split_names = artifact_utils.encode_split_names(splits)
  return artifact


def _write_split(uri, split, records):
  os.makedirs(os.path.join(uri, f'Split-{split}'), exist_ok=True)
  with tf.io.TFRecordWriter(os.path.join(uri, f'Split-{split}', 'data.gz'), 'GZIP') as writer:
    for record in records:
      writer.write(record)


def test_executor_writes_anomalies_report_and_verdict_properties(setup, tmp_path):
  baseline_uri, window_uri = str(tmp_path / 'baseline'), str(tmp_path / 'window')
  _write_split(baseline_uri, 'train', setup['baseline_rows'])
  _write_split(baseline_uri, 'eval', setup['baseline_rows'][:100])
  rows = window_examples(scenarios.apply('payment_mix', setup['held_out'][:1500]),
                         setup['types'])
  _write_split(window_uri, 'serving', rows)
  schema_uri = str(tmp_path / 'schema')
  os.makedirs(schema_uri)
  with open(SCHEMA_PATH) as src, open(os.path.join(schema_uri, 'schema.pbtxt'), 'w') as dst:
    dst.write(src.read())
  pushed = _artifact(standard_artifacts.PushedModel, str(tmp_path / 'pushed'))
  pushed.set_string_custom_property('pushed_version', '1')
  anomalies = _artifact(standard_artifacts.ExampleAnomalies, str(tmp_path / 'anomalies'))
  report = _artifact(spec.DriftReport, str(tmp_path / 'report'))
  os.makedirs(report.uri)
  detector.Executor().Do(
      {spec.EXAMPLES_KEY: [_artifact(standard_artifacts.Examples, window_uri, ['serving'])],
       spec.BASELINE_EXAMPLES_KEY: [_artifact(standard_artifacts.Examples, baseline_uri,
                                              ['train', 'eval'])],
       spec.SCHEMA_KEY: [_artifact(standard_artifacts.Schema, schema_uri)],
       spec.PUSHED_MODEL_KEY: [pushed]},
      {spec.ANOMALIES_KEY: [anomalies], spec.REPORT_KEY: [report]},
      {spec.DRIFT_POLICY_KEY: policy_lib.DriftPolicy().to_json()})
  for artifact in (anomalies, report):
    assert artifact.get_string_custom_property('verdict') == 'critical'
    assert artifact.get_string_custom_property('drifted_features') == 'payment_type'
    assert artifact.get_string_custom_property('critical_features') == 'payment_type'
    assert artifact.get_int_custom_property('schema_break') == 0
    assert artifact.get_int_custom_property('num_rows') == 1500
    assert artifact.get_int_custom_property('model_version') == 1
  # A standard ExampleAnomalies artifact: what ExampleValidator writes, readable by the data gate.
  loaded = gate_executor.load_anomalies(anomalies)['serving']
  assert 'payment_type' in loaded.anomaly_info
  summary = json.load(open(os.path.join(report.uri, spec.REPORT_JSON)))
  assert summary['verdict'] == 'critical' and summary['window']['model_version_assessed'] == 1
  html = open(os.path.join(report.uri, spec.REPORT_HTML)).read()
  assert html.count('<svg') == 1 and 'payment_type' in html


def test_rows_and_examples_of_the_same_data_give_the_same_columns(setup):
  from components.drift_detector import columns as columns_lib
  rows = setup['held_out'][:500]
  specs = columns_lib.feature_specs(setup['schema'], None)
  from_rows = columns_lib.columns_from_rows(rows, specs)
  from_examples = columns_lib.columns_from_examples(
      examples_lib.rows_to_serialized_examples(rows, setup['types']), specs)
  for feature in specs:
    left, right = from_rows.values[feature.name], from_examples.values[feature.name]
    if feature.kind == columns_lib.NUMERIC:
      np.testing.assert_array_equal(left, right)     # float32 values on both sides, NaN = NaN
    else:
      assert list(left) == list(right)


def test_drift_policy_is_configuration():
  policy = policy_lib.DriftPolicy(warning=policy_lib.Tier(0.02),
                                  critical=policy_lib.Tier(0.002, min_l_infinity=0.1),
                                  exclude_features=('company',))
  assert policy_lib.DriftPolicy.from_json(policy.to_json()) == policy
  with pytest.raises(policy_lib.DriftPolicyError, match='must not exceed'):
    policy_lib.DriftPolicy(warning=policy_lib.Tier(0.001), critical=policy_lib.Tier(0.01))
  with pytest.raises(policy_lib.DriftPolicyError, match='unknown drift policy key'):
    policy_lib.DriftPolicy.from_json('{"warnings": {}}')
  assert policy.numeric_bins(100) == 10 and policy.numeric_bins(100_000) == 50
