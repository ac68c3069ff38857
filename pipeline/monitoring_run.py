"""Running the monitoring pipeline for a window and reading its verdicts back from MLMD."""
import os
import time
from typing import Any, Dict, Optional

from components.serving_log_gen import spec as log_gen_spec
from metadata import connection as metadata_connection
from metadata import layout
from metadata import queries as mq
from pipeline import progress
from pipeline.config import PipelineConfig

DRIFT_PREFIX = 'DriftDetector_'
REALIZED_PREFIX = 'RealizedMetrics_'
REALIZED_METRICS = ('auc', 'binary_accuracy', 'expected_calibration_error', 'example_count')


def monitor(config: PipelineConfig, window_start: Optional[int] = None,
            window_end: Optional[int] = None) -> Dict[str, Any]:
  """Runs the monitoring pipeline with LocalDagRunner; returns what it found (see collect)."""
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from pipeline import monitoring_pipeline
  log_file = os.path.join(config.home, 'logs', f'monitor-{time.strftime("%Y%m%d-%H%M%S")}.log')
  with progress.show_progress(log_file):
    LocalDagRunner().run(monitoring_pipeline.create_monitoring_pipeline(
        config, window_start, window_end))
  return collect(config)


def collect(config: PipelineConfig) -> Dict[str, Any]:
  """The latest monitoring run: window counts, drift verdict and realized metrics per version
  (see summarize)."""
  store = metadata_connection.open_pipeline_store(config)
  run = mq.latest_run(store, config.monitoring_pipeline_name)
  if run is None:
    raise LookupError(f'no run of {config.monitoring_pipeline_name!r} in ML Metadata')
  return summarize(store, run)


def summarize(store, run, records: Optional[Dict[str, mq.ExecutionRecord]] = None
              ) -> Dict[str, Any]:
  """One monitoring run (a `pipeline_run` context): window counts, drift verdict and realized
  metrics per version. `records`: the run's execution records by node id, if already read.

  `retrain` is True when a version's verdict is critical (not a schema break, which retraining
  cannot fix) or its realized AUC is below the threshold.
  """
  if records is None:
    records = {r.node_id: r for r in mq.execution_records(store, run)}
  log_gen = records.get('ServingLogExampleGen')
  if log_gen is None or not log_gen.outputs.get('examples'):
    raise LookupError(f'monitoring run {run.name} has no serving window (no output of '
                      f'ServingLogExampleGen; nodes: {", ".join(sorted(records)) or "none"})')
  window = log_gen.outputs['examples'][0]
  summary: Dict[str, Any] = {
      'run_id': run.name,
      'examples_uri': window.uri,
      'num_examples': _count(window, 'num_examples'),
      'num_labeled': _count(window, 'num_labeled'),
      'model_versions': mq.custom_property(window, 'model_versions'),
      # What could not be used, counted instead of failing: damaged logs, unmatched feedback.
      'skipped': {name: _count(window, name)
                  for name in log_gen_spec.SKIPPED_PROPERTIES + log_gen_spec.FEEDBACK_PROPERTIES
                  if mq.custom_property(window, name)},
      # Logged requests without a value for a feature the model requires, and which.
      'missing_required': {
          'examples': mq.custom_property(window, log_gen_spec.MISSING_REQUIRED_PROPERTY) or 0,
          'features': mq.custom_property(
              window, log_gen_spec.MISSING_REQUIRED_FEATURES_PROPERTY) or ''},
      'versions': {},
  }
  for node_id, record in sorted(records.items()):
    report = (record.outputs.get('report') or [None])[0]
    metrics = (record.outputs.get('realized_metrics') or [None])[0]
    if report is not None and (version := node_version(node_id, DRIFT_PREFIX, report)):
      summary['versions'].setdefault(version, {}).update({
          'verdict': mq.custom_property(report, 'verdict'),
          'drifted_features': mq.custom_property(report, 'drifted_features') or '',
          'critical_features': mq.custom_property(report, 'critical_features') or '',
          'schema_break': bool(mq.custom_property(report, 'schema_break')),
          'rows': _count(report, 'num_rows'),
          'report_html': os.path.join(report.uri, 'drift.html'),
          'drift_node': node_id,
      })
    elif metrics is not None and (version := node_version(node_id, REALIZED_PREFIX, metrics)):
      summary['versions'].setdefault(version, {}).update({
          'realized': {name: mq.custom_property(metrics, name) for name in REALIZED_METRICS},
          'realized_below_threshold': bool(mq.custom_property(metrics, 'below_threshold')),
          'realized_node': node_id,
      })
  summary['retrain'] = any(
      (v.get('verdict') == 'critical' and not v.get('schema_break')) or
      v.get('realized_below_threshold') for v in summary['versions'].values())
  summary['schema_break'] = any(v.get('schema_break') for v in summary['versions'].values())
  return summary


def _count(artifact, name: str):
  """An integer custom property as an int in either layout (KFP records every number as a
  double)."""
  return layout.number(mq.custom_property(artifact, name))


def node_version(node_id: str, prefix: str, artifact) -> Optional[str]:
  """The version a DriftDetector (prefix DRIFT_PREFIX) or RealizedMetrics (REALIZED_PREFIX)
  output was measured for, None for another node. Nodes are `DriftDetector_<version>`, one per
  served version, or `DriftDetector` alone in the pipeline built for a cluster (the version is
  resolved at run time); the output's `model_version` property says which, else the node id."""
  if not (node_id.startswith(prefix) or node_id == prefix.rstrip('_')):
    return None
  version = _count(artifact, 'model_version')
  if isinstance(version, int) and version >= 0:
    return str(version)
  return node_id[len(prefix):] or '?'


def format_monitoring(summary: Dict[str, Any]) -> str:
  lines = [f'Monitoring run {summary["run_id"]}: {summary["num_examples"]} logged examples, '
           f'{summary["num_labeled"]} with ground truth (versions {summary["model_versions"]})']
  if summary['skipped']:
    lines.append('  not used (counted): ' + ', '.join(
        f'{name.replace("_", " ")} {count}' for name, count in sorted(summary['skipped'].items())))
  missing = summary.get('missing_required') or {}
  if missing.get('examples'):
    lines.append(f'  requests missing a feature the model requires: {missing["examples"]} '
                 f'({missing["features"].replace(":", " ").replace(",", ", ")})')
  for version, info in sorted(summary['versions'].items()):
    realized = info.get('realized') or {}
    auc, ece = realized.get('auc'), realized.get('expected_calibration_error')
    lines.append(
        f'  version {version}: drift {info.get("verdict")}'
        f'{" (schema break)" if info.get("schema_break") else ""}'
        f'{"; drifted: " + info["drifted_features"] if info.get("drifted_features") else ""}'
        f'{"; critical: " + info["critical_features"] if info.get("critical_features") else ""}'
        f'; realized AUC {f"{auc:.3f}" if auc is not None else "n/a"}, ECE '
        f'{f"{ece:.3f}" if ece is not None else "n/a"} on '
        f'{int(realized.get("example_count") or 0)} labelled examples')
    if info.get('report_html'):
      lines.append(f'    report: {info["report_html"]}')
  lines.append('  -> retraining triggered' if summary['retrain'] else
               '  -> schema break upstream: fix the producer, retraining would not help'
               if summary['schema_break'] else '  -> no action')
  return '\n'.join(lines)
