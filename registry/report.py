"""Human-readable output of the registry: the models table, a version's lineage, transitions.
Pure formatting of plain dicts/records; no TFX, no ML Metadata."""
import time
from typing import Any, Dict, List, Optional, Sequence

NA = 'n/a'


def when(ms: Optional[int]) -> str:
  return time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(ms / 1000)) if ms else NA


def metric(metrics: Optional[Dict[str, float]], name: str, digits: int = 3) -> str:
  if not metrics or name not in metrics:
    return NA
  value = metrics[name]
  return str(int(value)) if name == 'example_count' else f'{value:.{digits}f}'


def blessed(value: Optional[bool]) -> str:
  return NA if value is None else ('yes' if value else 'no')


def hyperparameters(values: Optional[Dict[str, Any]]) -> str:
  if not values:
    return 'defaults'
  return ' '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in sorted(values.items()))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
  """Left-aligned columns; the last column is not padded (it may be long)."""
  widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
  lines = []
  for row in [header, *rows]:
    cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
    lines.append('  '.join(cells).rstrip())
  return '\n'.join(lines)


MODEL_COLUMNS = ('VERSION', 'STAGE', 'LABEL', 'BLESSED', 'EVAL AUC', 'EVAL ACC', 'SERVED AUC',
                 'SPANS', 'PUSHED', 'TRAINED IN RUN', 'HYPERPARAMETERS')


def models_table(records: List[Dict[str, Any]], model_name: str,
                 notes: Sequence[str] = ()) -> str:
  if not records:
    return (f'No model of {model_name} in ML Metadata yet: run `loopline train` first.')
  rows = []
  for r in records:
    spans = r.get('spans') or NA
    if r.get('span_versions'):
      spans += f' (v {r["span_versions"]})'
    rows.append((r['key'], r['stage'] + (' (forced)' if r.get('forced') else ''),
                 ','.join(r.get('labels') or []) or '-', blessed(r.get('blessed')),
                 metric(r.get('eval_metrics'), 'auc'), metric(r.get('eval_metrics'),
                                                              'binary_accuracy'),
                 metric(r.get('realized_metrics'), 'auc'), spans, when(r.get('pushed_at_ms')),
                 r.get('run_id') or NA, hyperparameters(r.get('hyperparameters'))))
  text = f'{model_name}: {len(records)} model(s)\n' + table(rows, MODEL_COLUMNS)
  for note in notes:
    text += f'\nnote: {note}'
  return text


def transition_line(t: Dict[str, Any]) -> str:
  forced = f' FORCED over: {t["overridden"]}' if t.get('forced') else ''
  others = [c for c in t.get('changes') or [] if c['version'] != t['version']]
  also = ''.join(f'; version {c["version"]} {c["from"]} -> {c["to"]}' for c in others)
  return (f'#{t["sequence"]} {when(t["at_ms"])}  {t["action"]:<9} version {t["version"]} '
          f'{t["from_stage"]} -> {t["to_stage"]}{also}  by {t["actor"]}: {t["reason"]}{forced}')


def transitions(items: List[Dict[str, Any]], model_name: str) -> str:
  if not items:
    return f'No stage transition of {model_name} recorded yet.'
  return '\n'.join(transition_line(t) for t in items)


def _metrics_line(metrics: Optional[Dict[str, float]]) -> str:
  if not metrics:
    return NA
  return ', '.join(f'{name} {metric(metrics, name)}' for name in
                   ('auc', 'auc_precision_recall', 'binary_accuracy', 'precision', 'recall',
                    'calibration', 'example_count') if name in metrics)


def describe(info: Dict[str, Any]) -> str:
  """`loopline models show` / `loopline lineage`."""
  r = info['record']
  title = (f'{info["model_name"]} version {r["version"]}' if r.get('version') is not None
           else f'{info["model_name"]} {r["key"]} (trained, never pushed)')
  lines = [title,
           f'  stage:            {r["stage"]}' + (f' since {when(r.get("stage_changed_at_ms"))} '
                                                  f'by {r.get("stage_changed_by")}: '
                                                  f'{r.get("stage_reason")}'
                                                  if r.get('stage_changed_at_ms') else ''),
           f'  serving labels:   {", ".join(r.get("labels") or []) or "none"} '
           f'({info["serving_config"]})']
  if r.get('serving_dir'):
    lines.append(f'  serving dir:      {r["serving_dir"]}')
  lines += [
      f'  blessed:          {blessed(r.get("blessed"))}'
      + (f' (ModelBlessing #{r["blessing_id"]})' if r.get('blessing_id') else ''),
      f'  eval metrics:     {_metrics_line(r.get("eval_metrics"))}',
      f'  served metrics:   {_metrics_line(r.get("realized_metrics"))}',
      f'  data spans:       {r.get("spans") or NA}'
      + (f' (span versions {r["span_versions"]})' if r.get('span_versions') else ''),
      f'  hyperparameters:  {hyperparameters(r.get("hyperparameters"))}'
      + (f' (tuned in run {r["hyperparameters_run"]})' if r.get('hyperparameters_run') else ''),
      f'  trained:          {when(r.get("trained_at_ms"))} in run {r.get("run_id") or NA}'
      + (f', Model #{r["model_id"]} {r["model_uri"]}' if r.get('model_id') else ''),
      f'  pushed:           {when(r.get("pushed_at_ms"))}'
      + (f' (PushedModel #{", #".join(str(i) for i in r["pushed_model_ids"])})'
         if r.get('pushed_model_ids') else '')]
  lines.append('  stage history:')
  lines += [f'    {transition_line(t)}' for t in info['history']] or ['    none']
  lines.append('  lineage (data first):')
  if not info['lineage']:
    lines.append('    none recorded in ML Metadata')
  for step in info['lineage']:
    lines.append(f'    [{step["role"]}] {step["node"]} execution #{step["execution_id"]} '
                 f'{step["state"]} in run {step["run"]} ({step["seconds"]:.1f} s)')
    if step.get('note'):
      lines.append(f'        ({step["note"]})')
    for name, value in (step.get('parameters') or {}).items():
      lines.append(f'        {name}: {_short(value)}')
    inputs = ', '.join(f'{i["key"]}={i["type"]} #{i["id"]}' for i in step['inputs'])
    if inputs:
      lines.append(f'        in:  {inputs}')
    for output in step['outputs']:
      extra = ''
      if output.get('properties'):
        extra = '  ' + ', '.join(f'{k}={_short(v)}' for k, v in output['properties'].items())
      lines.append(f'        out: {output["key"]}={output["type"]} #{output["id"]} '
                   f'{output["uri"]}{extra}')
  return '\n'.join(lines)


def _short(value: Any, limit: int = 160) -> str:
  text = ' '.join(str(value).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'
