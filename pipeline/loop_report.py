"""One HTML page for a loop run: every stage's summary, with links to the detailed reports."""
import html
import os
import time
from typing import List

from core import home as home_lib
from pipeline.config import PipelineConfig

_STYLE = ('body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}'
          'pre{background:#f6f8fa;padding:1em;overflow-x:auto;font-size:13px}'
          'h2{border-bottom:1px solid #ddd;padding-bottom:.2em}')


def write(config: PipelineConfig, stages: List) -> str:
  """Writes `<home>/reports/loop-<time>.html` and returns its path."""
  directory = home_lib.reports_dir(config.home)
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f'loop-{time.strftime("%Y%m%d-%H%M%S")}.html')
  parts = [f'<!doctype html><html><head><meta charset="utf-8"><title>Loopline loop</title>'
           f'<style>{_STYLE}</style></head><body><h1>Loopline: the whole loop</h1>'
           f'<p>Home: <code>{html.escape(config.home)}</code>. Generated '
           f'{html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))}.</p>']
  for stage in stages:
    parts.append(f'<h2>{html.escape(stage.name)}</h2><pre>{html.escape(stage.text)}</pre>')
    if stage.links:
      parts.append('<ul>' + ''.join(
          f'<li><a href="{html.escape(os.path.relpath(target, directory))}">'
          f'{html.escape(name)}</a></li>' for name, target in sorted(stage.links.items())) +
                   '</ul>')
  parts.append('</body></html>')
  temporary = path + '.tmp'
  with open(temporary, 'w') as f:
    f.write('\n'.join(parts))
  os.replace(temporary, path)
  return path
