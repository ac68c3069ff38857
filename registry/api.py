"""The registry's operations: list, show, stage, promote, rollback (plain functions, and the
`Registry` class behind them).

Every change follows one protocol:
  1. read a snapshot: the transition log from ML Metadata (-> RegistryState) and models.config;
  2. decide with the pure rules of `registry.stages` (refusals happen here, nothing is written);
  3. under the write lock, check that neither the registry (transition sequence) nor models.config
     (content digest) changed since the snapshot, else ConcurrentChangeError: of two concurrent
     promotions one wins and the other is told what happened, with nothing written;
  4. record the transition in ML Metadata (one transaction; its unique name is a second
     compare-and-swap for writers that do not share the lock file) and replace models.config
     atomically.
"""
import dataclasses
import getpass
import os
import socket
from typing import Any, Dict, List, Optional, Sequence

from core import home as home_lib
from registry import catalog, checks, lineage, serving_config, stages
from registry.errors import (ConcurrentChangeError, RefusedError, RegistryError,
                             UnknownVersionError)
from metadata.graph import Graph
from registry.store import RegistryStore, Transition

DEFAULT_LOCK_TIMEOUT_SECONDS = 30.0


def default_actor() -> str:
  """Who is acting: $LOOPLINE_ACTOR, else user@host."""
  if os.environ.get('LOOPLINE_ACTOR'):
    return os.environ['LOOPLINE_ACTOR']
  try:
    user = getpass.getuser()
  except (KeyError, OSError):
    user = f'uid{os.getuid()}'
  return f'{user}@{socket.gethostname()}'


@dataclasses.dataclass
class Snapshot:
  """What a decision is based on."""
  config_text: Optional[str]
  config_digest: str
  labels: Dict[str, int]
  transitions: List[Transition]
  state: stages.RegistryState
  recorded: Dict[int, Any]                       # version -> LooplineModelVersion artifact

  @property
  def recorded_stages(self) -> Dict[int, str]:
    return {v: a.properties['stage'].string_value for v, a in self.recorded.items()}


@dataclasses.dataclass
class Pending:
  """A decided, not yet applied transition (see `Registry.apply`)."""
  plan: stages.Plan
  snapshot: Snapshot
  lineage_ids: Sequence[tuple]                   # (key, artifact id) the transition consumed
  eval_metrics: Optional[Dict[str, float]] = None  # to record, when not recorded yet


