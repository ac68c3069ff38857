"""`loopline serve`: the model server on the pipeline's serving directory.

Wired into the `loopline` console script through `register(subparsers)`; `python -m serving serve`
works without it.
"""
import argparse
import logging
import os
import sys
import warnings

from core import home as home_lib
from serving.config import (DEFAULT_GRPC_PORT, DEFAULT_HOST, DEFAULT_REST_PORT, BatchingConfig,
                            ConfigError, PrivacyConfig, RequestLogConfig, ServerConfig,
                            single_model_proto)
from serving.routing import parse_weights

HASH_KEY_ENV_VAR = 'LOOPLINE_LOG_HASH_KEY'
# The registry's models.config (<home>/serving/models.config) is re-read this often by default.
REGISTRY_CONFIG_POLL_SECONDS = 1.0


def _canary(spec: str) -> tuple[str, dict[str, float]]:
  model, sep, weights = spec.partition(':')
  if not sep:
    raise argparse.ArgumentTypeError(f'{spec!r}: expected MODEL:label=weight,label=weight')
  try:
    return model, parse_weights(weights)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _rate(text: str) -> float:
  value = float(text)
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f'{text} is not within [0, 1]')
  return value


def _workers(text: str) -> int:
  """`auto` (the cores this process may run on) or a positive integer."""
  if text == 'auto':
    return len(os.sched_getaffinity(0))
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f'{text!r}: expected a positive integer or "auto"')
  return int(text)


def add_arguments(parser: argparse.ArgumentParser):
  models = parser.add_argument_group('models (TF Serving flags)')
  models.add_argument('--model-config-file', help='TF Serving models.config (text '
                      'ModelServerConfig). Default: <home>/serving/models.config when it exists '
                      '(the registry writes it: versions and labels), else --model-name from '
                      '--model-base-path.')
  models.add_argument('--model-config-file-poll-wait-seconds', type=float,
                      help='Re-read the config file this often (0: read once). Default: 0 for '
                      'an explicit file, 1 for the registry\'s, so promotions apply live.')
  models.add_argument('--model-name', default=home_lib.MODEL_NAME)
  models.add_argument('--model-base-path',
                      help='Default: <home>/serving/<model-name> (where the Pusher pushes).')
  models.add_argument('--file-system-poll-wait-seconds', type=float, default=1.0)
  models.add_argument('--model-root', help='Base paths must resolve inside this directory '
                      '(default: <home>/serving); relative base paths are taken under it.')
  models.add_argument('--allow-any-base-path', action='store_true',
                      help='Do not restrict base paths to --model-root.')
  net = parser.add_argument_group('network')
  net.add_argument('--rest-host', default=DEFAULT_HOST,
                   help='Bind address for REST (default loopback; 0.0.0.0 exposes it).')
  net.add_argument('--rest-port', type=int, default=DEFAULT_REST_PORT)
  net.add_argument('--grpc-host', default=DEFAULT_HOST)
  net.add_argument('--grpc-port', type=int, default=DEFAULT_GRPC_PORT)
  net.add_argument('--max-body-bytes', type=int, default=ServerConfig.max_body_bytes)
  net.add_argument('--mode', choices=('embedded', 'gateway'), default='embedded')
  net.add_argument('--upstream', help='gateway mode: TF Serving gRPC address, e.g. localhost:8500')
  net.add_argument('--workers', type=_workers, default=1, metavar='N|auto',
                   help='Server processes sharing the REST and gRPC ports (SO_REUSEPORT), each '
                   'with its own models and batcher, one request-log writer for all; "auto": one '
                   'per core this process may use.')
  routing = parser.add_argument_group('canary routing')
  routing.add_argument('--canary', type=_canary, action='append', default=[],
                       metavar='MODEL:LABEL=W,...', help='Split requests naming only MODEL '
                       'across version labels, e.g. big_tipper:stable=90,canary=10.')
  routing.add_argument('--sticky-header', help='Requests carrying this header (or gRPC metadata '
                       'key) always get the same label, e.g. X-Routing-Key.')
  routing.add_argument('--routing-seed', type=int, help='Reproducible routing: the same requests '
                       'in the same order (or with the same routing keys) get the same labels.')
  batching = parser.add_argument_group('batching')
  batching.add_argument('--no-batching', action='store_true')
  batching.add_argument('--max-batch-size', type=int, default=BatchingConfig.max_batch_size)
  batching.add_argument('--batch-timeout-micros', type=int,
                        default=BatchingConfig.batch_timeout_micros)
  batching.add_argument('--num-batch-threads', type=int, default=BatchingConfig.num_batch_threads)
  batching.add_argument('--max-enqueued-batches', type=int,
                        default=BatchingConfig.max_enqueued_batches)
  logs = parser.add_argument_group('request logging (PredictionLog TFRecords)')
  logs.add_argument('--request-log-dir', help='Default: <home>/request_logs.')
  logs.add_argument('--no-request-log', action='store_true')
  logs.add_argument('--log-sampling-rate', type=_rate, default=RequestLogConfig.sampling_rate)
  logs.add_argument('--log-max-file-mb', type=float, default=64.0)
  logs.add_argument('--log-max-file-age-seconds', type=float,
                    default=RequestLogConfig.max_file_age_seconds)
  logs.add_argument('--log-buffer-records', type=int, default=RequestLogConfig.buffer_records)
  logs.add_argument('--log-retention-days', type=float, default=7.0)
  logs.add_argument('--log-retention-max-gb', type=float, default=2.0)
  logs.add_argument('--redact-feature', action='append', default=[],
                    help='Remove this tf.Example feature from logged requests (repeatable).')
  logs.add_argument('--hash-feature', action='append', default=[],
                    help='Replace this feature by keyed hashes in logged requests (repeatable).')
  logs.add_argument('--log-hash-key-file', help=f'Secret key for --hash-feature (else '
                    f'${HASH_KEY_ENV_VAR}).')


