"""The training baseline of a served version as a small JSON manifest (no TFX import).

`TrainingBaselineResolver` writes it (`baseline.json` in its `LooplineTrainingBaseline` output);
DriftDetector and RealizedMetrics read it when they get their baseline at run time (the cluster
pipelines) instead of as Importer channels (the local pipeline). It names the very artifacts
lineage led to: their URIs, split names and ML Metadata ids.
"""
import dataclasses
import json
import os
from typing import Dict, List

import tensorflow as tf

BASELINE_FILE = 'baseline.json'


@dataclasses.dataclass(frozen=True)
class BaselineManifest:
  model_name: str
  model_version: int
  pushed_model_uri: str
  model_uri: str
  examples_uri: str              # the raw (ExampleGen) Examples the model was trained on
  examples_splits: List[str]
  statistics_uri: str            # their StatisticsGen output
  statistics_splits: List[str]
  artifact_ids: Dict[str, int]   # pushed_model, model, examples, statistics

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_json(cls, text: str, source: str = 'baseline manifest') -> 'BaselineManifest':
    try:
      values = json.loads(text)
    except ValueError as e:
      raise ValueError(f'{source} is not JSON: {e}') from e
    if not isinstance(values, dict):
      raise ValueError(f'{source} must be a JSON object')
    names = {f.name for f in dataclasses.fields(cls)}
    missing = sorted(names - set(values))
    unknown = sorted(set(values) - names)
    if missing or unknown:
      raise ValueError(f'{source}: missing fields {missing}, unknown fields {unknown}')
    return cls(**values)


def write(directory: str, manifest: BaselineManifest) -> str:
  path = os.path.join(directory, BASELINE_FILE)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(manifest.to_json())
  return path


def read(directory: str) -> BaselineManifest:
  path = os.path.join(directory, BASELINE_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'no {BASELINE_FILE} under {directory}: not a training baseline')
  with tf.io.gfile.GFile(path) as f:
    return BaselineManifest.from_json(f.read(), source=path)
