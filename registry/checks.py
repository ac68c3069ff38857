"""Facts the registry needs beyond the lineage graph: the MLMD connection, whether a version loads,
its evaluation metrics, and metrics realized on serving traffic.

Heavy imports (TensorFlow to load a model, TFMA to read an evaluation) happen inside the functions
that need them, so listing and rules stay fast to import.
"""
import logging
import os
from typing import Dict, Optional

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store

from metadata import connection as metadata_connection
from metadata import queries as mq

SERVING_SIGNATURE = 'serving_default'
# Metrics shown in `models list` (TFMA names, as pipeline.run_summary reads them).
KEY_METRICS = ('auc', 'auc_precision_recall', 'binary_accuracy', 'example_count')

# Contract for realized (serving-traffic) metrics, produced by the feedback loop: an artifact of
# this type with custom properties `model_name`, `model_version` (int or string) and one numeric
# custom property per metric (e.g. `auc`, `binary_accuracy`, `example_count`). The newest artifact
# per version wins. Until one exists the registry shows n/a.
REALIZED_METRICS_TYPE = 'LooplineRealizedMetrics'
_NOT_METRICS = {'model_name', 'model_version', 'tfx_version', 'is_external', 'state',
                'window_start', 'window_end'}


def open_store(config, read_only: bool = False) -> metadata_store.MetadataStore:
  """The pipeline's store; the registry never creates the database (a pipeline run did)."""
  return metadata_connection.open_pipeline_store(config, read_only, create=False)


def load_error(model_name: str, version: int, path: str) -> Optional[str]:
  """Why the model server could not serve `path`, or None when it loads with `serving_default`.

  Loads it exactly as the Loopline server does (serving.servable.Servable: SignatureDefs from
  saved_model.pb, then tf.saved_model.load with the `serve` tag).
  """
  from serving import versions as versions_lib
  if not os.path.isdir(path):
    return f'{path} does not exist'
  if not versions_lib.is_complete(path):
    return f'{path} has no saved_model.pb (not a SavedModel, or still being written)'
  try:
    from serving.servable import Servable
    servable = Servable(model_name, version, path)
  except Exception as e:  # pylint: disable=broad-except  # any load failure is the answer.
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return f'loading {path} fails: {first_line[:300]}'
  if SERVING_SIGNATURE not in servable.signatures:
    return f'{path} has no {SERVING_SIGNATURE!r} signature (has {sorted(servable.signatures)})'
  return None


_EVAL_CACHE: Dict[str, Optional[Dict[str, float]]] = {}


def eval_metrics(evaluation_uri: Optional[str]) -> Optional[Dict[str, float]]:
  """Overall-slice metrics of an Evaluator output (metadata.evaluation.slice_metrics).

  Slow the first time in a process (TFMA and TFX imports, ~10-20 s): the registry records these
  metrics on its LooplineModelVersion artifact when a version is first staged or promoted, and
  reads them from there afterwards.
  """
  if not evaluation_uri:
    return None
  if evaluation_uri not in _EVAL_CACHE:
    quiet = [logging.getLogger(name) for name in ('absl', 'tensorflow')]
    levels = [logger.level for logger in quiet]
    try:
      for logger in quiet:  # TFMA warns about plots and deprecated readers on every load.
        logger.setLevel(logging.ERROR)
      from metadata import evaluation
      rows = evaluation.slice_metrics(evaluation_uri)
      overall = rows[0] if rows and rows[0].get('slice') == 'overall' else {}
      _EVAL_CACHE[evaluation_uri] = {k: float(v) for k, v in overall.items()
                                     if k != 'slice' and isinstance(v, (int, float))} or None
    except Exception:  # pylint: disable=broad-except  # a missing/corrupt evaluation is n/a.
      _EVAL_CACHE[evaluation_uri] = None
    finally:
      for logger, level in zip(quiet, levels):
        logger.setLevel(level)
  return _EVAL_CACHE[evaluation_uri]


def realized_metrics(store: metadata_store.MetadataStore, model_name: str
                     ) -> Dict[int, Dict[str, float]]:
  """{version: metrics} from REALIZED_METRICS_TYPE artifacts (newest per version); {} if none."""
  try:
    artifacts = store.get_artifacts_by_type(REALIZED_METRICS_TYPE)
  except mlmd_errors.NotFoundError:
    return {}
  found = {}
  for artifact in sorted(artifacts, key=lambda a: (a.create_time_since_epoch, a.id)):
    name = mq.custom_property(artifact, 'model_name')
    version = str(mq.custom_property(artifact, 'model_version') or '')
    if (name not in (None, model_name)) or not version.isdigit():
      continue
    metrics = {}
    for key in artifact.custom_properties:
      value = mq.custom_property(artifact, key)
      if key not in _NOT_METRICS and isinstance(value, (int, float)) and \
          not isinstance(value, bool):
        metrics[key] = float(value)
    if metrics:
      found[int(version)] = metrics
  return found
