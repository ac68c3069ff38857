"""The whole loop end to end on a small sample: train -> serve -> clean traffic (no alarm) ->
drifted traffic (critical alarm naming fare) -> the labelled window becomes a span -> retrain ->
the new version is served as canary, and its traffic is monitored like the rest: stable and
canary each scored on their own labelled requests. Asserted through ML Metadata and the server's
status. The loop runs once per session (`loop_results` in tests/conftest.py)."""
import os
import re

import pytest

from core import spans as spans_lib
from metadata import connection as metadata_connection
from metadata import queries as mq
from pipeline import loop
from traffic import runs as traffic_runs

pytestmark = pytest.mark.timeout(1500)


def test_clean_traffic_raises_no_alarm(loop_results):
  _, results, _ = loop_results
  clean = results['clean']
  assert not clean['retrain']
  assert all(v['verdict'] != 'critical' for v in clean['versions'].values())
  assert clean['num_labeled'] == clean['num_examples'] > 0


def test_drifted_traffic_raises_a_critical_alarm_naming_fare(loop_results):
  # (The future spans also really drift: payment mix, trip lengths; the quality of naming only
  # the shifted features is measured on same-distribution windows in test_drift_quality.py.)
  _, results, _ = loop_results
  (info,) = results['drifted']['versions'].values()
  assert info['verdict'] == 'critical' and not info['schema_break']
  assert 'fare' in info['critical_features'].split(',')
  assert os.path.exists(info['report_html'])


def test_the_labelled_window_became_a_span_and_the_retrained_model_is_canary(loop_results):
  config, results, _ = loop_results
  home_spans = os.path.join(config.home, 'spans')
  assert results['new_span'] == 3 and spans_lib.list_spans(home_spans) == {1: 1, 2: 1, 3: 1}
  store = metadata_connection.open_pipeline_store(config)
  latest = mq.latest_run(store, config.pipeline_name)
  records = {r.node_id: r for r in mq.execution_records(store, latest)}
  examples = records['SpanRangeCsvExampleGen'].outputs['examples'][0]
  assert mq.custom_property(examples, 'span_range') == '1-3'
  assert (mq.custom_property(records['AtomicPusher'].outputs['pushed_model'][0],
                             'pushed_version') == results['canary_version'])
  status = {v['version']: v['state'] for v in results['server_status']['model_version_status']}
  assert status[str(results['first_version'])] == 'AVAILABLE'
  assert status[str(results['canary_version'])] == 'AVAILABLE'
  answered = results['canary_replay']['versions']
  assert set(answered) == {str(results['first_version']), str(results['canary_version'])}


def test_the_new_span_passes_the_gate_its_drift_a_warning_on_the_console_and_the_report(
    loop_results):
  """The labelled serving window (fares inflated) drifts from the spans before it: the retrain's
  gate warns, naming fare and span 3, and lets it train. Its structure, types and presence (data
  written by the loop) raise nothing."""
  _, results, _ = loop_results
  [retrain] = [stage for stage in results['stages'] if stage.name == '5. retrain']
  assert re.search(r'data gate: +warnings: \d+ warning\(s\), 0 blocking', retrain.text)
  findings = [line.strip() for line in retrain.text.splitlines() if line.startswith('      - ')]
  assert any(line.startswith('- fare: span 3 against spans 1-2: ') and line.endswith(
      '[COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH, span 3 (version 1)]') for line in findings)
  assert all(re.search(r'\[COMPARATOR_\w+, span 3 \(version 1\)\]$', line) for line in findings
             if 'span 3 (version 1)' in line), findings
  with open(results['report']) as f:
    assert 'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH, span 3 (version 1)]' in f.read()


def test_the_report_links_every_stage(loop_results):
  _, results, messages = loop_results
  with open(results['report']) as f:
    page = f.read()
  for stage in ('1. train', '2. serve', '3. clean traffic', '4. drifted traffic',
                '5. retrain', '6. canary'):
    assert stage in page
  assert 'drift.html' in page
  assert any('== 4.' in m for m in messages)
  assert any('== 6.' in m for m in messages)



