"""The bundled data as spans: reproducible split, label rule, and clear errors for bad data."""
import os

import pytest

from core import spans
from models import features
from pipeline.config import REPO_ROOT
from tests.conftest import read_span, write_span

RAW = os.path.join(REPO_ROOT, spans.RAW_CSV)


def test_split_reproduces_committed_spans_exactly():
  texts = spans.split_raw_into_spans(RAW)
  assert sorted(texts) == list(range(1, 9))
  for span, text in texts.items():
    with open(spans.span_path(os.path.join(REPO_ROOT, spans.SPANS_DIR), span)) as f:
      assert f.read() == text, f'span {span} differs from data/raw; run `loopline data split`'


def test_spans_hold_every_raw_row_once_in_time_order():
  total = 0
  for span in range(1, 9):
    header, rows = read_span(span)
    assert 'tips' not in header and header[-1] == features.LABEL_KEY
    timestamps = [int(r['trip_start_timestamp']) for r in rows]
    assert timestamps == sorted(timestamps)
    assert {spans.span_of_timestamp(t) for t in timestamps} == {span}
    total += len(rows)
  assert total == 15002


def test_label_is_tip_over_a_fifth_of_the_fare():
  assert spans.is_big_tipper('2.01', '10') == 1
  assert spans.is_big_tipper('2.0', '10') == 0
  assert spans.is_big_tipper('', '10') == 0
  assert spans.is_big_tipper('1', '0') == 1


def test_span_numbering_by_half_year():
  assert spans.span_of_timestamp(1357000200) == 1          # 2013-01-01
  assert spans.span_of_timestamp(1372723200) == 2          # 2013-07-02
  assert spans.span_label(5) == '2015 H1'


def test_missing_data_directory_is_named(tmp_path):
  with pytest.raises(spans.SpanError, match='does not exist'):
    spans.check_span_range(str(tmp_path / 'nope'), 1, 2)


def test_missing_span_is_named(sample_data_root):
  with pytest.raises(spans.SpanError, match=r'span\(s\) \[3\] not found'):
    spans.check_span_range(sample_data_root, 1, 3)


def test_empty_span_file_is_named(sample_data_root):
  path = spans.span_path(sample_data_root, 2)
  open(path, 'w').close()
  with pytest.raises(spans.SpanError, match='span-2/version-1/data.csv is empty'):
    spans.check_span_range(sample_data_root, 1, 2)


def test_header_only_span_is_named(sample_data_root):
  header, _ = read_span(2)
  write_span(sample_data_root, 2, header, [])
  with pytest.raises(spans.SpanError, match='has a header but no rows'):
    spans.check_span_range(sample_data_root, 1, 2)


def test_latest_version_of_a_span_wins(sample_data_root):
  header, rows = read_span(2)
  write_span(sample_data_root, 2, header, rows[:10], version=2)
  assert spans.check_span_range(sample_data_root, 1, 2) == {1: 1, 2: 2}


def test_rewriting_a_span_with_different_data_is_refused(tmp_path):
  spans_dir = str(tmp_path / 'spans')
  spans.write_spans(RAW, spans_dir)
  path = spans.span_path(spans_dir, 3)
  with open(path, 'a') as f:
    f.write('tampered\n')
  with pytest.raises(spans.SpanError, match='exists with different content'):
    spans.write_spans(RAW, spans_dir)
  with open(path) as f:
    assert f.read().endswith('tampered\n')        # nothing stored was overwritten
