"""Every model the pipeline produced, as the registry lists it: pushed versions and dev models.

A serving version is the `pushed_version` of PushedModel artifacts with `pushed=1` (a cached or
identical re-push records the same version again: one entry, its first push is its origin). A
Model artifact that no push consumed is listed as a dev model, `model:<artifact id>`.

No TFX import: ML Metadata (through `metadata.graph`) and small JSON files.
"""
import dataclasses
import os
from typing import Any, Dict, List, Optional

from metadata import layout
from metadata import queries as mq
from metadata.graph import Graph
from registry import stages

PUSHED_MODEL_TYPE, MODEL_TYPE = 'PushedModel', 'Model'
DEV_PREFIX = 'model:'
EVAL_METRIC_PREFIX = 'eval_'                         # registry.store.EVAL_METRIC_PREFIX


@dataclasses.dataclass
class ModelRecord:
  """One row of `loopline models list` (and the head of `models show`)."""
  key: str                                  # '1795759548' or 'model:16'
  version: Optional[int]
  model_id: Optional[int]                   # None: a version ML Metadata has no Model for
  model_uri: Optional[str]
  stage: str = stages.DEV
  labels: List[str] = dataclasses.field(default_factory=list)
  pushed: bool = False
  pushed_at_ms: Optional[int] = None
  pushed_model_ids: List[int] = dataclasses.field(default_factory=list)
  serving_dir: Optional[str] = None
  blessed: Optional[bool] = None
  blessing_id: Optional[int] = None
  evaluation_uri: Optional[str] = None
  baseline_model_id: Optional[int] = None
  run_id: Optional[str] = None              # the run whose Trainer produced the model
  trained_at_ms: Optional[int] = None
  spans: Optional[str] = None
  span_versions: Optional[str] = None
  examples_id: Optional[int] = None
  hyperparameters: Optional[Dict[str, Any]] = None
  hyperparameters_id: Optional[int] = None
  hyperparameters_run: Optional[str] = None  # run of the Tuner that found them
  eval_metrics: Optional[Dict[str, float]] = None
  realized_metrics: Optional[Dict[str, float]] = None
  stage_changed_at_ms: Optional[int] = None
  stage_changed_by: Optional[str] = None
  stage_reason: Optional[str] = None
  forced: bool = False

  def as_dict(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


def source_examples(graph: Graph, examples) -> Optional[Any]:
  """Follow `examples` inputs upwards (transformed examples -> Transform -> raw examples) to the
  Examples artifact that carries `span_range`."""
  for _ in range(5):
    if examples is None or mq.custom_property(examples, 'span_range') is not None:
      return examples
    examples = graph.first_input(graph.producer(examples.id), 'examples')
  return None


def _evaluation_of(graph: Graph, model_id: int, blessing=None):
  """(blessing, evaluation, baseline model id): the given blessing's Evaluator run, else the latest
  Evaluator run that evaluated the model as `model` (not as `baseline_model`)."""
  if blessing is not None:
    evaluator = graph.producer(blessing.id)
  else:
    runs = [e for e in graph.consuming(model_id, 'model')
            if graph.first_output(e, 'blessing') is not None]
    evaluator = runs[-1] if runs else None
    blessing = graph.first_output(evaluator, 'blessing')
  evaluation = graph.first_output(evaluator, 'evaluation')
  baseline = graph.first_input(evaluator, 'baseline_model')
  return blessing, evaluation, baseline.id if baseline is not None else None


def _fill_training(graph: Graph, record: ModelRecord, model) -> None:
  trainer = graph.producer(model.id)
  if trainer is None:
    return
  record.run_id = graph.run.get(trainer)
  record.trained_at_ms = graph.executions[trainer].create_time_since_epoch
  examples = source_examples(graph, graph.first_input(trainer, 'examples'))
  if examples is not None:
    record.examples_id = examples.id
    record.spans = mq.custom_property(examples, 'span_range')
    record.span_versions = mq.custom_property(examples, 'span_versions')
  hyperparameters = graph.first_input(trainer, 'hyperparameters')
  if hyperparameters is not None:
    record.hyperparameters_id = hyperparameters.id
    record.hyperparameters = mq.read_hyperparameters(hyperparameters.uri)
    tuner = graph.producer(hyperparameters.id)
    record.hyperparameters_run = graph.run.get(tuner) if tuner is not None else None


def build(graph: Graph, serving_model_dir: str, recorded: Dict[int, Any],
          state: stages.RegistryState, labels: Dict[str, int]) -> List[ModelRecord]:
  """Pushed versions (newest first), then dev models (newest first).

  `recorded`: {version: LooplineModelVersion artifact}; `labels`: the serving config's labels.
  """
  by_version: Dict[int, List[Any]] = {}
  for pushed in graph.artifacts_of_type(PUSHED_MODEL_TYPE):
    version = str(layout.number(mq.custom_property(pushed, 'pushed_version')) or '')
    if mq.custom_property(pushed, 'pushed') and version.isdigit():
      by_version.setdefault(int(version), []).append(pushed)
  pushed_model_ids = set()
  records = []
  for version, pushes in by_version.items():
    origin = pushes[0]
    pusher = graph.producer(origin.id)
    model = graph.first_input(pusher, 'model')
    if model is None:
      continue
    pushed_model_ids.add(model.id)
    record = ModelRecord(key=str(version), version=version, model_id=model.id,
                         model_uri=model.uri, pushed=True,
                         pushed_at_ms=origin.create_time_since_epoch,
                         pushed_model_ids=[p.id for p in pushes],
                         serving_dir=os.path.join(serving_model_dir, str(version)))
    blessing, evaluation, record.baseline_model_id = _evaluation_of(
        graph, model.id, graph.first_input(pusher, 'model_blessing'))
    _fill_blessing(record, blessing, evaluation)
    _fill_training(graph, record, model)
    fill_stage(record, state, recorded, labels)
    records.append(record)
  records.sort(key=lambda r: -r.version)
  dev = []
  for model in graph.artifacts_of_type(MODEL_TYPE):
    if model.id in pushed_model_ids:
      continue
    record = ModelRecord(key=f'{DEV_PREFIX}{model.id}', version=None, model_id=model.id,
                         model_uri=model.uri)
    blessing, evaluation, record.baseline_model_id = _evaluation_of(graph, model.id)
    _fill_blessing(record, blessing, evaluation)
    _fill_training(graph, record, model)
    dev.append(record)
  dev.sort(key=lambda r: -r.model_id)
  return records + dev


def _fill_blessing(record: ModelRecord, blessing, evaluation) -> None:
  if blessing is not None:
    record.blessing_id = blessing.id
    record.blessed = bool(mq.custom_property(blessing, 'blessed'))
  if evaluation is not None:
    record.evaluation_uri = evaluation.uri


def fill_stage(record: ModelRecord, state: stages.RegistryState, recorded: Dict[int, Any],
                labels: Dict[str, int]) -> None:
  artifact = recorded.get(record.version)
  stage_names = {v: mq.artifact_property(a, 'stage') for v, a in recorded.items()}
  record.stage = state.stage_of(record.version, stage_names)
  record.labels = sorted(label for label, version in labels.items() if version == record.version)
  if artifact is not None:
    changed_at = mq.custom_property(artifact, 'stage_changed_at')
    record.stage_changed_at_ms = int(changed_at) if changed_at is not None else None
    record.stage_changed_by = mq.custom_property(artifact, 'stage_changed_by')
    record.stage_reason = mq.custom_property(artifact, 'stage_reason')
    record.forced = bool(mq.custom_property(artifact, 'forced'))
    recorded_metrics = {name[len(EVAL_METRIC_PREFIX):]: float(mq.custom_property(artifact, name))
                        for name in artifact.custom_properties
                        if name.startswith(EVAL_METRIC_PREFIX)}
    record.eval_metrics = recorded_metrics or None


def find(records: List[ModelRecord], key: str) -> Optional[ModelRecord]:
  """The record named by a version number or `model:<id>`."""
  key = str(key).strip()
  for record in records:
    if record.key == key or (record.version is not None and key.isdigit()
                             and int(key) == record.version):
      return record
    if key.startswith(DEV_PREFIX) and key[len(DEV_PREFIX):].isdigit() and \
        int(key[len(DEV_PREFIX):]) == record.model_id:
      return record
  return None
