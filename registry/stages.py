"""Stages of a model version and the rules that move versions between them.

Pure logic (no TFX, no ML Metadata, no file system): `registry.api` gathers the facts, these
functions decide, `registry.store` records the decision in ML Metadata and `registry.serving_config`
turns it into TF Serving labels.

Stages:
  dev         trained (pushed or not) but never staged
  staging     pushed and blessed, served under the `canary` label
  production  served under the `stable` label
  archived    was staging or production, replaced since (still on disk; rollback can return to it)

Transitions:
  stage      a pushed, blessed, loadable version -> staging (the previous staging version is
             archived). Bootstrap rule: when there is no production version at all (none in the
             registry and no `stable` label in models.config), the version goes straight to
             production, recorded with the reason BOOTSTRAP_REASON, so a first run serves something
             under `stable`. Staging a version that is already staging or production, or was
             archived (unless asked for explicitly), changes nothing (a cached re-run pushes the
             same version again).
  promote    any version -> production (`stable`); the previous production version is archived; a
             staged version leaves `canary`. Refused when the version is not pushed, not blessed or
             not loadable, unless forced with a reason (the override is recorded). A version whose
             directory does not exist is refused even when forced: there is nothing to serve.
  rollback   production returns to the previous production version (promotions push onto a
             history, rollbacks pop it, so two rollbacks go two promotions back). Refused when there
             is no previous version, or it is not loadable (unless forced).
"""
import dataclasses
from typing import Dict, Iterable, Optional, Sequence, Tuple

from registry.errors import RefusedError

DEV, STAGING, PRODUCTION, ARCHIVED = 'dev', 'staging', 'production', 'archived'
STAGES = (DEV, STAGING, PRODUCTION, ARCHIVED)
STABLE_LABEL, CANARY_LABEL = 'stable', 'canary'
LABEL_OF_STAGE = {PRODUCTION: STABLE_LABEL, STAGING: CANARY_LABEL}

STAGE, BOOTSTRAP, PROMOTE, ROLLBACK = 'stage', 'bootstrap', 'promote', 'rollback'
ACTIONS = (STAGE, BOOTSTRAP, PROMOTE, ROLLBACK)
BOOTSTRAP_REASON = 'bootstrap: no production model'
STAGE_REASON = 'pushed and blessed'


@dataclasses.dataclass(frozen=True)
class VersionFacts:
  """What is known about one serving version when a transition is decided."""
  version: int
  pushed: bool                       # a PushedModel with pushed=1 and this version is in MLMD
  blessed: Optional[bool]            # the blessing its push consumed; None: none recorded
  directory_exists: bool             # <serving_model_dir>/<version>/ exists
  load_error: Optional[str] = None   # why the server could not load it; None: it loads


@dataclasses.dataclass(frozen=True)
class TransitionRecord:
  """One recorded transition, as read back from ML Metadata (oldest first)."""
  sequence: int
  action: str
  version: int
  production: Optional[int]          # production version after the transition
  staging: Optional[int]             # staging version after the transition


@dataclasses.dataclass(frozen=True)
class RegistryState:
  """The registry's state: replayed from the transition log, plus the serving config's labels."""
  production: Optional[int] = None
  staging: Optional[int] = None
  history: Tuple[int, ...] = ()      # production versions, oldest first; the last is `production`
  sequence: int = 0                  # number of recorded transitions
  stable_label: Optional[int] = None  # `stable` in models.config now (may be set by hand)

  @classmethod
  def replay(cls, transitions: Sequence[TransitionRecord],
             stable_label: Optional[int] = None) -> 'RegistryState':
    history = []
    for record in transitions:
      if record.action in (PROMOTE, BOOTSTRAP):
        history.append(record.version)
      elif record.action == ROLLBACK and history:
        history.pop()
        if not history or history[-1] != record.version:  # history written by an older registry
          history.append(record.version)
    last = transitions[-1] if transitions else None
    return cls(production=last.production if last else None,
               staging=last.staging if last else None,
               history=tuple(history),
               sequence=last.sequence if last else 0,
               stable_label=stable_label)

  def stage_of(self, version: int, recorded: Dict[int, str]) -> str:
    if version == self.production:
      return PRODUCTION
    if version == self.staging:
      return STAGING
    return recorded.get(version, DEV)


@dataclasses.dataclass(frozen=True)
class Change:
  version: int
  from_stage: str
  to_stage: str


@dataclasses.dataclass(frozen=True)
class Plan:
  """A decided transition: what changes, and the labels the serving config must carry after it."""
  action: str
  version: int
  changes: Tuple[Change, ...]
  production: Optional[int]          # after
  staging: Optional[int]             # after
  stable: Optional[int]              # `stable` label after (None: no label)
  canary: Optional[int]              # `canary` label after (None: no label)
  reason: str
  forced: bool = False
  overridden: Tuple[str, ...] = ()   # refusals the force overrode

  @property
  def subject_change(self) -> Change:
    return next(c for c in self.changes if c.version == self.version)


def subject(model_name: str, version) -> str:
  return f'{model_name} version {version}'


def promotion_refusals(facts: VersionFacts) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
  """(reasons --force may override, reasons nothing overrides) against serving `facts.version`."""
  soft, hard = [], []
  if not facts.pushed:
    soft.append('it was not pushed (no PushedModel with pushed=1 for this version in ML Metadata)')
  if facts.blessed is None:
    soft.append('it is not blessed (no Evaluator blessing recorded for it)')
  elif not facts.blessed:
    soft.append('it is not blessed (the Evaluator did not bless it)')
  if not facts.directory_exists:
    hard.append('its serving directory does not exist, so there is nothing to serve')
  elif facts.load_error:
    soft.append(f'it is not loadable: {facts.load_error}')
  return tuple(soft), tuple(hard)


