"""The training pipeline end to end on LocalDagRunner, checked through ML Metadata.

A small sample (two spans, a quarter of their rows) and few steps: every component runs once and
the model is blessed and pushed; a rerun with nothing changed comes from the cache and pushes
nothing new; with tuning off the Trainer reuses the tuned hyperparameters found in MLMD; a span
with broken data stops at the data gate, naming the features, and nothing new is pushed.
"""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma

from components.data_gate.executor import DataGateError
from core import examples as examples_lib
from metadata import connection as metadata_connection
from metadata import queries as mq
from models import calibration
from models import features
from pipeline import training_run
from pipeline.config import DEFAULT_BEAM_ARGS, PipelineConfig
from tests.conftest import SAMPLE_THRESHOLDS, read_span, sample_spans, write_span

pytestmark = pytest.mark.timeout(900)

BEFORE_EVALUATOR = ('SpanRangeCsvExampleGen', 'ImportSchemaGen', 'StatisticsGen',
                    'SpanValidator', 'ExampleValidator', 'DataGate', 'Transform', 'Tuner',
                    'Trainer')


def _config(home, data_root, **overrides):
  # Beam as `loopline train` runs it (worker processes), unlike the other quick runs of the suite.
  settings = dict(data_root=data_root, first_span=1, last_span=2,
                  beam_pipeline_args=DEFAULT_BEAM_ARGS, **SAMPLE_THRESHOLDS)
  settings.update(overrides)
  return PipelineConfig.quick(home, **settings)


def _records(config, run_index=-1):
  store = metadata_connection.open_pipeline_store(config)
  run = mq.run_contexts(store, config.pipeline_name)[run_index]
  return {r.node_id: r for r in mq.execution_records(store, run)}


def _versions(config):
  return sorted(os.listdir(config.serving_model_dir))


@pytest.fixture(scope='module')
def first_run(tmp_path_factory):
  base = tmp_path_factory.mktemp('e2e')
  config = _config(str(base / 'home'), sample_spans(str(base / 'spans')))
  summary = training_run.train(config)
  return config, summary


def test_every_component_runs_once_and_the_model_is_pushed(first_run):
  config, summary = first_run
  records = _records(config)
  assert set(records) == set(BEFORE_EVALUATOR) | {
      'latest_blessed_model_resolver', 'Evaluator', 'AtomicPusher'}
  assert {r.state for n, r in records.items() if not n.endswith('resolver')} == {'COMPLETE'}
  assert summary['blessed'] is True
  assert summary['overall']['auc'] > 0.7
  assert _versions(config) == [summary['pushed_version']]


def test_first_blessed_push_becomes_the_stable_production_model(first_run):
  from core import home as home_lib
  from serving.config import parse_model_config_text
  config, summary = first_run
  training_run.stage_in_registry(config, summary)      # what `loopline train` does after a push
  assert summary['registry'] == (f'bootstrap: version {summary["pushed_version"]} -> '
                                 'production')
  with open(home_lib.serving_config_path(config.home)) as f:
    (model,) = parse_model_config_text(f.read()).model_config_list.config
  assert model.name == config.model_name
  assert dict(model.version_labels) == {'stable': int(summary['pushed_version'])}


def test_mlmd_records_the_spans_the_run_used(first_run):
  config, _ = first_run
  examples = _records(config)['SpanRangeCsvExampleGen'].outputs['examples'][0]
  assert mq.custom_property(examples, 'span_range') == '1-2'
  assert mq.custom_property(examples, 'span_versions') == '1:1,2:1'
  assert mq.custom_property(examples, 'span') == 2
  trainer_examples = _records(config)['Trainer'].inputs['examples'][0]
  transform_inputs = _records(config)['Transform'].inputs['examples'][0]
  assert transform_inputs.id == examples.id and trainer_examples.id != examples.id


def test_pushed_model_answers_serialized_examples(first_run):
  config, summary = first_run
  model = tf.saved_model.load(summary['pushed_path'])
  serve = model.signatures[features.SERVING_SIGNATURE]
  _, rows = read_span(3)
  types = examples_lib.feature_types(
      __import__('tensorflow_data_validation').load_schema_text(config.schema_path))
  types.pop(features.LABEL_KEY)
  batch = examples_lib.rows_to_serialized_examples(rows[:16], types)
  probabilities = serve(**{features.SERVING_INPUT_KEY: tf.constant(batch)})[
      features.PREDICTION_KEY].numpy()
  assert probabilities.shape == (16, 1)
  assert ((probabilities > 0) & (probabilities < 1)).all()
  assert len(set(probabilities.reshape(-1).round(4))) > 1
  transform = model.signatures[features.TRANSFORM_SIGNATURE]
  assert 'fare_log_z_score_xf' in transform(**{features.SERVING_INPUT_KEY: tf.constant(batch)})


