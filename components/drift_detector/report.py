"""The drift report: a JSON summary and a self-contained HTML page (inline SVG, no dependencies).

The HTML shows the verdict, the window and its baseline, every schema anomaly, a table of every
measure against its calibrated thresholds (with TFDV's own value at its fixed threshold beside it),
and one plot per drifted measure: the baseline's and the window's distribution over the same bins.

Pure logic (html, json), no TFX import.
"""
import html
import json
from typing import Any, Dict, List, Sequence

from components.drift_detector import policy as policy_lib

_COLORS = {policy_lib.NO_DRIFT: '#2e7d32', policy_lib.WARNING: '#ef6c00',
           policy_lib.CRITICAL: '#c62828', policy_lib.INSUFFICIENT_DATA: '#616161'}
BASELINE_COLOR = '#5c6bc0'
WINDOW_COLOR = '#ff7043'
MAX_PLOTTED_BINS = 30


def to_json(summary: Dict[str, Any]) -> str:
  return json.dumps(summary, indent=2, sort_keys=True, default=_json_default)


def _json_default(value):
  if hasattr(value, 'item'):
    return value.item()
  raise TypeError(f'not JSON serializable: {type(value)}')


def _fmt(value, digits: int = 4) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.{digits}f}'
  return html.escape(str(value))


def plotted_bins(bins: Sequence[str], baseline: Sequence[float], window: Sequence[float],
                 limit: int = MAX_PLOTTED_BINS):
  """At most `limit` bins: numeric bins all (they are <= 51), categories by largest share, the rest
  summed into one bar."""
  if len(bins) <= limit:
    return list(bins), list(baseline), list(window)
  order = sorted(range(len(bins)), key=lambda i: -max(baseline[i], window[i]))
  kept = sorted(order[:limit - 1])
  rest = order[limit - 1:]
  return ([bins[i] for i in kept] + [f'({len(rest)} more)'],
          [baseline[i] for i in kept] + [sum(baseline[i] for i in rest)],
          [window[i] for i in kept] + [sum(window[i] for i in rest)])


def svg_bars(title: str, bins: Sequence[str], baseline: Sequence[float],
             window: Sequence[float]) -> str:
  """Grouped bars: baseline (training) vs window (serving) share per bin."""
  bins, baseline, window = plotted_bins(bins, baseline, window)
  width_per_bin = 28
  chart_width = max(320, width_per_bin * len(bins))
  height, top, bottom, left = 180, 24, 110, 40
  peak = max([*baseline, *window, 1e-9])
  parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{chart_width + left + 10}" '
           f'height="{height + top + bottom}" font-family="sans-serif" font-size="10">',
           f'<text x="{left}" y="14" font-size="12" font-weight="bold">{html.escape(title)}'
           '</text>',
           f'<rect x="{left + chart_width - 150}" y="4" width="10" height="10" '
           f'fill="{BASELINE_COLOR}"/><text x="{left + chart_width - 136}" y="13">training</text>',
           f'<rect x="{left + chart_width - 80}" y="4" width="10" height="10" '
           f'fill="{WINDOW_COLOR}"/><text x="{left + chart_width - 66}" y="13">serving</text>',
           f'<line x1="{left}" y1="{top + height}" x2="{left + chart_width}" '
           f'y2="{top + height}" stroke="#333"/>',
           f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{peak:.2f}</text>',
           f'<text x="{left - 4}" y="{top + height}" text-anchor="end">0</text>']
  step = chart_width / max(1, len(bins))
  bar = max(2.0, step / 2 - 2)
  for i, label in enumerate(bins):
    x = left + i * step + 1
    for j, (share, color) in enumerate(((baseline[i], BASELINE_COLOR), (window[i], WINDOW_COLOR))):
      h = height * share / peak
      parts.append(f'<rect x="{x + j * bar:.1f}" y="{top + height - h:.1f}" width="{bar:.1f}" '
                   f'height="{h:.1f}" fill="{color}"><title>{html.escape(label)}: '
                   f'{"training" if j == 0 else "serving"} {share:.3f}</title></rect>')
    short = label if len(label) <= 22 else label[:21] + '…'
    parts.append(f'<text transform="translate({x + bar:.1f},{top + height + 6}) rotate(60)" '
                 f'>{html.escape(short)}</text>')
  parts.append('</svg>')
  return ''.join(parts)