def _labels(production: Optional[int], staging: Optional[int],
            state: RegistryState) -> Tuple[Optional[int], Optional[int]]:
  """`stable` follows production (or keeps a hand-set label while there is none); `canary`
  follows staging."""
  stable = production if production is not None else state.stable_label
  canary = staging if staging is not None and staging != stable else None
  return stable, canary


def _changes(pairs: Iterable[Tuple[int, str, str]]) -> Tuple[Change, ...]:
  return tuple(Change(v, a, b) for v, a, b in pairs if a != b)


def plan_stage(model_name: str, state: RegistryState, facts: VersionFacts,
               recorded: Dict[int, str], restage_archived: bool = False) -> Optional[Plan]:
  """Stage a freshly pushed version (or bootstrap production). None: nothing to change.

  An archived version (staged or in production before, replaced or rolled back since) is left
  alone unless `restage_archived` (a person asking for it): a cached re-run that pushes the same
  files again must not bring a rolled-back model back to canary.
  """
  version = facts.version
  if version in (state.production, state.staging):
    return None
  if recorded.get(version) == ARCHIVED and not restage_archived:
    return None
  soft, hard = promotion_refusals(facts)
  if soft or hard:
    raise RefusedError('stage', subject(model_name, version), hard + soft, forceable=False,
                       hint='It stays in dev; `loopline models promote --force` can still '
                            'override the soft refusals' if not hard else '')
  current = state.stage_of(version, recorded)
  if state.production is None and state.stable_label is None:
    stable, canary = _labels(version, state.staging, state)
    return Plan(BOOTSTRAP, version, _changes([(version, current, PRODUCTION)]), version,
                state.staging if state.staging != version else None, stable, canary,
                BOOTSTRAP_REASON)
  pairs = [(version, current, STAGING)]
  if state.staging is not None:
    pairs.append((state.staging, STAGING, ARCHIVED))
  stable, canary = _labels(state.production, version, state)
  return Plan(STAGE, version, _changes(pairs), state.production, version, stable, canary,
              STAGE_REASON)


def plan_promote(model_name: str, state: RegistryState, facts: VersionFacts,
                 recorded: Dict[int, str], reason: str = '', force: bool = False) -> Plan:
  """Move `facts.version` to production (see module docstring)."""
  version = facts.version
  name = subject(model_name, version)
  if version == state.production:
    raise RefusedError('promote', name, ['it is already in production'], forceable=False,
                       hint='Nothing to do')
  soft, hard = promotion_refusals(facts)
  if hard:
    raise RefusedError('promote', name, hard + soft, forceable=False,
                       hint='--force cannot override this')
  if soft and not force:
    raise RefusedError('promote', name, soft, forceable=True)
  if soft and not (reason or '').strip():
    raise RefusedError('promote', name, ['a forced promotion needs a reason'], forceable=False,
                       hint='Give one with --reason "..."; it is recorded with the override')
  current = state.stage_of(version, recorded)
  pairs = [(version, current, PRODUCTION)]
  if state.production is not None:
    pairs.append((state.production, PRODUCTION, ARCHIVED))
  staging = None if state.staging == version else state.staging
  stable, canary = _labels(version, staging, state)
  return Plan(PROMOTE, version, _changes(pairs), version, staging, stable, canary,
              reason.strip() if reason else 'no reason given', forced=bool(force and soft),
              overridden=soft if force else ())


def rollback_target(state: RegistryState) -> Optional[int]:
  """The production version before the current one, or None."""
  if state.production is None or len(state.history) < 2:
    return None
  return state.history[-2]


def plan_rollback(model_name: str, state: RegistryState, target: Optional[VersionFacts],
                  recorded: Dict[int, str], reason: str = '', force: bool = False) -> Plan:
  """Return production to the previous production version (`target`, see rollback_target)."""
  if state.production is None:
    raise RefusedError('roll back', model_name, ['there is no production version'],
                       forceable=False, hint='Nothing to roll back')
  if target is None:
    raise RefusedError('roll back', subject(model_name, state.production),
                       ['there is no previous production version to return to'],
                       forceable=False, hint='Promote another version instead')
  name = subject(model_name, target.version)
  soft = (f'it is not loadable: {target.load_error}',) if target.load_error else ()
  if not target.directory_exists:
    raise RefusedError('roll back to', name, ['its serving directory does not exist, so there '
                                              'is nothing to serve'], forceable=False,
                       hint='--force cannot override this')
  if soft and not force:
    raise RefusedError('roll back to', name, soft, forceable=True)
  if soft and not (reason or '').strip():
    raise RefusedError('roll back to', name, ['a forced rollback needs a reason'],
                       forceable=False, hint='Give one with --reason "..."')
  pairs = [(target.version, state.stage_of(target.version, recorded), PRODUCTION),
           (state.production, PRODUCTION, ARCHIVED)]
  staging = None if state.staging == target.version else state.staging
  stable, canary = _labels(target.version, staging, state)
  return Plan(ROLLBACK, target.version, _changes(pairs), target.version, staging, stable, canary,
              reason.strip() if reason else f'rolled back from version {state.production}',
              forced=bool(force and soft), overridden=soft if force else ())
