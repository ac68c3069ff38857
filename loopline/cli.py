"""`loopline`: the command line of the whole loop.

  loopline [--home DIR] loop [--quick]          (the whole loop: `make run`)
  loopline [--home DIR] train [--quick] [--spans 1-5] [--no-tuning] ...
  loopline [--home DIR] monitor [--last-seconds N | --window-start T --window-end T]
  loopline [--home DIR] schema draft [--spans 1-5] [--out PATH]
  loopline data split

Everything a command writes lives under the home directory (`./loopline_home`, or
$LOOPLINE_HOME, or --home). Exit codes: 0 done, 1 failed, 2 bad input, 3 stopped by the data gate.
"""
import argparse
import os
import sys
import time
import warnings

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DATA_GATE = 1, 2, 3


def _quiet_imports() -> None:
  """TensorFlow and Google client libraries are loud at import; a CLI should not be."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  warnings.filterwarnings('ignore', category=UserWarning)


def parse_span_range(text: str) -> tuple:
  """'3' -> (3, 3); '1-5' -> (1, 5)."""
  try:
    first, _, last = text.partition('-')
    span_range = (int(first), int(last or first))
  except ValueError:
    raise argparse.ArgumentTypeError(f'span range must look like 1-5 or 3, got {text!r}')
  if span_range[0] < 0 or span_range[1] < span_range[0]:
    raise argparse.ArgumentTypeError(f'span range {text!r} is empty or negative')
  return span_range


def _train_config(args):
  from loopline import home as home_lib
  from pipeline.config import PipelineConfig
  overrides = {}
  if args.spans:
    overrides['first_span'], overrides['last_span'] = args.spans
  if args.data_root:
    overrides['data_root'] = args.data_root
  if args.schema:
    overrides['schema_path'] = args.schema
  if args.no_tuning:
    overrides['enable_tuning'] = False
  for option in ('max_trials', 'train_steps', 'min_auc'):
    if getattr(args, option) is not None:
      overrides[option] = getattr(args, option)
  if args.beam_arg:
    overrides['beam_pipeline_args'] = tuple(args.beam_arg)
  home = home_lib.resolve_home(args.home)
  if args.quick:
    return PipelineConfig.quick(home, **overrides)
  return PipelineConfig(home=home, **overrides)


def check_inputs(config) -> None:
  """Bad input is reported before TFX starts: data range, schema file."""
  from loopline import spans as spans_lib
  if '://' not in config.data_root:
    spans_lib.check_span_range(config.data_root, config.first_span, config.last_span)
  if '://' not in config.schema_path:
    if not os.path.isfile(config.schema_path):
      raise ValueError(f'schema file {config.schema_path!r} does not exist')
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format
    try:
      schema = tfdv.load_schema_text(config.schema_path)
    except text_format.ParseError as e:
      raise ValueError(f'schema file {config.schema_path!r} is malformed: {e}') from e
    if not schema.feature:
      raise ValueError(f'schema file {config.schema_path!r} declares no feature')


def train(config, out=sys.stdout, holdout_spans=None, holdout_data_root=None) -> dict:
  """Runs the training pipeline with LocalDagRunner; returns the run summary.

  `holdout_spans`: later spans (under `holdout_data_root`, default the config's data root) that
  the trained model is scored on: the time-ordered holdout.
  Raises DataGateError (blocking anomalies), ValueError/SpanError (bad input).
  """
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from components.data_gate.executor import DataGateError
  from pipeline import holdout, progress, run_summary, training_pipeline
  check_inputs(config)
  log_file = os.path.join(config.home, 'logs', f'train-{time.strftime("%Y%m%d-%H%M%S")}.log')
  print(f'Training pipeline {config.pipeline_name}', file=out)
  for line in config.describe():
    print(f'  {line}', file=out)
  print(f'  full logs: {log_file}', file=out, flush=True)
  started = time.monotonic()
  try:
    with progress.show_progress(log_file):
      LocalDagRunner().run(training_pipeline.create_pipeline(
          config, config.enable_tuning or training_pipeline.tuned_hyperparameters_exist(config)))
  except DataGateError:
    raise
  except Exception as e:  # TFX wraps executor errors; surface the data gate's own message.
    cause = e
    while cause is not None and not isinstance(cause, DataGateError):
      cause = cause.__cause__ or cause.__context__
    if cause is not None:
      raise cause from None
    raise
  summary = run_summary.collect(config)
  summary['wall_seconds'] = time.monotonic() - started
  holdout_root = holdout_data_root or config.data_root
  if holdout_spans and summary.get('model_uri') and '://' not in holdout_root:
    summary['holdout'] = holdout.evaluate_on_spans(summary['model_uri'], holdout_root,
                                                   holdout_spans[0], holdout_spans[1],
                                                   config.schema_path)
  return summary


def stage_in_registry(config, summary: dict) -> None:
  """After a run that pushed: the version enters staging (canary), or production when there is
  none yet (registry/README.md). The outcome is added to the summary as `registry`."""
  if summary.get('pushed_version'):
    summary['registry'] = _stage_in_registry(config, summary['pushed_version'])


def _stage_in_registry(config, version) -> str:
  import registry
  try:
    transition = registry.stage_pushed_model(config, version)
  except registry.RegistryError as e:        # training succeeded; the registry refused
    return f'not staged: {e}'
  if transition is None:
    return f'version {version} already registered (stage unchanged)'
  return f'{transition.action}: version {transition.version} -> {transition.to_stage}'


def _cmd_train(args) -> int:
  from components.data_gate.executor import DataGateError
  from loopline import spans as spans_lib
  from pipeline import run_summary
  config = _train_config(args)
  try:
    summary = train(config, holdout_spans=args.holdout_spans or spans_lib.FUTURE_SPANS)
    stage_in_registry(config, summary)
  except DataGateError as e:
    print(f'\n{e}', file=sys.stderr)
    print('Nothing was trained or pushed. Fix the data (land a corrected span version) or '
          'review the severity policy.', file=sys.stderr)
    return EXIT_DATA_GATE
  print(f'\nDone in {summary["wall_seconds"]:.0f}s.\n' + run_summary.format_summary(summary))
  return 0


def _cmd_monitor(args) -> int:
  from loopline import home as home_lib
  from pipeline import monitoring_run
  from pipeline.config import PipelineConfig
  config = PipelineConfig(home=home_lib.resolve_home(args.home))
  now = int(time.time())
  start = args.window_start if args.window_start is not None else (
      now - args.last_seconds if args.last_seconds else None)
  summary = monitoring_run.monitor(config, start, args.window_end)
  print(monitoring_run.format_monitoring(summary))
  return 0


def _cmd_loop(args) -> int:
  from loopline import home as home_lib
  from pipeline import loop
  from pipeline.config import PipelineConfig
  home = home_lib.resolve_home(args.home)
  config = PipelineConfig.quick(home) if args.quick else PipelineConfig(home=home)
  started = time.monotonic()
  results = loop.run_loop(config, replay_limit=args.replay_limit)
  critical = sorted({f for v in results['drifted']['versions'].values()
                     for f in v.get('critical_features', '').split(',') if f})
  print(f'\nThe loop closed in {time.monotonic() - started:.0f}s: model '
        f'{results["first_version"]} (stable) -> critical drift on {", ".join(critical)} -> '
        f'span {results["new_span"]} -> model {results["canary_version"]} (canary, '
        f'{results["canary_replay"]["versions"].get(str(results["canary_version"]), 0)} of '
        f'{results["canary_replay"]["sent"]} requests).')
  if results['canary']['retrain']:
    print('The canary window raised a retraining trigger too (its traffic drifted for both '
          'versions); a loop retrains once: the monitoring review (notebook 4) decides what '
          'comes next, before any `loopline models promote`.')
  return 0


def _cmd_schema_draft(args) -> int:
  from loopline import home as home_lib
  from pipeline import schema_draft
  from pipeline.config import PipelineConfig
  config = PipelineConfig(home=home_lib.resolve_home(args.home))
  first, last = args.spans or (config.first_span, config.last_span)
  out = args.out or os.path.join(config.home, 'schema_draft', 'schema.pbtxt')
  differences = schema_draft.write_draft(args.data_root or config.data_root, first, last,
                                         config.schema_path, out)
  print(f'Draft schema from spans {first}-{last} written to {out}')
  print(f'Compared with the curated {config.schema_path}:')
  for line in differences or ['no difference in features, types, domains or presence']:
    print(f'  - {line}')
  return 0


def _cmd_data_split(args) -> int:
  from loopline import spans as spans_lib
  written = spans_lib.write_spans(args.raw, args.out)
  for span, path in written.items():
    kind = 'training' if span <= spans_lib.TRAINING_SPANS[1] else 'future (held back)'
    print(f'span {span} ({spans_lib.span_label(span)}, {kind}): {path}')
  return 0


def build_parser() -> argparse.ArgumentParser:
  from loopline import spans as spans_lib
  parser = argparse.ArgumentParser(prog='loopline', description=__doc__.split('\n')[0])
  parser.add_argument('--home', help='home directory (default: $LOOPLINE_HOME or ./loopline_home)')
  commands = parser.add_subparsers(dest='command', required=True)

  train_parser = commands.add_parser('train', help='run the training pipeline (LocalDagRunner)')
  train_parser.add_argument('--quick', action='store_true',
                            help='smoke run: few steps, a two-trial search')
  train_parser.add_argument('--spans', type=parse_span_range,
                            help=f'span range to train on (default '
                                 f'{spans_lib.TRAINING_SPANS[0]}-{spans_lib.TRAINING_SPANS[1]})')
  train_parser.add_argument('--holdout-spans', type=parse_span_range,
                            help='later spans to score the model on (default: the future spans)')
  train_parser.add_argument('--no-tuning', action='store_true',
                            help='skip the Tuner; reuse the last best hyperparameters')
  train_parser.add_argument('--max-trials', type=int, help='tuner trials')
  train_parser.add_argument('--train-steps', type=int, help='trainer steps')
  train_parser.add_argument('--min-auc', type=float, help='absolute AUC blessing threshold')
  train_parser.add_argument('--data-root', help='directory of span-N/version-V/*.csv')
  train_parser.add_argument('--schema', help='curated schema.pbtxt')
  train_parser.add_argument('--beam-arg', action='append',
                            help='Beam pipeline argument (repeatable), replaces the defaults')
  train_parser.set_defaults(func=_cmd_train)

  monitor_parser = commands.add_parser(
      'monitor', help='run the monitoring pipeline on a window of the request logs')
  monitor_parser.add_argument('--window-start', type=int, help='unix seconds (inclusive)')
  monitor_parser.add_argument('--window-end', type=int, help='unix seconds (exclusive)')
  monitor_parser.add_argument('--last-seconds', type=int,
                              help='window = the last N seconds (instead of --window-start)')
  monitor_parser.set_defaults(func=_cmd_monitor)

  loop_parser = commands.add_parser(
      'loop', help='the whole loop: train, serve, replay, feedback, monitor, retrain, canary')
  loop_parser.add_argument('--quick', action='store_true', help='quick training settings')
  loop_parser.add_argument('--replay-limit', type=int,
                           help='replay at most this many rows per replay')
  loop_parser.set_defaults(func=_cmd_loop)

  schema_parser = commands.add_parser('schema', help='schema tools')
  schema_commands = schema_parser.add_subparsers(dest='schema_command', required=True)
  draft_parser = schema_commands.add_parser('draft', help='infer a draft schema for review')
  draft_parser.add_argument('--spans', type=parse_span_range)
  draft_parser.add_argument('--data-root')
  draft_parser.add_argument('--out')
  draft_parser.set_defaults(func=_cmd_schema_draft)

  data_parser = commands.add_parser('data', help='data tools')
  data_commands = data_parser.add_subparsers(dest='data_command', required=True)
  split_parser = data_commands.add_parser('split', help='split the raw CSV into spans')
  split_parser.add_argument('--raw', default=spans_lib.RAW_CSV)
  split_parser.add_argument('--out', default=spans_lib.SPANS_DIR)
  split_parser.set_defaults(func=_cmd_data_split)

  for register in _subsystem_commands():
    register(commands)
  return parser


def _subsystem_commands():
  """Subcommands that live with their subsystem: each module has `register(subparsers)`."""
  from loopline import traffic_cli
  from pipeline import kubeflow
  from registry import cli as registry_cli
  from serving import cli as serving_cli
  return [serving_cli.register, traffic_cli.register, kubeflow.register, registry_cli.register]


def main(argv=None) -> int:
  _quiet_imports()
  args = build_parser().parse_args(argv)
  from loopline.spans import SpanError
  try:
    return args.func(args)
  except (SpanError, ValueError, FileNotFoundError) as e:
    print(f'loopline: error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == '__main__':
  sys.exit(main())