def test_served_probabilities_are_the_calibrated_raw_logits(first_run):
  config, summary = first_run
  model = tf.saved_model.load(summary['pushed_path'])
  calibrator = calibration.read_exported(summary['pushed_path'])
  _, rows = read_span(3)
  types = examples_lib.feature_types(
      __import__('tensorflow_data_validation').load_schema_text(config.schema_path))
  types.pop(features.LABEL_KEY)
  batch = tf.constant(examples_lib.rows_to_serialized_examples(rows[:64], types))
  served = model.signatures[features.SERVING_SIGNATURE](
      **{features.SERVING_INPUT_KEY: batch})[features.PREDICTION_KEY].numpy()
  raw = model.signatures[features.RAW_LOGIT_SIGNATURE](
      **{features.SERVING_INPUT_KEY: batch})[features.RAW_LOGIT_KEY].numpy()
  assert served.shape == raw.shape == (64, 1) and served.dtype == np.float32
  np.testing.assert_allclose(served, calibrator.apply(raw), atol=1e-5)
  assert np.abs(served - calibration.sigmoid(raw)).max() > 1e-3      # calibration changed them
  assert calibrator.rows > 0 and summary['calibration']['method'] == calibrator.method


def test_a_model_above_the_calibration_error_threshold_is_not_blessed(first_run):
  config, _ = first_run
  strict = _config(config.home, config.data_root, max_ece=1e-4)
  versions_before = _versions(config)
  summary = training_run.train(strict)
  assert summary['overall']['expected_calibration_error'] > 1e-4
  assert summary['blessed'] is False and not summary.get('pushed_version')
  assert _versions(config) == versions_before
  records = _records(strict)
  assert records['Trainer'].state == 'CACHED'      # only the Evaluator judged anew
  validation = tfma.load_validation_result(records['Evaluator'].outputs['evaluation'][0].uri)
  failed = {f.metric_key.name for v in validation.metric_validations_per_slice for f in v.failures}
  assert failed == {'expected_calibration_error'}


def test_pushed_version_carries_warmup_requests_that_the_server_replays(first_run):
  """TF Serving's warm-up file, written by the pusher from ExampleGen's eval split, replayed by
  Loopline's server when it loads the version (before AVAILABLE)."""
  from serving import warmup
  from serving.servable import Servable
  config, summary = first_run
  logs = warmup.read_warmup_file(warmup.warmup_file(summary['pushed_path']))
  assert len(logs) == 200
  requests = [entry.predict_log.request for entry in logs]
  assert {(r.model_spec.name, r.model_spec.signature_name, tuple(r.inputs)) for r in requests} == {
      (config.model_name, features.SERVING_SIGNATURE, (features.SERVING_INPUT_KEY,))}
  eval_split = _records(config)['SpanRangeCsvExampleGen'].outputs['examples'][0].uri
  files = tf.io.gfile.glob(os.path.join(eval_split, 'Split-eval', '*'))
  eval_examples = {r.numpy() for r in tf.data.TFRecordDataset(files, compression_type='GZIP')}
  sent = [tf.make_ndarray(r.inputs[features.SERVING_INPUT_KEY]).tolist() for r in requests]
  assert all(len(e) == 1 and e[0] in eval_examples for e in sent)
  servable = Servable(config.model_name, int(summary['pushed_version']), summary['pushed_path'])
  assert servable.warmup_requests == 200
  assert servable.signatures[features.SERVING_SIGNATURE].timer.calls == 200


def test_rerun_with_nothing_changed_comes_from_cache(first_run):
  config, first_summary = first_run
  versions_before = _versions(config)
  summary = training_run.train(config)
  records = _records(config)
  assert {n: records[n].state for n in BEFORE_EVALUATOR} == {
      n: 'CACHED' for n in BEFORE_EVALUATOR}
  assert summary['pushed_version'] == first_summary['pushed_version']
  assert _versions(config) == versions_before
  training_run.stage_in_registry(config, summary)
  assert 'already registered' in summary['registry']


def test_tuning_off_reuses_the_last_tuned_hyperparameters(first_run):
  config, _ = first_run
  tuned = _records(config, 0)['Tuner'].outputs['best_hyperparameters'][0]
  no_tuning = _config(config.home, config.data_root, enable_tuning=False)
  summary = training_run.train(no_tuning)
  records = _records(no_tuning)
  assert 'Tuner' not in records
  assert records['Trainer'].inputs['hyperparameters'][0].id == tuned.id
  assert records['Trainer'].state == 'CACHED'            # same data, same hyperparameters
  assert summary['hyperparameters_source'] == 'last tuned (MLMD)'


