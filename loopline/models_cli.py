"""`loopline models ...` and `loopline lineage VERSION`: the model registry on the command line.

  loopline models list [--json] [--no-metrics]
  loopline models show VERSION|model:ID [--json]      (same as `loopline lineage VERSION`)
  loopline models history [--json]
  loopline models stage VERSION                        (what `loopline train` does after a push)
  loopline models promote VERSION [--reason TEXT] [--force] [--by NAME]
  loopline models rollback [--reason TEXT] [--force] [--by NAME]
  loopline models sync                                 (rewrite models.config from the registry)

Wired into the `loopline` console script through `register(subparsers)`. Exit codes: 0 done,
1 refused or conflicting change (nothing written), 2 unknown version.
"""
import argparse
import json
import sys

from registry import report
from registry.errors import RegistryError, UnknownVersionError

EXIT_REFUSED, EXIT_BAD_INPUT = 1, 2


def _registry(args, read_only: bool):
  """The home's registry (ML Metadata on MySQL with $LOOPLINE_MLMD_URL); `read_only`: opened so
  that a database user with SELECT alone can list, show and trace."""
  from core import home as home_lib
  from pipeline.config import PipelineConfig
  from registry.api import Registry
  return Registry(PipelineConfig.for_home(home_lib.resolve_home(getattr(args, 'home', None))),
                  read_only=read_only)


def _print_json(value) -> None:
  print(json.dumps(value, indent=2, sort_keys=True, default=str))


def _list(args, registry) -> int:
  snapshot = registry.snapshot()
  records = [r.as_dict() for r in registry.models(snapshot, metrics=not args.no_metrics)]
  notes = registry.notes(snapshot)
  if args.json:
    _print_json({'model_name': registry.model_name, 'serving_config': registry.config_path,
                 'production': snapshot.state.production, 'staging': snapshot.state.staging,
                 'labels': snapshot.labels, 'models': records, 'notes': notes})
  else:
    print(report.models_table(records, registry.model_name, notes))
  return 0


def _show(args, registry) -> int:
  info = registry.describe(args.version, metrics=not args.no_metrics)
  if args.json:
    _print_json(info)
  else:
    print(report.describe(info))
  return 0


def _history(args, registry) -> int:
  items = [t.as_dict() for t in registry.records.transitions()]
  if args.json:
    _print_json(items)
  else:
    print(report.transitions(items, registry.model_name))
  return 0


def _done(transition, registry, quiet_none: str) -> int:
  if transition is None:
    print(quiet_none)
    return 0
  print(report.transition_line(transition.as_dict()))
  labels = ', '.join(f'{name}={value}' for name, value in
                     (('stable', transition.stable_label), ('canary', transition.canary_label))
                     if value is not None) or 'none'
  print(f'{registry.config_path}: {labels}')
  return 0


def _stage(args, registry) -> int:
  from registry.api import default_actor
  transition = registry.apply(registry.plan_stage(args.version, restage_archived=True),
                              args.by or default_actor())
  return _done(transition, registry, f'version {args.version} already is staging or production; '
                                     'nothing changed')


def _promote(args, registry) -> int:
  transition = registry.apply(registry.plan_promote(args.version, args.reason or '', args.force),
                              args.by)
  return _done(transition, registry, '')


def _rollback(args, registry) -> int:
  transition = registry.apply(registry.plan_rollback(args.reason or '', args.force), args.by)
  return _done(transition, registry, '')


def _sync(args, registry) -> int:
  changed = registry.sync()
  print(f'{registry.config_path} {"rewritten from the registry" if changed else "already agrees"}')
  return 0


def _run(handler, read_only: bool = False):
  def run(args) -> int:
    try:
      return handler(args, _registry(args, read_only))
    except UnknownVersionError as e:
      print(f'loopline: error: {e}', file=sys.stderr)
      return EXIT_BAD_INPUT
    except RegistryError as e:
      print(f'loopline: {e}', file=sys.stderr)
      return EXIT_REFUSED
  return run


def _writer_options(parser) -> None:
  parser.add_argument('--reason', help='why (recorded in ML Metadata; required with --force)')
  parser.add_argument('--force', action='store_true',
                      help='override the not blessed / not pushed / not loadable refusals '
                           '(recorded)')
  parser.add_argument('--by', help='who (default: $LOOPLINE_ACTOR or user@host)')


def register(subparsers):
  """Add `models` and `lineage` to the `loopline` command's subparsers."""
  models = subparsers.add_parser('models', help='model registry: versions, stages, promotion',
                                 description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = models.add_subparsers(dest='models_command', required=True)

  list_parser = commands.add_parser('list', help='every model version with stage, metrics, '
                                                 'spans, hyperparameters and serving label')
  list_parser.add_argument('--json', action='store_true')
  list_parser.add_argument('--no-metrics', action='store_true',
                           help='skip reading evaluation metrics (faster: no TFMA import)')
  list_parser.set_defaults(func=_run(_list, read_only=True))

  for name, help_text, target in (
      ('show', 'one version: details, stage history and lineage', commands),
      ('lineage', 'the chain from a served version back to its spans', subparsers)):
    parser = target.add_parser(name, help=help_text)
    parser.add_argument('version', help='serving version, or model:ID for an unpushed model')
    parser.add_argument('--json', action='store_true')
    parser.add_argument('--no-metrics', action='store_true')
    parser.set_defaults(func=_run(_show, read_only=True))

  history = commands.add_parser('history', help='every stage transition, oldest first')
  history.add_argument('--json', action='store_true')
  history.set_defaults(func=_run(_history, read_only=True))

  stage = commands.add_parser('stage', help='put a pushed, blessed version in staging (canary); '
                                            'production if there is none yet')
  stage.add_argument('version')
  stage.add_argument('--by')
  stage.set_defaults(func=_run(_stage))

  promote = commands.add_parser('promote', help='move a version to production (stable)')
  promote.add_argument('version')
  _writer_options(promote)
  promote.set_defaults(func=_run(_promote))

  rollback = commands.add_parser('rollback', help='return stable to the previous production '
                                                  'version')
  _writer_options(rollback)
  rollback.set_defaults(func=_run(_rollback))

  sync = commands.add_parser('sync', help='rewrite models.config from the registry state')
  sync.set_defaults(func=_run(_sync))
  return models
