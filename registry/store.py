"""The registry's records in ML Metadata: one artifact per registered version, one execution per
stage transition, one context per registered model.

- Artifact type `LooplineModelVersion` (name `<model>:<version>`, uri = the serving directory):
  properties `model_name`, `version`, `stage`; custom properties `stage_changed_at` (ms),
  `stage_changed_by`, `stage_reason`, `forced`, and the overall evaluation metrics as
  `eval_<metric>` (recorded once, so listing does not need TFMA).
- Execution type `LooplineStageTransition` (name `<model>#<sequence>`), one per transition:
  `action`, `version`, `from_stage`, `to_stage`, `actor`, `reason`, `forced`, `overridden`,
  `production_version`/`staging_version` after it, the `stable`/`canary` labels written and the
  config path. Its INPUT events point at the version's PushedModel and Model artifacts (so the
  transition sits in the model's lineage in any MLMD viewer, Kubeflow's included), its OUTPUT
  events at every LooplineModelVersion whose stage changed (key `<from stage>-><to stage>`).
- Context type `LooplineModelRegistry` (name = model name): the executions and artifacts above, with
  `production_version`, `staging_version` and `sequence` as custom properties.

Everything of one transition is written by one `put_execution` call (one transaction). Execution
names are unique per type in ML Metadata, so `<model>#<sequence>` is a compare-and-swap: two
writers that both read sequence N cannot both record N+1, even on a shared MySQL store.

No TFX import (ML Metadata only).
"""
import dataclasses
import time
from typing import Dict, List, Optional, Sequence

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from metadata import connection as metadata_connection
from registry import stages
from registry.errors import ConcurrentChangeError, WriteNotAllowedError

VERSION_TYPE = 'LooplineModelVersion'
TRANSITION_TYPE = 'LooplineStageTransition'
REGISTRY_CONTEXT_TYPE = 'LooplineModelRegistry'
EVAL_METRIC_PREFIX = 'eval_'

_STRING, _INT = metadata_store_pb2.STRING, metadata_store_pb2.INT
_VERSION_PROPERTIES = {'model_name': _STRING, 'version': _INT, 'stage': _STRING}
_TRANSITION_PROPERTIES = {
    'model_name': _STRING, 'sequence': _INT, 'action': _STRING, 'version': _INT,
    'from_stage': _STRING, 'to_stage': _STRING, 'actor': _STRING, 'reason': _STRING,
    'forced': _INT, 'overridden': _STRING, 'production_version': _INT, 'staging_version': _INT,
    'stable_label': _INT, 'canary_label': _INT, 'config_path': _STRING}


@dataclasses.dataclass(frozen=True)
class Transition:
  """One recorded stage transition, for people and machines."""
  sequence: int
  execution_id: int
  action: str
  version: int
  from_stage: str
  to_stage: str
  actor: str
  reason: str
  forced: bool
  overridden: str
  at_ms: int
  production: Optional[int]
  staging: Optional[int]
  stable_label: Optional[int]
  canary_label: Optional[int]
  changes: tuple = ()                 # ((version, from_stage, to_stage), ...)

  def record(self) -> stages.TransitionRecord:
    return stages.TransitionRecord(self.sequence, self.action, self.version, self.production,
                                   self.staging)

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d['changes'] = [{'version': v, 'from': a, 'to': b} for v, a, b in self.changes]
    return d


def _get(message, name, default=None):
  if name in message.properties:
    value = message.properties[name]
    return getattr(value, value.WhichOneof('value'))
  if name in message.custom_properties:
    value = message.custom_properties[name]
    return getattr(value, value.WhichOneof('value'))
  return default


def _optional_version(message, name) -> Optional[int]:
  value = _get(message, name)
  return int(value) if value is not None and int(value) > 0 else None