def _measure_rows(measures: List[Dict[str, Any]]) -> str:
  rows = []
  for m in measures:
    tfdv = m.get('tfdv') or {}
    color = _COLORS.get(m['status'], '#000')
    rows.append(
        f'<tr><td>{html.escape(m["name"])}</td><td>{m["role"]}</td><td>{m["metric"]}</td>'
        f'<td>{_fmt(m["value"])}</td>'
        f'<td>{_fmt(m["thresholds"].get("warning"))}</td>'
        f'<td>{_fmt(m["thresholds"].get("critical"))}</td>'
        f'<td style="color:{color};font-weight:bold">{m["status"]}</td>'
        f'<td>{m["n_window"]}</td><td>{m["n_baseline"]}</td><td>{m.get("invalid", 0)}</td>'
        f'<td>{_fmt(tfdv.get("value"))} / {_fmt(tfdv.get("threshold"), 2)}'
        f'{" (flagged)" if tfdv.get("flagged") else ""}</td></tr>')
  return ''.join(rows)


def to_html(summary: Dict[str, Any]) -> str:
  verdict = summary['verdict']
  window = summary.get('window', {})
  baseline = summary.get('baseline', {})
  parts = [
      '<!doctype html><html><head><meta charset="utf-8"><title>Drift report</title>',
      '<style>body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;'
      'margin:8px 0 16px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;'
      'font-size:13px}th{background:#f3f3f3}.plots{display:flex;flex-wrap:wrap;gap:16px}'
      '</style></head><body>',
      f'<h1>Drift report: <span style="color:{_COLORS.get(verdict, "#000")}">{verdict}</span>'
      '</h1>',
      f'<p>{html.escape(summary.get("reason", ""))}</p>',
      '<table>',
      f'<tr><th>window rows (assessed)</th><td>{window.get("rows")} '
      f'({window.get("rows_assessed")})</td></tr>',
      f'<tr><th>labeled rows</th><td>{window.get("labeled")}</td></tr>',
      f'<tr><th>model versions in the window</th>'
      f'<td>{html.escape(json.dumps(window.get("model_versions", {})))}</td></tr>',
      f'<tr><th>version assessed</th><td>{_fmt(window.get("model_version_assessed"))}</td></tr>',
      f'<tr><th>baseline</th><td>{baseline.get("rows")} training rows; model '
      f'{_fmt(baseline.get("pushed_version"))}; statistics {_fmt(baseline.get("statistics_uri"))}'
      '</td></tr>',
      f'<tr><th>false-alarm targets</th><td>warning '
      f'{summary["policy"]["warning"]["false_alarm_rate"]}, critical '
      f'{summary["policy"]["critical"]["false_alarm_rate"]} (per window, all measures)'
      '</td></tr>',
      '</table>',
  ]
  anomalies = summary.get('schema_anomalies', [])
  parts.append(f'<h2>Schema (SERVING environment): {len(anomalies)} anomal'
               f'{"y" if len(anomalies) == 1 else "ies"}'
               f'{" - schema break" if summary.get("schema_break") else ""}</h2>')
  if anomalies:
    parts.append('<table><tr><th>feature</th><th>type</th><th>severity</th><th>description</th>'
                 '</tr>')
    for a in anomalies:
      parts.append(f'<tr><td>{html.escape(a["feature"])}</td><td>{a["anomaly_type"]}</td>'
                   f'<td>{a["severity"]}</td><td>{html.escape(a["description"])}</td></tr>')
    parts.append('</table>')
  parts.append('<h2>Measures against calibrated thresholds</h2>'
               '<table><tr><th>measure</th><th>role</th><th>metric</th><th>value</th>'
               '<th>warning &gt;</th><th>critical &gt;</th><th>status</th><th>window rows</th>'
               '<th>baseline rows</th><th>invalid values</th>'
               '<th>TFDV value / fixed threshold</th></tr>')
  parts.append(_measure_rows(summary.get('measures', [])))
  parts.append('</table>')
  drifted = [m for m in summary.get('measures', [])
             if m['status'] in (policy_lib.WARNING, policy_lib.CRITICAL)]
  if drifted:
    parts.append('<h2>Drifted: training vs serving distribution</h2><div class="plots">')
    for m in drifted:
      title = (f'{m["name"]}: {m["metric"]} {m["value"]:.4f} ({m["status"]}; warning > '
               f'{m["thresholds"]["warning"]:.4f}, critical > {m["thresholds"]["critical"]:.4f})')
      parts.append(f'<div>{svg_bars(title, m["bins"], m["baseline_share"], m["window_share"])}'
                   '</div>')
    parts.append('</div>')
  parts.append('</body></html>')
  return '\n'.join(parts)