class Registry:
  """The model registry of one PipelineConfig (home, pipeline, model name, MLMD connection)."""

  def __init__(self, config, store=None,
               lock_timeout_seconds: float = DEFAULT_LOCK_TIMEOUT_SECONDS, read_only: bool = False):
    """`read_only`: for listing and tracing (a SQLite store opened READONLY; on MySQL, SELECT is
    all it needs); a write through it fails with WriteNotAllowedError."""
    self.config = config
    self.model_name = config.model_name
    self.config_path = home_lib.serving_config_path(config.home)
    self.store = store if store is not None else checks.open_store(config, read_only)
    self.records = RegistryStore(self.store, self.model_name)
    self.lock_timeout_seconds = lock_timeout_seconds

  # ---- reading -------------------------------------------------------------------------------

  def snapshot(self) -> Snapshot:
    text = serving_config.read_text(self.config_path)
    labels = serving_config.labels(serving_config.parse(text, self.config_path), self.model_name)
    transitions = self.records.transitions()
    state = stages.RegistryState.replay([t.record() for t in transitions],
                                        stable_label=labels.get(stages.STABLE_LABEL))
    return Snapshot(text, serving_config.digest(text), labels, transitions, state,
                    self.records.versions())

  def graph(self) -> Graph:
    return Graph(self.store, self.config.pipeline_name)

  def version_dir(self, version: int) -> str:
    return os.path.join(self.config.serving_model_dir, str(version))

  def models(self, snapshot: Optional[Snapshot] = None, graph: Optional[Graph] = None,
              metrics: bool = True) -> List[catalog.ModelRecord]:
    snapshot = snapshot or self.snapshot()
    records = catalog.build(graph or self.graph(), self.config.serving_model_dir,
                            snapshot.recorded, snapshot.state, snapshot.labels)
    known = {r.version for r in records if r.version is not None}
    others = (set(snapshot.recorded) | set(snapshot.labels.values()) |
              {v for v in (snapshot.state.production, snapshot.state.staging) if v}) - known
    for version in sorted(others, reverse=True):
      record = catalog.ModelRecord(key=str(version), version=version, model_id=None,
                                   model_uri=None, serving_dir=self.version_dir(version))
      catalog.fill_stage(record, snapshot.state, snapshot.recorded, snapshot.labels)
      records.insert(0, record)
    records.sort(key=lambda r: (r.version is None, -(r.version or 0), -(r.model_id or 0)))
    realized = checks.realized_metrics(self.store, self.model_name)
    for record in records:
      record.realized_metrics = realized.get(record.version)
      if metrics and record.eval_metrics is None:
        record.eval_metrics = checks.eval_metrics(record.evaluation_uri)
    return records

  def notes(self, snapshot: Snapshot) -> List[str]:
    """Where models.config and the registry disagree (a hand edit, or an interrupted write)."""
    notes = []
    for label, version in ((stages.STABLE_LABEL, snapshot.state.production),
                           (stages.CANARY_LABEL, snapshot.state.staging)):
      configured = snapshot.labels.get(label)
      if version is not None and configured != version:
        notes.append(f'{self.config_path} has {label}={configured} but the registry says '
                     f'{version}: run `loopline models sync` to rewrite it from the registry')
    if snapshot.state.production is None and snapshot.labels.get(stages.STABLE_LABEL):
      notes.append(f'{stages.STABLE_LABEL}={snapshot.labels[stages.STABLE_LABEL]} was set outside '
                   'the registry; it is kept until a version is promoted')
    return notes

  def describe(self, key: str, metrics: bool = True) -> Dict[str, Any]:
    """A record with its lineage and stage history (`loopline models show` / `lineage`)."""
    snapshot = self.snapshot()
    graph = self.graph()
    record = catalog.find(self.models(snapshot, graph, metrics=metrics), key)
    if record is None:
      raise UnknownVersionError(f'{self.model_name} has no version or model {key!r} (see '
                                '`loopline models list`)')
    history = [t.as_dict() for t in snapshot.transitions
               if record.version is not None and
               any(v == record.version for v, _, _ in t.changes)]
    steps = lineage.trace(graph, record) if record.model_id is not None else []
    return {'model_name': self.model_name, 'record': record.as_dict(), 'lineage': steps,
            'history': history, 'serving_config': self.config_path}

  # ---- deciding ------------------------------------------------------------------------------

  def facts(self, version, records: List[catalog.ModelRecord],
            check_load: bool = True) -> stages.VersionFacts:
    key = str(version).strip()
    record = catalog.find(records, key)
    if record is not None and record.version is None:
      raise RefusedError('promote', f'{self.model_name} {key}', [
          'this model was never pushed, so it has no serving version'], forceable=False,
          hint='Only pushed versions can be served')
    if not key.isdigit():
      raise UnknownVersionError(f'{key!r} is not a version number (or model:ID)')
    version = int(key)
    path = self.version_dir(version)
    exists = os.path.isdir(path)
    if record is None and not exists:
      raise UnknownVersionError(
          f'{self.model_name} has no version {version}: not in ML Metadata and no {path}')
    load_error = (checks.load_error(self.model_name, version, path)
                  if exists and check_load else None)
    return stages.VersionFacts(version=version, pushed=bool(record and record.pushed),
                               blessed=record.blessed if record else None,
                               directory_exists=exists, load_error=load_error)

  def _pending(self, plan: Optional[stages.Plan], snapshot: Snapshot,
               records: List[catalog.ModelRecord]) -> Optional[Pending]:
    if plan is None:
      return None
    record = catalog.find(records, str(plan.version))
    lineage_ids = []
    if record is not None and record.pushed_model_ids:
      lineage_ids.append(('pushed_model', record.pushed_model_ids[0]))
    if record is not None and record.model_id is not None:
      lineage_ids.append(('model', record.model_id))
    metrics = None
    if record is not None and record.eval_metrics is None:
      metrics = checks.eval_metrics(record.evaluation_uri)
    return Pending(plan, snapshot, lineage_ids, metrics)

  def plan_stage(self, version, restage_archived: bool = False) -> Optional[Pending]:
    snapshot = self.snapshot()
    records = self.models(snapshot, metrics=False)
    facts = self.facts(version, records)
    return self._pending(stages.plan_stage(self.model_name, snapshot.state, facts,
                                           snapshot.recorded_stages, restage_archived),
                         snapshot, records)

  def plan_promote(self, version, reason: str = '', force: bool = False) -> Pending:
    snapshot = self.snapshot()
    records = self.models(snapshot, metrics=False)
    facts = self.facts(version, records)
    return self._pending(stages.plan_promote(self.model_name, snapshot.state, facts,
                                             snapshot.recorded_stages, reason, force),
                         snapshot, records)

  def plan_rollback(self, reason: str = '', force: bool = False) -> Pending:
    snapshot = self.snapshot()
    records = self.models(snapshot, metrics=False)
    target = stages.rollback_target(snapshot.state)
    facts = self.facts(target, records) if target is not None else None
    return self._pending(stages.plan_rollback(self.model_name, snapshot.state, facts,
                                              snapshot.recorded_stages, reason, force),
                         snapshot, records)

  # ---- writing -------------------------------------------------------------------------------

  def apply(self, pending: Optional[Pending], actor: Optional[str] = None) -> Optional[Transition]:
    """Record a decided transition and write models.config (see the module docstring)."""
    if pending is None:
      return None
    actor = actor or default_actor()
    plan, snapshot = pending.plan, pending.snapshot
    what = f'{plan.action} {self.model_name} version {plan.version} by {actor}'
    with serving_config.exclusive_lock(self.config_path, what, self.lock_timeout_seconds):
      text = serving_config.read_text(self.config_path)
      if self.records.sequence() != snapshot.state.sequence:
        raise ConcurrentChangeError(
            self.records._conflict_message(snapshot.state.sequence))  # pylint: disable=protected-access
      if serving_config.digest(text) != snapshot.config_digest:
        raise ConcurrentChangeError(
            f'{self.config_path} changed while this command was deciding ({what}). Nothing was '
            'written; look at `loopline models list` and try again if it still applies.')
      rendered = serving_config.render(serving_config.parse(text, self.config_path),
                                       self.model_name, self.config.serving_model_dir,
                                       plan.stable, plan.canary)
      new_text = serving_config.to_text(rendered)
      serving_config.parse(new_text)  # Never write what TF Serving's own parser would reject.
      lineage_artifacts = []
      if pending.lineage_ids:
        fresh = {a.id: a for a in self.store.get_artifacts_by_id(
            [artifact_id for _, artifact_id in pending.lineage_ids])}
        lineage_artifacts = [(key, fresh[i]) for key, i in pending.lineage_ids if i in fresh]
      transition = self.records.record(plan, snapshot.state.sequence, actor, self.config_path,
                                       self.version_dir, lineage_artifacts, pending.eval_metrics)
      try:
        serving_config.write_atomically(self.config_path, new_text)
      except OSError as e:
        raise RegistryError(
            f'the transition is recorded in ML Metadata but {self.config_path} could not be '
            f'written ({e}); fix the cause and run `loopline models sync`') from e
    return transition

  def sync(self) -> bool:
    """Rewrite models.config from the registry's state (after a hand edit or a failed write).
    Returns whether the file changed. Records no transition."""
    with serving_config.exclusive_lock(self.config_path, f'sync {self.model_name}',
                                       self.lock_timeout_seconds):
      snapshot = self.snapshot()
      state = snapshot.state
      if state.production is None and state.staging is None:
        return False
      stable = state.production if state.production is not None else state.stable_label
      canary = state.staging if state.staging not in (None, stable) else None
      rendered = serving_config.render(
          serving_config.parse(snapshot.config_text, self.config_path), self.model_name,
          self.config.serving_model_dir, stable, canary)
      new_text = serving_config.to_text(rendered)
      if new_text == snapshot.config_text:
        return False
      serving_config.write_atomically(self.config_path, new_text)
      return True


