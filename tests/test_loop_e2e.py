"""The whole loop end to end on a small sample: train -> serve -> clean traffic (no alarm) ->
drifted traffic (critical alarm naming fare) -> the labelled window becomes a span -> retrain ->
the new version is served as canary. Asserted through ML Metadata and the server's status."""
import dataclasses
import os

import pytest

from loopline import spans as spans_lib
from pipeline import loop
from pipeline import metadata_queries as mq
from pipeline.config import PipelineConfig
from tests.conftest import read_span, write_span

pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope='module')
def loop_results(tmp_path_factory):
  base = tmp_path_factory.mktemp('loop')
  data_root = str(base / 'spans')
  for span, every in ((1, 4), (2, 4), (6, 4), (7, 1), (8, 1)):
    header, rows = read_span(span)
    write_span(data_root, span, header, rows[::every])
  config = PipelineConfig.quick(str(base / 'home'), data_root=data_root, first_span=1,
                                last_span=2, min_auc=0.7)
  messages = []
  results = loop.run_loop(config, say=messages.append)
  return config, results, messages


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
  store = mq.open_pipeline_store(config)
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


def test_the_report_links_every_stage(loop_results):
  _, results, messages = loop_results
  with open(results['report']) as f:
    page = f.read()
  for stage in ('1. train', '2. serve', '3. clean traffic', '4. drifted traffic',
                '5. retrain', '6. canary'):
    assert stage in page
  assert 'drift.html' in page
  assert any('== 4.' in m for m in messages)
