"""End to end on LocalDagRunner: request logs -> ServingLogExampleGen -> StatisticsGen ->
DriftDetector, with the baseline of the served version resolved through MLMD and imported
(re-used, not copied) into the monitoring pipeline. Uses the shared quick training run."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from tfx import v1 as tfx
from tfx.orchestration import metadata

from components.drift_detector import executor as detector
from components.drift_detector.component import DriftDetector
from components.serving_log_gen import feedback as feedback_lib
from components.serving_log_gen.component import ServingLogExampleGen
from core import examples as examples_lib
from core import home as home_lib
from core.statistics import STATS_OPTIONS
from metadata import connection as metadata_connection
from metadata import lineage
from metadata import queries as mq
from serving import log_files
from tests.conftest import read_span
from tests.test_serving_log_gen import prediction_log
from traffic import scenarios

PIPELINE = 'loopline-monitoring-test'


def _write_logs(log_dir, rows, types, model_dir, version, start, prefix):
  serialized = [examples_lib.row_to_example(
      {k: v for k, v in row.items() if k != 'big_tipper'}, types).SerializeToString()
                for row in rows]
  predictions = detector.model_predictions(model_dir, serialized)
  logs = [prediction_log(f'{prefix}{i}', start + i, [s], [float(p)], version=version)
          for i, (s, p) in enumerate(zip(serialized, predictions))]
  os.makedirs(log_dir, exist_ok=True)
  path = os.path.join(log_dir, log_files.final_name(start, version % 1000, 'abc123'))
  with open(path, 'wb') as f:
    f.write(b''.join(log_files.frame_record(log.SerializeToString()) for log in logs))
  return [f'{prefix}{i}' for i in range(len(rows))]


@pytest.fixture(scope='module')
def monitored(trained_home, tmp_path_factory):
  config, summary = trained_home
  home = str(tmp_path_factory.mktemp('monitoring') / 'home')
  shutil.copytree(config.home, home)       # MLMD copy; artifact URIs still point at the run
  connection = metadata.sqlite_metadata_connection_config(home_lib.metadata_path(home))
  store = metadata_connection.open_store(connection)
  baseline = lineage.resolve_training_baseline(store, summary['pushed_version'])
  schema = tfdv.load_schema_text(config.schema_path)
  types = examples_lib.feature_types(schema)
  types.pop('big_tipper')
  model_dir = os.path.join(baseline.model.uri, 'Format-Serving')
  # Clean traffic for the served version (bundled rows the training sample did not take), and
  # fare-inflated traffic answered by another version (a canary) in the same window.
  rows = read_span(1)[1][1::4][:180] + read_span(2)[1][1::4][:220]
  version = int(summary['pushed_version'])
  log_dir, feedback_dir = home_lib.request_log_dir(home), home_lib.feedback_dir(home)
  ids = _write_logs(log_dir, rows, types, model_dir, version, 1_800_000_000, 'stable-')
  _write_logs(log_dir, scenarios.apply('fare_inflation', read_span(2)[1][2::4][:150]), types,
              model_dir, 1, 1_800_000_500, 'canary-')
  feedback_lib.write_feedback(os.path.join(feedback_dir, 'labels.csv'),
                              [(i, int(r['big_tipper'])) for i, r in zip(ids[::2], rows[::2])])

  importers = lineage.baseline_importers(baseline)
  example_gen = ServingLogExampleGen(log_dir=log_dir, feedback_dir=feedback_dir,
                                     window_start=1_800_000_000, window_end=1_800_001_000)
  schema_gen = tfx.components.ImportSchemaGen(schema_file=config.schema_path)
  statistics_gen = tfx.components.StatisticsGen(
      examples=example_gen.outputs['examples'], schema=schema_gen.outputs['schema'],
      stats_options=tfdv.StatsOptions(**STATS_OPTIONS))
  drift_detector = DriftDetector(
      examples=example_gen.outputs['examples'], statistics=statistics_gen.outputs['statistics'],
      baseline_examples=importers['examples'].outputs['result'],
      baseline_statistics=importers['statistics'].outputs['result'],
      schema=schema_gen.outputs['schema'], model=importers['model'].outputs['result'],
      pushed_model=importers['pushed_model'].outputs['result'])
  tfx.orchestration.LocalDagRunner().run(tfx.dsl.Pipeline(
      pipeline_name=PIPELINE, pipeline_root=os.path.join(home, 'monitoring_root'),
      components=[example_gen, schema_gen, statistics_gen, *importers.values(), drift_detector],
      metadata_connection_config=connection, enable_cache=True,
      beam_pipeline_args=['--direct_running_mode=in_memory']))
  records = {r.node_id: r for r in mq.execution_records(store, mq.latest_run(store, PIPELINE))}
  return baseline, records, home


def test_the_detector_consumes_the_resolved_baseline_artifacts_themselves(monitored):
  baseline, records, _ = monitored
  inputs = records['DriftDetector'].inputs
  assert inputs['baseline_examples'][0].id == baseline.examples.id
  assert inputs['baseline_statistics'][0].id == baseline.statistics.id
  assert inputs['model'][0].id == baseline.model.id
  assert inputs['pushed_model'][0].id == baseline.pushed_model.id
  assert all(r.state in ('COMPLETE', 'CACHED') for r in records.values())


def test_window_examples_and_verdict_are_recorded_in_mlmd(monitored):
  baseline, records, _ = monitored
  examples = records['ServingLogExampleGen'].outputs['examples'][0]
  assert mq.custom_property(examples, 'num_examples') == 550
  assert mq.custom_property(examples, 'num_labeled') == 200
  report = records['DriftDetector'].outputs['report'][0]
  anomalies = records['DriftDetector'].outputs['anomalies'][0]
  verdict = mq.custom_property(report, 'verdict')
  assert verdict == mq.custom_property(anomalies, 'verdict')
  assert mq.custom_property(report, 'model_version') == int(baseline.pushed_version)
  summary = json.load(open(os.path.join(report.uri, 'drift.json')))
  assert summary['window']['model_versions'] == {'1': 150, baseline.pushed_version: 400}
  assert summary['window']['rows_assessed'] == 400          # the canary's rows left out
  # Clean traffic of the served version: nothing critical, and the canary's fares are not ours.
  assert verdict in ('no_drift', 'warning'), summary['reason']
  assert 'fare' not in summary['drifted']
  measures = {m['name']: m for m in summary['measures']}
  assert measures['prediction']['status'] != 'insufficient_data'    # served vs baseline model
  assert measures['prediction']['n_baseline'] > 0
  assert measures['big_tipper']['n_window'] == 200                  # label drift on joined truth
  assert measures['fare']['tfdv']['threshold'] == pytest.approx(0.1)
  assert os.path.isfile(os.path.join(report.uri, 'drift.html'))
  assert np.isfinite(measures['fare']['value'])


@pytest.fixture(scope='module')
def monitored_for_cluster(monitored, trained_home):
  """The monitoring pipeline as compiled for a cluster, run locally on the same home and logs:
  the baseline is resolved at run time by TrainingBaselineResolver (no Importer). Beam in worker
  processes, as `make run` runs the monitoring pipeline (the suite's other quick runs are
  in-process)."""
  import dataclasses
  from pipeline import monitoring_pipeline
  from pipeline.config import DEFAULT_BEAM_ARGS
  config, _ = trained_home
  baseline, records, home = monitored
  cluster_config = dataclasses.replace(config, home=home, beam_pipeline_args=DEFAULT_BEAM_ARGS)
  tfx.orchestration.LocalDagRunner().run(monitoring_pipeline.create_monitoring_pipeline(
      cluster_config, for_cluster=True))
  store = metadata_connection.open_pipeline_store(cluster_config)
  run = mq.latest_run(store, cluster_config.monitoring_pipeline_name)
  return baseline, records, {r.node_id: r for r in mq.execution_records(store, run)}


def test_the_runtime_resolver_finds_the_same_baseline_and_verdict(monitored_for_cluster):
  from components.baseline_resolver import manifest as manifest_lib
  baseline, importer_records, records = monitored_for_cluster
  assert all(r.state == 'COMPLETE' for r in records.values()), {
      n: r.state for n, r in records.items()}
  assert not any(n.startswith('baseline_') for n in records)          # nothing imported
  resolved = records['TrainingBaselineResolver'].outputs['baseline'][0]
  manifest = manifest_lib.read(resolved.uri)
  assert manifest.model_version == int(baseline.pushed_version)
  assert manifest.artifact_ids == {'pushed_model': baseline.pushed_model.id,
                                   'model': baseline.model.id, 'examples': baseline.examples.id,
                                   'statistics': baseline.statistics.id}
  assert (manifest.examples_uri, manifest.statistics_uri, manifest.model_uri) == (
      baseline.examples.uri, baseline.statistics.uri, baseline.model.uri)
  assert manifest.examples_splits == ['train', 'eval']
  assert mq.custom_property(resolved, 'model_version') == int(baseline.pushed_version)
  # Same window, same baseline: the same measurements as with the Importers.
  with_importers = json.load(open(os.path.join(
      importer_records['DriftDetector'].outputs['report'][0].uri, 'drift.json')))
  at_run_time = json.load(open(os.path.join(
      records['DriftDetector'].outputs['report'][0].uri, 'drift.json')))
  assert at_run_time['verdict'] == with_importers['verdict']
  assert at_run_time['window'] == with_importers['window']
  def values(summary):
    return {m['name']: m['value'] for m in summary['measures'] if m['value'] is not None}
  assert values(at_run_time) == pytest.approx(values(with_importers))
  assert len(values(at_run_time)) >= 10
  assert at_run_time['baseline']['examples_uri'] == baseline.examples.uri
  realized = records['RealizedMetrics'].outputs['realized_metrics'][0]
  assert mq.custom_property(realized, 'model_version') == int(baseline.pushed_version)
  assert mq.custom_property(realized, 'example_count') == 200          # the labelled rows
  assert 0.5 < mq.custom_property(realized, 'auc') <= 1.0