def test_broken_span_stops_at_the_gate_and_pushes_nothing(first_run, tmp_path):
  config, _ = first_run
  data_root = str(tmp_path / 'spans')
  shutil.copytree(config.data_root, data_root)
  header, rows = read_span(3)
  rows = rows[::4]
  for i, row in enumerate(rows):
    if i % 10 == 0:
      row['payment_type'] = 'Bitcoin'            # unseen value of a closed domain
    if i % 7 == 0:
      row['trip_miles'] = 'n/a'                  # a number turned into text
  write_span(data_root, 3, [c for c in header if c != 'fare'], rows)    # a column dropped
  versions_before = _versions(config)
  broken = _config(config.home, data_root, last_span=3)
  with pytest.raises(DataGateError) as error:
    training_run.train(broken)
  message = str(error.value)
  for feature in ('payment_type', 'trip_miles', 'fare'):
    assert f'  - {feature}: ' in message, message
  records = _records(broken)
  assert 'Transform' not in records and 'AtomicPusher' not in records
  assert _versions(config) == versions_before


# --- the data gate per span (issue 22): each break on a sample, named with its span -----------

IN_PROCESS_BEAM = '--beam-arg=--direct_running_mode=in_memory'


def _with_span_3(tmp_path, source_root, change_rows, drop=(), add=()):
  """The sample's spans 1-2 and a sample of bundled span 3, changed by `change_rows(rows)`,
  without the columns `drop` and with the columns `add` (filled by change_rows)."""
  data_root = str(tmp_path / 'spans')
  shutil.copytree(source_root, data_root)
  header, rows = read_span(3)
  rows = rows[::4]
  change_rows(rows)
  write_span(data_root, 3, [c for c in header if c not in drop] + list(add), rows)
  return data_root


def test_a_column_dropped_from_a_whole_span_stops_the_run_naming_span_file_and_column(
    first_run, tmp_path, capsys):
  from loopline import cli
  config, _ = first_run
  data_root = _with_span_3(tmp_path, config.data_root, lambda rows: None,
                           drop=('trip_seconds',))
  versions_before = _versions(config)
  code = cli.main(['--home', config.home, 'train', '--quick', '--spans', '1-3', '--min-auc',
                   '0.7', '--data-root', data_root, IN_PROCESS_BEAM])
  out, err = capsys.readouterr()
  assert code == cli.EXIT_DATA_GATE
  assert 'Note: no time-ordered holdout: span(s) [6, 7, 8] not found' in out
  assert ("    - trip_seconds: column 'trip_seconds' missing from the header of "
          "span-3/version-1/data.csv (span 3, version 1) [SCHEMA_MISSING_COLUMN, span 3 "
          "(version 1)]") in err.split('  warnings')[0]
  assert 'Nothing was trained or pushed' in err
  records = _records(config)
  assert records['DataGate'].state == 'FAILED'
  assert 'Transform' not in records and 'AtomicPusher' not in records
  assert _versions(config) == versions_before


def test_a_feature_emptied_on_a_fifth_of_a_span_stops_the_run(first_run, tmp_path):
  config, _ = first_run

  def empty_company(rows):
    with_company = [row for row in rows if row['company']]
    for row in with_company[:len(rows) // 5]:
      row['company'] = ''
  data_root = _with_span_3(tmp_path, config.data_root, empty_company)
  versions_before = _versions(config)
  emptied = _config(config.home, data_root, last_span=3,
                    beam_pipeline_args=('--direct_running_mode=in_memory',))
  with pytest.raises(DataGateError) as error:
    training_run.train(emptied)
  blocking = str(error.value).split('  warnings')[0]
  assert '    - company: present in ' in blocking
  assert 'of the rows of span 3, ' in blocking and 'of spans 1-2' in blocking
  assert '[FEATURE_TYPE_LOW_FRACTION_PRESENT, span 3 (version 1)]' in blocking
  records = _records(emptied)
  assert 'Transform' not in records and 'AtomicPusher' not in records
  assert _versions(config) == versions_before


def test_a_new_column_and_a_new_category_mix_are_warnings_on_the_console(tmp_path, capsys):
  from loopline import cli

  def change(rows):
    cash = [row for row in rows if row['payment_type'] == 'Cash']
    for row in cash[::2]:
      row['payment_type'] = 'Credit Card'     # card readers in every cab
    for row in rows:
      row['tip_share'] = '0.1'                # a column upstream added
  data_root = _with_span_3(tmp_path, sample_spans(str(tmp_path / 'sample')), change,
                           add=('tip_share',))
  code = cli.main(['--home', str(tmp_path / 'home'), 'validate', '--quick', '--spans', '1-3',
                   '--data-root', data_root])
  out = capsys.readouterr().out
  assert code == 0
  assert 'data gate:       warnings: ' in out and ' 0 blocking' in out
  warnings = out.split('    warnings (')[1]
  assert ("- tip_share: column 'tip_share' not in the schema, found in the header of "
          "span-3/version-1/data.csv (span 3, version 1) [SCHEMA_NEW_COLUMN, span 3 "
          "(version 1)]") in warnings
  assert '- payment_type: span 3 against spans 1-2: The Linfty distance between current and ' \
         'previous is ' in warnings
  assert '[COMPARATOR_L_INFTY_HIGH, span 3 (version 1)]' in warnings