# ---- plain functions ---------------------------------------------------------------------------

def stage_pushed_model(config, version, actor: Optional[str] = None) -> Optional[Transition]:
  """After a push: a pushed, blessed, loadable version enters staging (`canary`), or production
  (`stable`) when there is no production version yet (the bootstrap rule). Returns the recorded
  transition, or None when the version already is staging or production, or was archived (a
  cached re-run pushes the same version again; a rolled-back model must not come back by itself).
  Raises RefusedError (not blessed/pushed/loadable), ConcurrentChangeError, UnknownVersionError.
  """
  registry = Registry(config)
  return registry.apply(registry.plan_stage(version), actor or f'loopline train ({default_actor()})')


def promote(config, version, reason: str = '', force: bool = False,
            actor: Optional[str] = None) -> Transition:
  """Move a version to production (`stable`), recording who, when and why."""
  registry = Registry(config)
  return registry.apply(registry.plan_promote(version, reason, force), actor)


def rollback(config, reason: str = '', force: bool = False,
             actor: Optional[str] = None) -> Transition:
  """Return production (`stable`) to the previous production version."""
  registry = Registry(config)
  return registry.apply(registry.plan_rollback(reason, force), actor)


def list_models(config, metrics: bool = True) -> List[catalog.ModelRecord]:
  return Registry(config, read_only=True).models(metrics=metrics)


def describe(config, key: str, metrics: bool = True) -> Dict[str, Any]:
  return Registry(config, read_only=True).describe(key, metrics=metrics)
