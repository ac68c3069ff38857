"""`loopline replay` and `loopline feedback`: production traffic, then its ground truth, later.

  loopline replay [--spans 6-8] [--scenario fare_inflation] [--protocol rest|grpc]
                  [--host 127.0.0.1] [--port 8501] [--concurrency 8] [--rate 200] [--limit N]
  loopline feedback --replay REPLAY_ID [--fraction 1.0] [--seed 0]

A replay writes `<home>/replays/<replay id>/ground_truth.csv` (request id -> label, never sent to
the server); `feedback` delivers those labels, all or a random fraction, as a feedback file under
`<home>/feedback/`, which the serving-log example generator joins to the logged requests.
"""
from core import home as home_lib
from core import spans as spans_lib
from traffic import runs
from traffic import scenarios


def _cmd_replay(args) -> int:
  from pipeline.config import PipelineConfig
  config = PipelineConfig(home=home_lib.resolve_home(args.home))
  rows = runs.load_rows(args.data_root or config.data_root,
                        *(args.spans or spans_lib.FUTURE_SPANS), limit=args.limit)
  result = runs.run_replay(config.home, rows, args.scenario, args.protocol, args.host,
                           args.port or (8501 if args.protocol == 'rest' else 8500),
                           args.concurrency, args.rate, args.seed, config.schema_path,
                           progress=print)
  print(result.summary())
  print(f'ground truth kept in {runs.replay_dir(config.home, result.replay_id)}; deliver it with '
        f'`loopline feedback --replay {result.replay_id}`')
  return 0 if result.succeeded or args.scenario != 'none' else 1


def _cmd_feedback(args) -> int:
  path = runs.deliver_feedback(home_lib.resolve_home(args.home), args.replay, args.fraction,
                               args.seed)
  print(f'ground truth delivered: {path}')
  return 0


def register(subparsers) -> None:
  replay_parser = subparsers.add_parser('replay', help='send held-back spans to the server')
  replay_parser.add_argument('--spans', type=spans_lib.parse_span_range,
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
