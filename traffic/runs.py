"""A replay run in a home and its ground truth delivered later: rows of spans sent through a
scenario to a server (`<home>/replays/<replay id>/`, the labels kept back), then those labels,
all or a random fraction, written as a feedback file under `<home>/feedback/`, which the
serving-log example generator joins to the logged requests.
"""
import csv
import os
import random
import time
from typing import Dict, List, Optional

from components.serving_log_gen import feedback as feedback_lib
from core import home as home_lib
from core import spans as spans_lib
from models import features
from traffic import replay as replay_lib
from traffic import scenarios


REPLAYS_DIR = 'replays'


def replay_dir(home: str, replay_id: str) -> str:
  return os.path.join(home, REPLAYS_DIR, replay_id)


def load_rows(data_root: str, first_span: int, last_span: int,
              limit: Optional[int] = None) -> List[Dict[str, str]]:
  versions = spans_lib.check_span_range(data_root, first_span, last_span)
  rows: List[Dict[str, str]] = []
  for span, version in versions.items():
    with open(spans_lib.span_path(data_root, span, version), newline='') as f:
      rows.extend(csv.DictReader(f))
  return rows[:limit] if limit else rows


def run_replay(home: str, rows: List[Dict[str, str]], scenario_name: str, protocol: str,
               host: str, port: int, concurrency: int, rate: float, seed: int, schema_path: str,
               progress=None) -> replay_lib.ReplayResult:
  """Replays rows through a scenario; the ground truth stays in the replay's manifest."""
  import tensorflow_data_validation as tfdv
  from core import examples as examples_lib
  scenario = scenarios.get(scenario_name)
  rows = scenario.apply(rows, seed=seed)
  types = scenario.example_types(examples_lib.feature_types(tfdv.load_schema_text(schema_path)))
  types.pop(features.LABEL_KEY, None)
  sender_class = {'rest': replay_lib.RestSender, 'grpc': replay_lib.GrpcSender}[protocol]
  sender = sender_class(host, port, home_lib.MODEL_NAME)
  replay_id = f'{scenario_name}-{time.strftime("%Y%m%dT%H%M%S")}-{seed}'
  return replay_lib.replay(
      rows, sender.send, lambda row: examples_lib.row_to_example(row, types).SerializeToString(),
      replay_id, scenario_name, replay_dir(home, replay_id), concurrency=concurrency, rate=rate,
      progress=progress)


def deliver_feedback(home: str, replay_id: str, fraction: float = 1.0, seed: int = 0) -> str:
  """Writes the replay's labels (or a random fraction of them) as a feedback file."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f'--fraction must be in (0, 1], got {fraction}')
  source = replay_dir(home, replay_id)
  if not os.path.isfile(os.path.join(source, replay_lib.MANIFEST_FILE)):
    known = sorted(os.listdir(os.path.join(home, REPLAYS_DIR))) if os.path.isdir(
        os.path.join(home, REPLAYS_DIR)) else []
    raise ValueError(f'no replay {replay_id!r} under {home} (known: {known or "none"})')
  rng = random.Random(seed)
  labels = [(row['request_id'], int(row[features.LABEL_KEY]))
            for row in replay_lib.read_ground_truth(source) if rng.random() < fraction]
  return feedback_lib.write_feedback(
      os.path.join(home_lib.feedback_dir(home), f'{replay_id}.csv'), labels)
