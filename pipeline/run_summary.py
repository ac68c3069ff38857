"""What a training run did, read back from ML Metadata, as a dict and as a short human summary."""
import dataclasses
import datetime
import json
import os
from typing import Any, Dict, List, Optional

from components.data_gate import policy as gate_policy
from components.data_gate import spec as gate_spec
from metadata import connection as metadata_connection
from metadata import queries as mq
from metadata.evaluation import slice_metrics
from models import calibration
from pipeline.config import PipelineConfig

MIN_SLICE_EXAMPLES = 50     # smaller slices are too noisy to call "the worst"
MIN_CLASS_EXAMPLES = 10     # an AUC needs both classes: e.g. cash trips have ~no recorded tips


def _first(records: Dict[str, mq.ExecutionRecord], node: str, side: str, key: str):
  record = records.get(node)
  if record is None:
    return None
  artifacts = getattr(record, side).get(key) or []
  return artifacts[0] if artifacts else None


def worst_slice(slices: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
  """The slice with the lowest AUC among those where an AUC means something: at least
  MIN_SLICE_EXAMPLES examples, and MIN_CLASS_EXAMPLES of each class (from the mean label)."""

  def meaningful(row):
    count, mean_label = row.get('example_count', 0), row.get('mean_label')
    if count < MIN_SLICE_EXAMPLES or not isinstance(row.get('auc'), float):
      return False
    if not isinstance(mean_label, float):
      return False
    positives = mean_label * count
    return min(positives, count - positives) >= MIN_CLASS_EXAMPLES

  candidates = [row for row in slices if meaningful(row)]
  return min(candidates, key=lambda row: row['auc']) if candidates else None


def search_summary(trials: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
  """The spread of the Tuner's trials beside its pick: their scores (validation log loss, lower
  is better) overall and per model family; None without a scored trial."""
  scored = [t for t in trials if isinstance(t.get('score'), (int, float))]
  if not scored:
    return None
  best = min(scored, key=lambda t: t['score'])
  by_family: Dict[str, List[float]] = {}
  for trial in scored:
    by_family.setdefault(trial.get('family', '?'), []).append(trial['score'])
  return {'trials': len(scored), 'best': best['score'], 'best_family': best.get('family', '?'),
          'range': [min(t['score'] for t in scored), max(t['score'] for t in scored)],
          'by_family': {family: {'trials': len(scores), 'range': [min(scores), max(scores)]}
                        for family, scores in sorted(by_family.items())}}


def _calibrator(model_uri: str) -> Optional[Dict[str, Any]]:
  try:
    return dataclasses.asdict(calibration.read_exported(model_uri))
  except (OSError, ValueError):
    return None


def collect(config: PipelineConfig) -> Dict[str, Any]:
  """The latest run of the pipeline, from MLMD."""
  store = metadata_connection.open_pipeline_store(config)
  run = mq.latest_run(store, config.pipeline_name)
  if run is None:
    raise LookupError(f'no run of pipeline {config.pipeline_name!r} in ML Metadata')
  records = {r.node_id: r for r in mq.execution_records(store, run)}
  summary: Dict[str, Any] = {
      'run_id': run.name,
      'components': [{'component': r.node_id, 'state': r.state, 'seconds': r.seconds}
                     for r in records.values()],
  }
  examples = _first(records, 'SpanRangeCsvExampleGen', 'outputs', 'examples')
  if examples is not None:
    summary['examples_uri'] = examples.uri
    summary['spans'] = mq.custom_property(examples, 'span_range')
    summary['span_versions'] = mq.custom_property(examples, 'span_versions')
  report = _first(records, 'DataGate', 'outputs', 'report')
  if report is not None:
    summary['data_gate'] = {k: mq.custom_property(report, k)
                            for k in ('verdict', 'num_warnings', 'num_blocking')}
    summary['data_gate']['findings'] = read_gate_findings(report.uri)
  hyperparameters = _first(records, 'Trainer', 'inputs', 'hyperparameters')
  summary['hyperparameters'] = (mq.read_hyperparameters(hyperparameters.uri)
                                if hyperparameters is not None else None)
  summary['hyperparameters_source'] = (
      'tuner (this run)' if 'Tuner' in records else
      'last tuned (MLMD)' if hyperparameters is not None else 'model defaults')
  tuner_results = _first(records, 'Tuner', 'outputs', 'tuner_results')
  if tuner_results is not None:
    summary['search'] = search_summary(mq.read_tuner_results(tuner_results.uri) or [])
  evaluation = _first(records, 'Evaluator', 'outputs', 'evaluation')
  if evaluation is not None:
    slices = slice_metrics(evaluation.uri)
    summary['overall'] = slices[0] if slices else {}
    summary['worst_slice'] = worst_slice(slices[1:])
  blessing = _first(records, 'Evaluator', 'outputs', 'blessing')
  if blessing is not None:
    summary['blessed'] = bool(mq.custom_property(blessing, 'blessed'))
  model = _first(records, 'Trainer', 'outputs', 'model')
  if model is not None:
    summary['model_uri'] = os.path.join(model.uri, 'Format-Serving')
    summary['calibration'] = _calibrator(summary['model_uri'])
  pushed = _first(records, 'AtomicPusher', 'outputs', 'pushed_model')
  if pushed is not None and mq.custom_property(pushed, 'pushed'):
    summary['pushed_version'] = mq.custom_property(pushed, 'pushed_version')
    summary['pushed_path'] = mq.custom_property(pushed, 'pushed_destination')
  return summary


def read_gate_findings(report_uri: str) -> List[Dict[str, Any]]:
  """Every finding of a DataGate report (`data_gate.json`), blocking ones first; [] if unread."""
  try:
    with open(os.path.join(report_uri, gate_spec.REPORT_FILE)) as f:
      report = json.load(f)
  except (OSError, ValueError):
    return []
  return list(report.get('blocking', [])) + list(report.get('warnings', []))


def _metric(row: Optional[Dict[str, Any]], name: str) -> str:
  return f'{row[name]:.3f}' if row and name in row else 'n/a'


def format_gate(summary: Dict[str, Any]) -> List[str]:
  """The data gate's verdict, then every anomaly it judged: blocking first, then warnings, each
  with the span (or split) it came from."""
  gate = summary.get('data_gate') or {}
  lines = [f'  data gate:       {gate.get("verdict", "n/a")}: '
           f'{gate.get("num_warnings", 0)} warning(s), {gate.get("num_blocking", 0)} blocking']
  return lines + gate_policy.format_findings(
      [gate_policy.Finding(**finding) for finding in gate.get('findings') or []], indent=' ' * 4)


def format_validation(summary: Dict[str, Any]) -> str:
  """`loopline validate`: the run, its spans and the data gate's findings."""
  return '\n'.join([f'Run {summary["run_id"]} (up to the data gate)', _spans_line(summary)]
                   + format_gate(summary))


def _spans_line(summary: Dict[str, Any]) -> str:
  return f'  spans:           {summary.get("spans")} (versions {summary.get("span_versions")})'



def format_summary(summary: Dict[str, Any]) -> str:
  """A short summary for people."""
  lines = [f'Run {summary["run_id"]}']
  ran = [c for c in summary['components'] if c['state'] == 'COMPLETE']
  cached = [c for c in summary['components'] if c['state'] == 'CACHED']
  lines.append(f'  components:      {len(ran)} executed, {len(cached)} from cache')
  lines.append(_spans_line(summary))
  lines += format_gate(summary)
  hp = summary.get('hyperparameters')
  hp_text = ', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}'
                      for k, v in sorted(hp.items())) if hp else 'defaults'
  lines.append(f'  hyperparameters: {hp_text} [{summary.get("hyperparameters_source")}]')
  search = summary.get('search')
  if search:
    families = '; '.join(
        f'{family} {info["trials"]}: {info["range"][0]:.4f}-{info["range"][1]:.4f}'
        for family, info in search['by_family'].items())
    lines.append(f'  search:          {search["trials"]} trials, validation log loss (latest '
                 f'rows in time) {search["range"][0]:.4f}-{search["range"][1]:.4f} ({families}); '
                 f'picked {search["best_family"]} {search["best"]:.4f}')
  calibrated = summary.get('calibration')
  if calibrated:
    losses = ', '.join(f'{k} {v:.4f}' for k, v in calibrated['validation_log_loss'].items())
    start = datetime.datetime.fromtimestamp(calibrated['window_start'], datetime.timezone.utc)
    lines.append(f'  calibration:     {calibrated["method"]}, fitted on {calibrated["rows"]} rows '
                 f'from {start:%Y-%m-%d} on (cross-validated log loss: {losses})')
  overall = summary.get('overall')
  lines.append(f'  eval (overall):  AUC {_metric(overall, "auc")}, PR-AUC '
               f'{_metric(overall, "auc_precision_recall")}, accuracy '
               f'{_metric(overall, "binary_accuracy")}, precision {_metric(overall, "precision")}, '
               f'recall {_metric(overall, "recall")}, calibration '
               f'{_metric(overall, "calibration")}, ECE '
               f'{_metric(overall, "expected_calibration_error")}, examples '
               f'{int(overall.get("example_count", 0)) if overall else 0}')
  worst = summary.get('worst_slice')
  if worst:
    lines.append(f'  worst slice:     {worst["slice"]}: AUC {_metric(worst, "auc")} '
                 f'({int(worst.get("example_count", 0))} examples)')
  holdout = summary.get('holdout')
  if holdout:
    lines.append(f'  future spans {holdout["spans"]}: AUC {holdout["auc"]:.3f}, log loss '
                 f'{holdout["log_loss"]:.3f}, ECE {holdout["expected_calibration_error"]:.3f}, '
                 f'accuracy {holdout["accuracy"]:.3f} on {holdout["rows"]} rows '
                 '(time-ordered holdout)')
  lines.append(f'  blessed:         {"yes" if summary.get("blessed") else "no"}')
  if summary.get('pushed_version'):
    lines.append(f'  pushed:          version {summary["pushed_version"]} -> '
                 f'{summary["pushed_path"]}')
  else:
    lines.append('  pushed:          nothing')
  if summary.get('registry'):
    lines.append(f'  registry:        {summary["registry"]}')
  return '\n'.join(lines)
