"""`loopline replay` and `loopline feedback`: production traffic, then its ground truth, later.

  loopline replay [--spans 6-8] [--scenario fare_inflation] [--protocol rest|grpc]
                  [--host 127.0.0.1] [--port 8501] [--concurrency 8] [--rate 200] [--limit N]
  loopline feedback --replay REPLAY_ID [--fraction 1.0] [--seed 0]

A replay writes `<home>/replays/<replay id>/ground_truth.csv` (request id -> label, never sent to
the server); `feedback` delivers those labels, all or a random fraction, as a feedback file under
`<home>/feedback/`, which the serving-log example generator joins to the logged requests.
"""
import csv
import os
import random
import time
from typing import Dict, List, Optional

from components.serving_log_gen import feedback as feedback_lib
from loopline import home as home_lib
from loopline import replay as replay_lib
from loopline import scenarios
from loopline import spans as spans_lib
from models import features

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
  from loopline import examples as examples_lib
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


def _cmd_replay(args) -> int:
  from pipeline.config import PipelineConfig
  config = PipelineConfig(home=home_lib.resolve_home(args.home))
  rows = load_rows(args.data_root or config.data_root, *(args.spans or spans_lib.FUTURE_SPANS),
                   limit=args.limit)
  result = run_replay(config.home, rows, args.scenario, args.protocol, args.host,
                      args.port or (8501 if args.protocol == 'rest' else 8500),
                      args.concurrency, args.rate, args.seed, config.schema_path, progress=print)
  print(result.summary())
  print(f'ground truth kept in {replay_dir(config.home, result.replay_id)}; deliver it with '
        f'`loopline feedback --replay {result.replay_id}`')
  return 0 if result.succeeded or args.scenario != 'none' else 1


def _cmd_feedback(args) -> int:
  path = deliver_feedback(home_lib.resolve_home(args.home), args.replay, args.fraction, args.seed)
  print(f'ground truth delivered: {path}')
  return 0


def register(subparsers) -> None:
  from loopline.cli import parse_span_range
  replay_parser = subparsers.add_parser('replay', help='send held-back spans to the server')
  replay_parser.add_argument('--spans', type=parse_span_range,
                             help='spans to replay (default: the future spans 6-8)')
  replay_parser.add_argument('--scenario', default='none', choices=scenarios.names())
  replay_parser.add_argument('--protocol', default='rest', choices=('rest', 'grpc'))
  replay_parser.add_argument('--host', default='127.0.0.1')
  replay_parser.add_argument('--port', type=int, help='default 8501 (REST) / 8500 (gRPC)')
  replay_parser.add_argument('--concurrency', type=int, default=8)
  replay_parser.add_argument('--rate', type=float, default=0.0,
                             help='requests per second (0: as fast as the server answers)')
  replay_parser.add_argument('--limit', type=int, help='replay at most this many rows')
  replay_parser.add_argument('--seed', type=int, default=0)
  replay_parser.add_argument('--data-root', help='directory of span-N/version-V/*.csv')
  replay_parser.set_defaults(func=_cmd_replay)

  feedback_parser = subparsers.add_parser('feedback', help='deliver a replay\'s ground truth')
  feedback_parser.add_argument('--replay', required=True, help='replay id (see `loopline replay`)')
  feedback_parser.add_argument('--fraction', type=float, default=1.0,
                               help='share of the labels that arrive (default: all)')
  feedback_parser.add_argument('--seed', type=int, default=0)
  feedback_parser.set_defaults(func=_cmd_feedback)
