"""Running the monitoring pipeline for a window and reading its verdicts back from MLMD."""
import os
import time
from typing import Any, Dict, Optional

from components.serving_log_gen import spec as log_gen_spec
from pipeline import metadata_queries as mq
from pipeline import progress
from pipeline.config import PipelineConfig

DRIFT_PREFIX = 'DriftDetector_'
REALIZED_PREFIX = 'RealizedMetrics_'
REALIZED_METRICS = ('auc', 'binary_accuracy', 'example_count')


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
  """The latest monitoring run: window counts, drift verdict and realized metrics per version.

  `retrain` is True when a version's verdict is critical (not a schema break, which retraining
  cannot fix) or its realized AUC is below the threshold.
  """
  store = mq.open_pipeline_store(config)
  run = mq.latest_run(store, config.monitoring_pipeline_name)
  if run is None:
    raise LookupError(f'no run of {config.monitoring_pipeline_name!r} in ML Metadata')
  records = {r.node_id: r for r in mq.execution_records(store, run)}
  window = records['ServingLogExampleGen'].outputs['examples'][0]
  summary: Dict[str, Any] = {
      'run_id': run.name,
      'examples_uri': window.uri,
      'num_examples': mq.custom_property(window, 'num_examples'),
      'num_labeled': mq.custom_property(window, 'num_labeled'),
      'model_versions': mq.custom_property(window, 'model_versions'),
      # What could not be used, counted instead of failing: damaged logs, unmatched feedback.
      'skipped': {name: mq.custom_property(window, name)
                  for name in log_gen_spec.SKIPPED_PROPERTIES + log_gen_spec.FEEDBACK_PROPERTIES
                  if mq.custom_property(window, name)},
      'versions': {},
  }
  for node_id, record in sorted(records.items()):
    if node_id.startswith(DRIFT_PREFIX):
      report = record.outputs['report'][0]
      summary['versions'].setdefault(node_id[len(DRIFT_PREFIX):], {}).update({
          'verdict': mq.custom_property(report, 'verdict'),
          'drifted_features': mq.custom_property(report, 'drifted_features') or '',
          'critical_features': mq.custom_property(report, 'critical_features') or '',
          'schema_break': bool(mq.custom_property(report, 'schema_break')),
          'rows': mq.custom_property(report, 'num_rows'),
          'report_html': os.path.join(report.uri, 'drift.html'),
      })
    elif node_id.startswith(REALIZED_PREFIX):
      metrics = record.outputs['realized_metrics'][0]
      summary['versions'].setdefault(node_id[len(REALIZED_PREFIX):], {}).update({
          'realized': {name: mq.custom_property(metrics, name) for name in REALIZED_METRICS},
          'realized_below_threshold': bool(mq.custom_property(metrics, 'below_threshold')),
      })
  summary['retrain'] = any(
      (v.get('verdict') == 'critical' and not v.get('schema_break')) or
      v.get('realized_below_threshold') for v in summary['versions'].values())
  summary['schema_break'] = any(v.get('schema_break') for v in summary['versions'].values())
  return summary


def format_monitoring(summary: Dict[str, Any]) -> str:
  lines = [f'Monitoring run {summary["run_id"]}: {summary["num_examples"]} logged examples, '
           f'{summary["num_labeled"]} with ground truth (versions {summary["model_versions"]})']
  if summary['skipped']:
    lines.append('  not used (counted): ' + ', '.join(
        f'{name.replace("_", " ")} {count}' for name, count in sorted(summary['skipped'].items())))
  for version, info in sorted(summary['versions'].items()):
    realized = info.get('realized') or {}
    auc = realized.get('auc')
    lines.append(
        f'  version {version}: drift {info.get("verdict")}'
        f'{" (schema break)" if info.get("schema_break") else ""}'
        f'{"; drifted: " + info["drifted_features"] if info.get("drifted_features") else ""}'
        f'{"; critical: " + info["critical_features"] if info.get("critical_features") else ""}'
        f'; realized AUC {f"{auc:.3f}" if auc is not None else "n/a"} on '
        f'{int(realized.get("example_count") or 0)} labelled examples')
    if info.get('report_html'):
      lines.append(f'    report: {info["report_html"]}')
  lines.append('  -> retraining triggered' if summary['retrain'] else
               '  -> schema break upstream: fix the producer, retraining would not help'
               if summary['schema_break'] else '  -> no action')
  return '\n'.join(lines)