class RegistryStore:
  """Reads and writes the registry's records for one model in an ML Metadata store."""

  def __init__(self, store: metadata_store.MetadataStore, model_name: str):
    self.store = store
    self.model_name = model_name
    self._type_ids = None

  def _type_id(self, name: str) -> Optional[int]:
    """A registry type's id for reading, None when it is not registered yet: a read never
    registers a type (it must work with a database user that may only SELECT)."""
    if self._type_ids is not None:
      return self._type_ids[name]
    getter = {VERSION_TYPE: self.store.get_artifact_type,
              TRANSITION_TYPE: self.store.get_execution_type}[name]
    try:
      return getter(name).id
    except mlmd_errors.NotFoundError:
      return None

  def _types(self) -> Dict[str, int]:
    """Registers the registry's types before a write (idempotent; new fields may be added)."""
    if self._type_ids is None:
      version_type = metadata_store_pb2.ArtifactType(name=VERSION_TYPE)
      for name, kind in _VERSION_PROPERTIES.items():
        version_type.properties[name] = kind
      transition_type = metadata_store_pb2.ExecutionType(name=TRANSITION_TYPE)
      for name, kind in _TRANSITION_PROPERTIES.items():
        transition_type.properties[name] = kind
      context_type = metadata_store_pb2.ContextType(name=REGISTRY_CONTEXT_TYPE)
      context_type.properties['model_name'] = _STRING
      self._type_ids = {
          VERSION_TYPE: self.store.put_artifact_type(version_type, can_add_fields=True),
          TRANSITION_TYPE: self.store.put_execution_type(transition_type, can_add_fields=True),
          REGISTRY_CONTEXT_TYPE: self.store.put_context_type(context_type, can_add_fields=True)}
    return self._type_ids

  # ---- reading -------------------------------------------------------------------------------

  def context(self) -> Optional[metadata_store_pb2.Context]:
    try:
      return self.store.get_context_by_type_and_name(REGISTRY_CONTEXT_TYPE, self.model_name)
    except mlmd_errors.NotFoundError:
      return None

  def versions(self) -> Dict[int, metadata_store_pb2.Artifact]:
    """{version: LooplineModelVersion artifact} of this model."""
    context = self.context()
    if context is None:
      return {}
    version_type = self._type_id(VERSION_TYPE)
    return {int(_get(a, 'version')): a for a in self.store.get_artifacts_by_context(context.id)
            if a.type_id == version_type and _get(a, 'model_name') == self.model_name}

  def transitions(self) -> List[Transition]:
    """Every recorded transition of this model, oldest first."""
    context = self.context()
    if context is None:
      return []
    transition_type = self._type_id(TRANSITION_TYPE)
    executions = [e for e in self.store.get_executions_by_context(context.id)
                  if e.type_id == transition_type and _get(e, 'model_name') == self.model_name]
    executions.sort(key=lambda e: (_get(e, 'sequence', 0), e.id))
    changes = {}
    if executions:
      version_type = self._type_id(VERSION_TYPE)
      version_artifacts = {a.id: a for a in self.store.get_artifacts_by_context(context.id)
                           if a.type_id == version_type}
      for event in self.store.get_events_by_execution_ids([e.id for e in executions]):
        artifact = version_artifacts.get(event.artifact_id)
        if artifact is None or event.type != metadata_store_pb2.Event.OUTPUT:
          continue
        key = next((s.key for s in event.path.steps if s.HasField('key')), '?->?')
        from_stage, _, to_stage = key.partition('->')
        changes.setdefault(event.execution_id, []).append(
            (int(_get(artifact, 'version')), from_stage, to_stage))
    return [Transition(
        sequence=int(_get(e, 'sequence', 0)), execution_id=e.id, action=_get(e, 'action', ''),
        version=int(_get(e, 'version', 0)), from_stage=_get(e, 'from_stage', ''),
        to_stage=_get(e, 'to_stage', ''), actor=_get(e, 'actor', ''),
        reason=_get(e, 'reason', ''), forced=bool(_get(e, 'forced', 0)),
        overridden=_get(e, 'overridden', ''), at_ms=e.create_time_since_epoch,
        production=_optional_version(e, 'production_version'),
        staging=_optional_version(e, 'staging_version'),
        stable_label=_optional_version(e, 'stable_label'),
        canary_label=_optional_version(e, 'canary_label'),
        changes=tuple(sorted(changes.get(e.id, []))))
        for e in executions]

  def sequence(self) -> int:
    """How many transitions are recorded (the compare-and-swap token)."""
    context = self.context()
    return int(_get(context, 'sequence', 0)) if context is not None else 0

  # ---- writing -------------------------------------------------------------------------------

  def record(self, plan: stages.Plan, expected_sequence: int, actor: str, config_path: str,
             serving_dir_of, lineage_inputs: Sequence[tuple] = (),
             eval_metrics: Optional[Dict[str, float]] = None) -> Transition:
    """Record `plan` as transition `expected_sequence + 1`, atomically.

    `serving_dir_of(version)` gives a version's directory (the artifact's uri);
    `lineage_inputs` are (key, artifact) pairs of MLMD artifacts the transition consumed (the
    version's PushedModel and Model); `eval_metrics` (the version's overall evaluation) are kept
    on its artifact as `eval_<metric>` custom properties. Raises ConcurrentChangeError when
    another writer recorded a transition since `expected_sequence` was read, WriteNotAllowedError
    naming the privilege the database user lacks.
    """
    try:
      return self._record(plan, expected_sequence, actor, config_path, serving_dir_of,
                          lineage_inputs, eval_metrics)
    except mlmd_errors.StatusError as e:
      missing = metadata_connection.write_denied(e)
      if missing is None:
        raise
      raise WriteNotAllowedError(missing, str(e)) from e

  def _record(self, plan, expected_sequence, actor, config_path, serving_dir_of, lineage_inputs,
              eval_metrics) -> Transition:
    type_ids = self._types()
    now_ms = int(time.time() * 1000)
    sequence = expected_sequence + 1
    context = self.context()
    if context is None:
      context = metadata_store_pb2.Context(type_id=type_ids[REGISTRY_CONTEXT_TYPE],
                                           name=self.model_name)
      context.properties['model_name'].string_value = self.model_name
    elif int(_get(context, 'sequence', 0)) != expected_sequence:
      raise ConcurrentChangeError(self._conflict_message(expected_sequence))
    context.custom_properties['sequence'].int_value = sequence
    context.custom_properties['production_version'].int_value = plan.production or 0
    context.custom_properties['staging_version'].int_value = plan.staging or 0
    # Milliseconds overflow MLMD's 32-bit integer column on MySQL: stored as doubles.
    context.custom_properties['updated_at'].double_value = now_ms

    existing = self.versions()
    artifact_and_events = []
    for key, artifact in lineage_inputs:
      event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.INPUT)
      event.path.steps.add().key = key
      artifact_and_events.append((artifact, event))
    for change in plan.changes:
      artifact = metadata_store_pb2.Artifact()
      if change.version in existing:
        artifact.CopyFrom(existing[change.version])
      else:
        artifact.type_id = type_ids[VERSION_TYPE]
        artifact.name = f'{self.model_name}:{change.version}'
        artifact.uri = serving_dir_of(change.version)
        artifact.state = metadata_store_pb2.Artifact.LIVE
        artifact.properties['model_name'].string_value = self.model_name
        artifact.properties['version'].int_value = change.version
      artifact.properties['stage'].string_value = change.to_stage
      artifact.custom_properties['stage_changed_at'].double_value = now_ms
      artifact.custom_properties['stage_changed_by'].string_value = actor
      artifact.custom_properties['stage_reason'].string_value = (
          plan.reason if change.version == plan.version else
          f'{plan.action} of version {plan.version}')
      artifact.custom_properties['forced'].int_value = int(
          plan.forced and change.version == plan.version)
      if change.version == plan.version:
        for name, value in (eval_metrics or {}).items():
          artifact.custom_properties[EVAL_METRIC_PREFIX + name].double_value = float(value)
      event = metadata_store_pb2.Event(type=metadata_store_pb2.Event.OUTPUT)
      event.path.steps.add().key = f'{change.from_stage}->{change.to_stage}'
      artifact_and_events.append((artifact, event))

    subject = plan.subject_change
    execution = metadata_store_pb2.Execution(
        type_id=type_ids[TRANSITION_TYPE], name=f'{self.model_name}#{sequence}',
        last_known_state=metadata_store_pb2.Execution.COMPLETE)
    values = {'model_name': self.model_name, 'sequence': sequence, 'action': plan.action,
              'version': plan.version, 'from_stage': subject.from_stage,
              'to_stage': subject.to_stage, 'actor': actor, 'reason': plan.reason,
              'forced': int(plan.forced), 'overridden': '; '.join(plan.overridden),
              'production_version': plan.production or 0, 'staging_version': plan.staging or 0,
              'stable_label': plan.stable or 0, 'canary_label': plan.canary or 0,
              'config_path': config_path}
    for name, value in values.items():
      if isinstance(value, int):
        execution.properties[name].int_value = value
      else:
        execution.properties[name].string_value = value
    try:
      execution_id, _, _ = self.store.put_execution(execution, artifact_and_events, [context])
    except mlmd_errors.AlreadyExistsError:
      raise ConcurrentChangeError(self._conflict_message(expected_sequence)) from None
    return Transition(sequence, execution_id, plan.action, plan.version, subject.from_stage,
                      subject.to_stage, actor, plan.reason, plan.forced,
                      '; '.join(plan.overridden), now_ms, plan.production, plan.staging,
                      plan.stable, plan.canary,
                      tuple(sorted((c.version, c.from_stage, c.to_stage) for c in plan.changes)))

  def _conflict_message(self, expected_sequence: int) -> str:
    latest = [t for t in self.transitions() if t.sequence > expected_sequence]
    if latest:
      t = latest[-1]
      when = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(t.at_ms / 1000))
      done = (f'{t.action} of version {t.version} ({t.from_stage} -> {t.to_stage}) by {t.actor} '
              f'at {when}')
    else:
      done = 'another change'
    return (f'the registry of {self.model_name} changed while this command was deciding: '
            f'{done}. Nothing was written; look at `loopline models list` and try again if it '
            'still applies.')
