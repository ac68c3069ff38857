"""`loopline`: the command line of the whole loop.

  loopline [--home DIR] loop [--quick]          (the whole loop: `make run`)
  loopline [--home DIR] train [--quick] [--spans 1-5] [--no-tuning] ...
  loopline [--home DIR] validate [--quick] [--spans 1-6]   (the training pipeline to its data gate)
  loopline [--home DIR] monitor [--last-seconds N | --window-start T --window-end T]
  loopline [--home DIR] schema draft [--spans 1-5] [--out PATH]
  loopline data split

Everything a command writes lives under the home directory (`./loopline_home`, or
$LOOPLINE_HOME, or --home); ML Metadata too, unless $LOOPLINE_MLMD_URL names a MySQL database
(mysql://USER:PASSWORD@HOST:PORT/DB). Exit codes: 0 done, 1 failed, 2 bad input, 3 stopped by
the data gate.
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


def _train_config(args):
  from core import home as home_lib
  from pipeline.config import PipelineConfig
  overrides = {}
  if args.spans:
    overrides['first_span'], overrides['last_span'] = args.spans
  if args.data_root:
    overrides['data_root'] = args.data_root
  if args.schema:
    overrides['schema_path'] = args.schema
  if getattr(args, 'no_tuning', False):
    overrides['enable_tuning'] = False
  for option in ('max_trials', 'train_steps', 'min_auc'):
    if getattr(args, option, None) is not None:
      overrides[option] = getattr(args, option)
  if args.beam_arg:
    overrides['beam_pipeline_args'] = tuple(args.beam_arg)
  if args.severity_policy:
    from components.data_gate.policy import SeverityPolicy
    overrides['severity_policy'] = SeverityPolicy.from_file(args.severity_policy)
  return PipelineConfig.for_home(home_lib.resolve_home(args.home), quick=args.quick, **overrides)


def _cmd_train(args) -> int:
  from components.data_gate.executor import DataGateError
  from pipeline import run_summary, training_run
  config = _train_config(args)
  training_run.check_inputs(config)
  holdout_spans = args.holdout_spans
  if holdout_spans is None:
    holdout_spans, note = training_run.default_holdout(config)
    if note:
      print(f'Note: {note}; the run goes on without one.')
  try:
    summary = training_run.train(config, holdout_spans=holdout_spans)
    training_run.stage_in_registry(config, summary)
  except DataGateError as e:
    return _stopped_by_the_gate(e)
  print(f'\nDone in {summary["wall_seconds"]:.0f}s.\n' + run_summary.format_summary(summary))
  return 0


def _stopped_by_the_gate(error) -> int:
  print(f'\n{error}', file=sys.stderr)
  print('Nothing was trained or pushed. Fix the data (land a corrected span version) or '
        'review the severity policy.', file=sys.stderr)
  return EXIT_DATA_GATE


def _cmd_validate(args) -> int:
  from components.data_gate.executor import DataGateError
  from pipeline import run_summary, training_run
  config = _train_config(args)
  try:
    summary = training_run.validate(config)
  except DataGateError as e:
    return _stopped_by_the_gate(e)
  print(f'\nDone in {summary["wall_seconds"]:.0f}s.\n' + run_summary.format_validation(summary))
  return 0


def _cmd_monitor(args) -> int:
  from core import home as home_lib
  from pipeline import monitoring_run
  from pipeline.config import PipelineConfig
  config = PipelineConfig.for_home(home_lib.resolve_home(args.home))
  now = int(time.time())
  start = args.window_start if args.window_start is not None else (
      now - args.last_seconds if args.last_seconds else None)
  summary = monitoring_run.monitor(config, start, args.window_end)
  print(monitoring_run.format_monitoring(summary))
  return 0


def _cmd_loop(args) -> int:
  from core import home as home_lib
  from pipeline import loop
  from pipeline.config import PipelineConfig
  config = PipelineConfig.for_home(home_lib.resolve_home(args.home), quick=args.quick)
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
  from core import home as home_lib
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
  from core import spans as spans_lib
  written = spans_lib.write_spans(args.raw, args.out)
  for span, path in written.items():
    kind = 'training' if span <= spans_lib.TRAINING_SPANS[1] else 'future (held back)'
    print(f'span {span} ({spans_lib.span_label(span)}, {kind}): {path}')
  return 0


def _add_data_options(parser) -> None:
  """The options of `train` and `validate` that say which data and how it is judged."""
  from core import spans as spans_lib
  parser.add_argument('--spans', type=spans_lib.parse_span_range,
                      help=f'span range (default '
                           f'{spans_lib.TRAINING_SPANS[0]}-{spans_lib.TRAINING_SPANS[1]}); the '
                           f'last one is compared with the ones before it')
  parser.add_argument('--data-root', help='directory of span-N/version-V/*.csv')
  parser.add_argument('--schema', help='curated schema.pbtxt')
  parser.add_argument('--severity-policy', metavar='FILE',
                      help="the data gate's severity policy, JSON (components/data_gate/"
                           'policy.py; e.g. without the COMPARATOR_* types in "warning_types", '
                           'drift of the newest span blocks)')
  parser.add_argument('--beam-arg', action='append',
                      help='Beam pipeline argument (repeatable), replaces the defaults')


def build_parser() -> argparse.ArgumentParser:
  from core import spans as spans_lib
  parser = argparse.ArgumentParser(prog='loopline', description=__doc__.split('\n')[0])
  parser.add_argument('--home', help='home directory (default: $LOOPLINE_HOME or ./loopline_home)')
  commands = parser.add_subparsers(dest='command', required=True)

  train_parser = commands.add_parser('train', help='run the training pipeline (LocalDagRunner)')
  train_parser.add_argument('--quick', action='store_true',
                            help='smoke run: few steps, a two-trial search')
  _add_data_options(train_parser)
  train_parser.add_argument('--holdout-spans', type=spans_lib.parse_span_range,
                            help='later spans to score the model on, checked before the run '
                                 '(default: the future spans '
                                 f'{spans_lib.FUTURE_SPANS[0]}-{spans_lib.FUTURE_SPANS[1]} when '
                                 'they exist and do not train)')
  train_parser.add_argument('--no-tuning', action='store_true',
                            help='skip the Tuner; reuse the last best hyperparameters')
  train_parser.add_argument('--max-trials', type=int, help='tuner trials')
  train_parser.add_argument('--train-steps', type=int, help='trainer steps')
  train_parser.add_argument('--min-auc', type=float, help='absolute AUC blessing threshold')
  train_parser.set_defaults(func=_cmd_train)

  validate_parser = commands.add_parser(
      'validate', help='run the training pipeline up to its data gate: is the data fit to train '
                       'on? (exit 3 when the gate blocks)')
  _add_data_options(validate_parser)
  validate_parser.add_argument('--quick', action='store_true',
                               help="Beam in this process, as `train --quick` (whose cache it "
                                    "then fills)")
  validate_parser.set_defaults(func=_cmd_validate)

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
  draft_parser.add_argument('--spans', type=spans_lib.parse_span_range)
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
  from loopline import models_cli, traffic_cli
  from pipeline import kubeflow
  from serving import cli as serving_cli
  return [serving_cli.register, traffic_cli.register, kubeflow.register, models_cli.register]


def main(argv=None) -> int:
  _quiet_imports()
  args = build_parser().parse_args(argv)
  from core.spans import SpanError
  try:
    return args.func(args)
  except (SpanError, ValueError, FileNotFoundError) as e:
    print(f'loopline: error: {e}', file=sys.stderr)
    return EXIT_BAD_INPUT


if __name__ == '__main__':
  sys.exit(main())
