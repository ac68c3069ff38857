"""The training baseline of a served version, resolved through a real MLMD store (trained_home)."""
import pytest

from metadata import lineage
from metadata import connection as metadata_connection
from metadata import queries as mq


@pytest.fixture(scope='module')
def trained(trained_home):
  config, summary = trained_home
  assert summary.get('pushed_version'), 'the quick training run must push a model'
  store = metadata_connection.open_pipeline_store(config)
  run = mq.latest_run(store, config.pipeline_name)
  records = {r.node_id: r for r in mq.execution_records(store, run)}
  return config, summary, store, records


def test_resolves_pushed_model_model_raw_examples_and_their_statistics(trained):
  _, summary, store, records = trained
  baseline = lineage.resolve_training_baseline(store, summary['pushed_version'])
  assert baseline.pushed_version == str(summary['pushed_version'])
  assert baseline.pushed_model.id == records['AtomicPusher'].outputs['pushed_model'][0].id
  assert baseline.model.id == records['Trainer'].outputs['model'][0].id
  # The Trainer read Transform's output; the walk goes through Transform to the raw Examples...
  assert baseline.trained_on.id == records['Transform'].outputs['transformed_examples'][0].id
  assert baseline.examples.id == records['SpanRangeCsvExampleGen'].outputs['examples'][0].id
  assert mq.custom_property(baseline.examples, 'span_range') == '1-2'
  # ...and to the StatisticsGen output over them (not Transform's pre_transform_stats).
  assert baseline.statistics.id == records['StatisticsGen'].outputs['statistics'][0].id
  assert 'version' in baseline.describe()


def test_version_as_int_latest_and_model_name(trained):
  _, summary, store, _ = trained
  version = summary['pushed_version']
  assert lineage.resolve_training_baseline(store, int(version)).pushed_version == str(version)
  assert lineage.resolve_training_baseline(store).pushed_version == str(version)
  assert lineage.resolve_training_baseline(
      store, version, model_name='big_tipper').pushed_version == str(version)
  assert lineage.served_versions(store) == [str(version)]


def test_unknown_version_is_a_clear_error(trained):
  _, summary, store, _ = trained
  with pytest.raises(lineage.BaselineNotFoundError,
                     match=f"version '12345'.*pushed versions: {summary['pushed_version']}"):
    lineage.resolve_training_baseline(store, 12345)
  with pytest.raises(lineage.BaselineNotFoundError, match="for model 'other'"):
    lineage.resolve_training_baseline(store, summary['pushed_version'], model_name='other')