def config_from_args(args) -> ServerConfig:
  """The ServerConfig the parsed arguments describe."""
  home = home_lib.resolve_home(getattr(args, 'home', None))
  serving_dir = home_lib.serving_dir(home)
  model_root = None if args.allow_any_base_path else os.path.abspath(args.model_root or
                                                                     serving_dir)
  model_config = None
  model_config_file = args.model_config_file
  poll_seconds = args.model_config_file_poll_wait_seconds
  registry_config = home_lib.serving_config_path(home)
  if (not model_config_file and not args.model_base_path and args.mode == 'embedded' and
      os.path.isfile(registry_config)):
    model_config_file = registry_config
    poll_seconds = REGISTRY_CONFIG_POLL_SECONDS if poll_seconds is None else poll_seconds
  if not model_config_file and args.mode == 'embedded':
    base_path = args.model_base_path or os.path.join(serving_dir, args.model_name)
    model_config = single_model_proto(args.model_name, os.path.abspath(base_path))
  hash_key = b''
  if args.log_hash_key_file:
    with open(args.log_hash_key_file, 'rb') as f:
      hash_key = f.read().strip()
  elif os.environ.get(HASH_KEY_ENV_VAR):
    hash_key = os.environ[HASH_KEY_ENV_VAR].encode('utf-8')
  return ServerConfig(
      mode=args.mode,
      model_config=model_config,
      model_config_file=model_config_file,
      model_config_file_poll_wait_seconds=poll_seconds or 0.0,
      file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
      model_root=model_root,
      upstream_grpc=args.upstream,
      rest_host=args.rest_host, rest_port=args.rest_port,
      grpc_host=args.grpc_host, grpc_port=args.grpc_port,
      max_body_bytes=args.max_body_bytes,
      canary_weights=dict(args.canary),
      sticky_header=args.sticky_header,
      routing_seed=args.routing_seed,
      batching=BatchingConfig(not args.no_batching, args.max_batch_size,
                              args.batch_timeout_micros, args.num_batch_threads,
                              args.max_enqueued_batches),
      request_log=RequestLogConfig(
          directory=None if args.no_request_log else (args.request_log_dir or
                                                      home_lib.request_log_dir(home)),
          sampling_rate=args.log_sampling_rate,
          max_file_bytes=int(args.log_max_file_mb * 2**20),
          max_file_age_seconds=args.log_max_file_age_seconds,
          buffer_records=args.log_buffer_records,
          retention_max_age_seconds=args.log_retention_days * 86400,
          retention_max_total_bytes=int(args.log_retention_max_gb * 2**30)),
      privacy=PrivacyConfig(tuple(args.redact_feature), tuple(args.hash_feature), hash_key),
      workers=args.workers)


def serve(args) -> int:
  """The `serve` command: start, print where it listens, run until SIGTERM/SIGINT."""
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  try:
    config = config_from_args(args)
    config.validate()
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # Keep TensorFlow's start-up noise down.
    warnings.filterwarnings('ignore', category=FutureWarning)
    announce = lambda text: print(text, flush=True)
    if config.workers > 1:
      from serving import workers  # pylint: disable=import-outside-toplevel
      workers.run(config, announce)
      return 0
    from serving import server  # TensorFlow loads here, after the arguments are checked.
    server.run(config, announce)
  except (ConfigError, OSError) as e:
    print(f'loopline serve: {e}', file=sys.stderr)
    return 1
  except Exception as e:  # pylint: disable=broad-except  # e.g. a label on a missing version.
    from serving.errors import ServingError
    if isinstance(e, ServingError):
      print(f'loopline serve: {e.message}', file=sys.stderr)
      return 1
    raise
  return 0


def register(subparsers):
  """Add `serve` to the `loopline` command's subparsers."""
  parser = subparsers.add_parser(
      'serve', help='Serve pushed models with TF Serving\'s REST and gRPC APIs.',
      description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_arguments(parser)
  parser.set_defaults(func=serve)
  return parser


def main(argv=None):
  """`python -m serving [--home DIR] serve ...`."""
  parser = argparse.ArgumentParser(prog='python -m serving')
  parser.add_argument('--home', help='Loopline home (default $LOOPLINE_HOME or ./loopline_home).')
  subparsers = parser.add_subparsers(dest='command', required=True)
  register(subparsers)
  args = parser.parse_args(argv)
  sys.exit(args.func(args))
