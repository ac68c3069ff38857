"""The bundled data as versioned spans, laid out for CsvExampleGen's `{SPAN}`/`{VERSION}` patterns.

    data/spans/span-<N>/version-<V>/data.csv

The raw Chicago Taxi extract (`data/raw/chicago_taxi.csv`, as shipped in TFX's examples) is split
chronologically by `trip_start_timestamp` into half-years: span 1 is 2013 H1, span 8 is 2016 H2.
Spans 1-5 (2013 H1 - 2015 H1, about 80% of the rows) are the training spans; spans 6-8 (2015 H2 -
2016 H2) are held back as "future" serving traffic. Each row gets the label `big_tipper`
(`tips > 0.2 * fare`) and loses `tips`, which is not known at serving time.

Pure logic: csv and datetime only, no TFX import.
"""
import argparse
import csv
import dataclasses
import datetime
import io
import os
import re

from models import features

RAW_CSV = os.path.join('data', 'raw', 'chicago_taxi.csv')
SPANS_DIR = os.path.join('data', 'spans')
SPAN_PATTERN = 'span-{SPAN}/version-{VERSION}/*.csv'
FIRST_SPAN_YEAR = 2013
TRAINING_SPANS = (1, 5)
FUTURE_SPANS = (6, 8)
TIMESTAMP_COLUMN = 'trip_start_timestamp'
TIPS_COLUMN = 'tips'
FARE_COLUMN = 'fare'


class SpanError(ValueError):
  """Raised for span data that cannot be used; the message names the file and the problem."""


def parse_span_range(text: str) -> tuple:
  """'3' -> (3, 3); '1-5' -> (1, 5). An argparse `type=` (bad text: ArgumentTypeError)."""
  try:
    first, _, last = text.partition('-')
    span_range = (int(first), int(last or first))
  except ValueError:
    raise argparse.ArgumentTypeError(f'span range must look like 1-5 or 3, got {text!r}')
  if span_range[0] < 0 or span_range[1] < span_range[0]:
    raise argparse.ArgumentTypeError(f'span range {text!r} is empty or negative')
  return span_range


def span_of_timestamp(unix_seconds: int) -> int:
  """Half-year span number: 2013 H1 -> 1, 2013 H2 -> 2, ..."""
  when = datetime.datetime.fromtimestamp(unix_seconds, tz=datetime.timezone.utc)
  half = 0 if when.month <= 6 else 1
  return (when.year - FIRST_SPAN_YEAR) * 2 + half + 1


def span_label(span: int) -> str:
  """Human name of a span, e.g. 5 -> '2015 H1'."""
  return f'{FIRST_SPAN_YEAR + (span - 1) // 2} H{(span - 1) % 2 + 1}'


def is_big_tipper(tips: str, fare: str) -> int:
  """The label: 1 when the tip is more than 20% of the fare. Missing tips count as no tip."""
  tip_value = float(tips) if tips else 0.0
  fare_value = float(fare) if fare else 0.0
  return int(tip_value > 0.2 * fare_value)


def span_path(spans_dir: str, span: int, version: int = 1) -> str:
  return os.path.join(spans_dir, f'span-{span}', f'version-{version}', 'data.csv')


def split_raw_into_spans(raw_csv: str) -> dict[int, str]:
  """Returns {span: CSV text} for the raw extract: label added, `tips` dropped, rows in time order."""
  with open(raw_csv, newline='') as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    for required in (TIMESTAMP_COLUMN, TIPS_COLUMN, FARE_COLUMN):
      if required not in header:
        raise SpanError(f'{raw_csv}: column {required!r} is missing (header: {header})')
    rows = list(reader)
  out_columns = [c for c in header if c != TIPS_COLUMN] + [features.LABEL_KEY]
  by_span: dict[int, list[dict[str, str]]] = {}
  for line_number, row in enumerate(rows, start=2):
    try:
      timestamp = int(row[TIMESTAMP_COLUMN])
      row[features.LABEL_KEY] = str(is_big_tipper(row[TIPS_COLUMN], row[FARE_COLUMN]))
    except ValueError as e:
      raise SpanError(f'{raw_csv}:{line_number}: {e}') from e
    by_span.setdefault(span_of_timestamp(timestamp), []).append(row)
  texts = {}
  for span, span_rows in sorted(by_span.items()):
    span_rows.sort(key=lambda r: int(r[TIMESTAMP_COLUMN]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=out_columns, extrasaction='ignore',
                            lineterminator='\n')
    writer.writeheader()
    writer.writerows(span_rows)
    texts[span] = buffer.getvalue()
  return texts


def write_spans(raw_csv: str, spans_dir: str) -> dict[int, str]:
  """Writes version 1 of every span; refuses to overwrite a span version that differs."""
  written = {}
  for span, text in split_raw_into_spans(raw_csv).items():
    path = span_path(spans_dir, span)
    if os.path.exists(path):
      with open(path) as f:
        if f.read() != text:
          raise SpanError(f'{path} exists with different content; land changed data as a new '
                          f'version (version-2/) instead of rewriting a span')
      written[span] = path
      continue
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, path)
    written[span] = path
  return written


_SPAN_DIR = re.compile(r'^span-(\d+)$')
_VERSION_DIR = re.compile(r'^version-(\d+)$')


def list_spans(spans_dir: str) -> dict[int, int]:
  """{span: latest version} of the spans under `spans_dir` that hold at least one CSV file."""
  if not os.path.isdir(spans_dir):
    raise SpanError(f'data directory {spans_dir!r} does not exist')
  found = {}
  for name in os.listdir(spans_dir):
    span_match = _SPAN_DIR.match(name)
    if not span_match:
      continue
    versions = []
    for version_name in os.listdir(os.path.join(spans_dir, name)):
      version_match = _VERSION_DIR.match(version_name)
      version_dir = os.path.join(spans_dir, name, version_name)
      if version_match and any(f.endswith('.csv') for f in os.listdir(version_dir)):
        versions.append(int(version_match.group(1)))
    if versions:
      found[int(span_match.group(1))] = max(versions)
  return found


def check_span_range(spans_dir: str, first_span: int, last_span: int) -> dict[int, int]:
  """{span: latest version} for the range, or a SpanError naming what is missing or empty."""
  if first_span > last_span:
    raise SpanError(f'span range {first_span}-{last_span} is empty (first span after last)')
  available = list_spans(spans_dir)
  missing = [s for s in range(first_span, last_span + 1) if s not in available]
  if missing:
    raise SpanError(f'span(s) {missing} not found under {spans_dir!r} '
                    f'(available: {sorted(available) or "none"})')
  for span in range(first_span, last_span + 1):
    version_dir = os.path.dirname(span_path(spans_dir, span, available[span]))
    for name in sorted(os.listdir(version_dir)):
      if not name.endswith('.csv'):
        continue
      with open(os.path.join(version_dir, name)) as f:
        header = f.readline()
        if not header.strip():
          raise SpanError(f'{os.path.join(version_dir, name)} is empty (no CSV header)')
        if not f.readline().strip():
          raise SpanError(f'{os.path.join(version_dir, name)} has a header but no rows')
  return {s: available[s] for s in range(first_span, last_span + 1)}
