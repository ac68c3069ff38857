"""Ground truth for logged requests: the file format `loopline feedback` writes, and the join.

Format (one or more files, written whenever labels become known):

    <home>/feedback/<anything>.csv           (core.home.feedback_dir(home))

    request_id,big_tipper
    r-000017,1
    r-000018,0

- UTF-8 CSV with a header; the columns `request_id` and `big_tipper` (features.LABEL_KEY) are
  required, in any order; an optional `example` column (default 0) is the position of the example
  in its request, needed only for requests that carried several examples (the server logs one
  record per example, with `;example=<i>` in its request origin). Other columns are ignored.
- the label is `0` or `1` (`true`/`false` are accepted too);
- only `*.csv` files directly in the directory are read, in name order; hidden files (`.name`) and
  files ending in `.tmp` are ignored, so a writer can write `.labels.csv.tmp` and rename it.
- files are append-only history: the same (request_id, example) may appear again (a re-delivery).
  The same label again is a duplicate (counted, harmless); a different label is a conflict: the
  example stays unlabeled (counted), since nobody can tell which label is true.

The join never fails on bad feedback: unreadable files, rows without an id or with a label that is
not 0/1, duplicates, conflicts, labels whose request is in the logs but outside the window, and
labels for requests that no log file holds (unknown ids, requests never logged or not sampled)
are all counted in `FeedbackCounts` and reported on the ExampleGen's output.

Pure logic (csv), no TFX import.
"""
import collections
import csv
import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Set, Tuple

from models import features

REQUEST_ID_COLUMN = 'request_id'
LABEL_COLUMN = features.LABEL_KEY
EXAMPLE_COLUMN = 'example'
FILE_SUFFIX = '.csv'
_TRUE = {'1', 'true', 'True', 'TRUE'}
_FALSE = {'0', 'false', 'False', 'FALSE'}

Key = Tuple[str, int]


@dataclasses.dataclass
class FeedbackCounts:
  files_read: int = 0
  files_ignored: int = 0           # hidden, temporary, not .csv
  invalid_files: int = 0           # unreadable, or without the required columns
  rows: int = 0
  invalid_rows: int = 0            # no request id, label not 0/1, bad example index
  duplicate_labels: int = 0        # same key, same label again
  conflicting_keys: int = 0        # same key with different labels: left unlabeled
  labels: int = 0                  # distinct usable (key -> label)
  # Filled by `join`:
  joined_examples: int = 0         # logged examples of the window that got a label
  unlabeled_examples: int = 0
  labels_outside_window: int = 0   # the request was logged, but not in this window
  labels_unknown: int = 0          # no log file holds the request (unknown id, never logged)
  problems: List[str] = dataclasses.field(default_factory=list)   # first few, for humans

  def as_dict(self) -> Dict[str, object]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Feedback:
  labels: Dict[Key, int]
  counts: FeedbackCounts


_MAX_PROBLEMS = 20


def _problem(counts: FeedbackCounts, message: str) -> None:
  if len(counts.problems) < _MAX_PROBLEMS:
    counts.problems.append(message)


def _parse_label(text: str) -> Optional[int]:
  text = (text or '').strip()
  if text in _TRUE:
    return 1
  if text in _FALSE:
    return 0
  return None


def feedback_files(feedback_dir: Optional[str], counts: FeedbackCounts) -> List[str]:
  if not feedback_dir or not os.path.isdir(feedback_dir):
    return []
  files = []
  for entry in sorted(os.scandir(feedback_dir), key=lambda e: e.name):
    if not entry.is_file():
      continue
    if entry.name.startswith('.') or not entry.name.endswith(FILE_SUFFIX):
      counts.files_ignored += 1
      continue
    files.append(entry.path)
  return files


def read_feedback(feedback_dir: Optional[str]) -> Feedback:
  """Every usable label under `feedback_dir` (missing directory: no labels), with counts."""
  counts = FeedbackCounts()
  seen: Dict[Key, int] = {}
  conflicted: Set[Key] = set()
  for path in feedback_files(feedback_dir, counts):
    try:
      with open(path, newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (REQUEST_ID_COLUMN, LABEL_COLUMN) if c not in header]
        if missing:
          counts.invalid_files += 1
          _problem(counts, f'{os.path.basename(path)}: missing column(s) {missing}')
          continue
        counts.files_read += 1
        for line, row in enumerate(reader, start=2):
          counts.rows += 1
          request_id = (row.get(REQUEST_ID_COLUMN) or '').strip()
          label = _parse_label(row.get(LABEL_COLUMN))
          try:
            index = int((row.get(EXAMPLE_COLUMN) or '0').strip() or 0)
          except ValueError:
            index = -1
          if not request_id or label is None or index < 0:
            counts.invalid_rows += 1
            _problem(counts, f'{os.path.basename(path)}:{line}: unusable row {dict(row)}')
            continue
          key = (request_id, index)
          if key in conflicted:
            continue
          if key in seen:
            if seen[key] == label:
              counts.duplicate_labels += 1
            else:
              conflicted.add(key)
              del seen[key]
              counts.conflicting_keys += 1
              _problem(counts, f'{os.path.basename(path)}:{line}: conflicting labels for '
                               f'{request_id!r} (example {index})')
            continue
          seen[key] = label
    except (OSError, UnicodeDecodeError, csv.Error) as e:
      counts.invalid_files += 1
      _problem(counts, f'{os.path.basename(path)}: unreadable ({e})')
  counts.labels = len(seen)
  return Feedback(seen, counts)


def join(keys: Iterable[Key], feedback: Feedback,
         keys_outside_window: Iterable[Key] = ()) -> List[Optional[int]]:
  """The label of each logged example (None: unlabeled); fills the join counts of `feedback`.

  A key logged several times in the window (a client retry with the same id) gets the label on
  every copy.
  """
  counts = feedback.counts
  keys = list(keys)
  labels = [feedback.labels.get(key) for key in keys]
  counts.joined_examples = sum(label is not None for label in labels)
  counts.unlabeled_examples = len(labels) - counts.joined_examples
  in_window = set(keys)
  outside = set(keys_outside_window) - in_window
  unmatched = [key for key in feedback.labels if key not in in_window]
  counts.labels_outside_window = sum(key in outside for key in unmatched)
  counts.labels_unknown = len(unmatched) - counts.labels_outside_window
  return labels


def write_feedback(path: str, labels: Iterable[Tuple[str, int]],
                   examples: Optional[Iterable[int]] = None) -> str:
  """Writes a feedback file atomically (hidden temporary file, then rename); returns the path.

  `labels`: (request id, label) pairs; `examples`: example indexes, if requests held several.
  A helper for tests and for `loopline feedback`.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, '.' + os.path.basename(path) + '.tmp')
  rows = list(labels)
  indexes = list(examples) if examples is not None else None
  with open(temporary, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow([REQUEST_ID_COLUMN, LABEL_COLUMN] + ([EXAMPLE_COLUMN] if indexes else []))
    for i, (request_id, label) in enumerate(rows):
      writer.writerow([request_id, int(label)] + ([indexes[i]] if indexes else []))
  os.replace(temporary, path)
  return path


def label_counts(labels: Iterable[Optional[int]]) -> Dict[str, int]:
  counter = collections.Counter('unlabeled' if v is None else str(v) for v in labels)
  return dict(sorted(counter.items()))