def test_stable_and_canary_are_each_scored_on_their_own_labelled_traffic(loop_results):
  config, results, _ = loop_results
  first, canary = str(results['first_version']), str(results['canary_version'])
  assert results['canary_labels'] == {'stable': int(first), 'canary': int(canary)}
  monitored = results['canary']
  # A new monitoring run, not one of the earlier windows.
  assert len({results['clean']['run_id'], results['drifted']['run_id'],
              monitored['run_id']}) == 3
  store = metadata_connection.open_pipeline_store(config)
  assert mq.latest_run(store, config.monitoring_pipeline_name).name == monitored['run_id']
  assert set(monitored['versions']) == {first, canary}
  answered = results['canary_replay']['versions']
  logged = dict(item.split(':') for item in monitored['model_versions'].split(','))
  for version in (first, canary):
    info = monitored['versions'][version]
    assert info['verdict'] in ('no_drift', 'warning', 'critical', 'insufficient_data')
    assert os.path.exists(info['report_html'])
    realized = info['realized']
    # Every answered request was logged and got its ground truth, and each version is scored
    # on exactly its own requests (not the window's total).
    assert int(logged[version]) == answered[version] > 0
    assert realized['example_count'] == answered[version]
    assert 0.0 <= realized['auc'] <= 1.0
  assert monitored['num_labeled'] == monitored['num_examples'] == sum(answered.values())
  # 80/20 routing: stable answers most of the traffic.
  assert answered[first] > answered[canary]
  # The canary traffic is span 6, which neither model trained on (not a replay of stage 4).
  assert results['canary_replay']['sent'] == len(traffic_runs.load_rows(config.data_root, 6, 6))
  assert results['canary_replay']['scenario'] == loop.DRIFT_SCENARIO


def test_the_canary_stage_shows_canary_and_stable_side_by_side(loop_results):
  _, results, _ = loop_results
  (stage,) = [s for s in results['stages'] if s.name == '6. canary']
  rows = {row['label']: row for row in results['canary_comparison']}
  assert [row['label'] for row in results['canary_comparison']] == ['stable', 'canary']
  for label, version in (('stable', results['first_version']),
                         ('canary', results['canary_version'])):
    info = results['canary']['versions'][str(version)]
    auc, count = info['realized']['auc'], int(info['realized']['example_count'])
    assert rows[label]['auc'] == auc and rows[label]['labelled'] == count
    (line,) = [l for l in stage.text.splitlines() if l.split()[:2] == [label, str(version)]]
    assert f' {auc:.3f} ' in line and f' {count} ' in line, line
  difference = rows['canary']['auc'] - rows['stable']['auc']
  assert f'canary - stable realized AUC: {difference:+.3f}' in stage.text
  assert stage.text.index('canary vs stable') < stage.text.index('Monitoring run ')
  assert len([k for k in stage.links if k.startswith('drift report, version')]) == 2


def _served_window(examples_uri: str):
  """{version: (serialized requests, served probabilities, labels)} of a monitoring window's
  labelled split: what the server answered, as logged, and the ground truth."""
  import glob
  import tensorflow as tf
  from components.serving_log_gen import spec as log_gen_spec
  from models import features
  by_version = {}
  for path in sorted(glob.glob(os.path.join(examples_uri, f'Split-{log_gen_spec.LABELED_SPLIT}',
                                            '*'))):
    for record in tf.data.TFRecordDataset(path, compression_type='GZIP'):
      example = tf.train.Example.FromString(record.numpy())
      feature = example.features.feature
      version = str(feature[log_gen_spec.MODEL_VERSION_FEATURE].int64_list.value[0])
      entry = by_version.setdefault(version, ([], [], []))
      entry[0].append(record.numpy())
      entry[1].append(feature[log_gen_spec.PREDICTION_FEATURE].float_list.value[0])
      entry[2].append(feature[features.LABEL_KEY].int64_list.value[0])
  return by_version


def test_the_server_answers_calibrated_probabilities_and_ece_is_realized_per_version(
    loop_results):
  """What the real server answered (its request log) is the exported calibrator applied to the
  raw logit of the same request; RealizedMetrics' ECE per version is that of its own rows."""
  import numpy as np
  import tensorflow as tf
  from models import calibration
  from models import features
  config, results, _ = loop_results
  monitored = results['canary']
  window = _served_window(monitored['examples_uri'])
  assert set(window) == {str(results['first_version']), str(results['canary_version'])}
  for version, (requests, served, labels) in window.items():
    model_dir = os.path.join(config.serving_model_dir, version)
    raw = tf.saved_model.load(model_dir).signatures[features.RAW_LOGIT_SIGNATURE](
        **{features.SERVING_INPUT_KEY: tf.constant(requests)})[features.RAW_LOGIT_KEY].numpy()
    calibrator = calibration.read_exported(model_dir)
    np.testing.assert_allclose(served, calibrator.apply(raw).reshape(-1), atol=1e-5)
    assert np.abs(np.array(served) - calibration.sigmoid(raw).reshape(-1)).max() > 1e-3
    realized = monitored['versions'][version]['realized']
    assert realized['expected_calibration_error'] == pytest.approx(
        calibration.expected_calibration_error(labels, served), abs=1e-6)
