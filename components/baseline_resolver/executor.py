"""Executor of TrainingBaselineResolver, and the plain function it runs (`resolve_manifest`)."""
from typing import Any, Dict, List, Optional

from absl import logging
from ml_metadata.metadata_store import metadata_store
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.baseline_resolver import manifest as manifest_lib
from components.baseline_resolver import spec
from metadata import lineage
from metadata import connection as metadata_connection


def _splits(artifact) -> List[str]:
  return artifact_utils.decode_split_names(lineage.split_names(artifact) or '[]')


def resolve_manifest(store: metadata_store.MetadataStore, model_name: str,
                     model_version: Optional[int] = None) -> manifest_lib.BaselineManifest:
  """The baseline of `model_version` (None or 0: the latest push), walked through lineage.

  Raises lineage.BaselineNotFoundError naming the version and the missing link.
  """
  baseline = lineage.resolve_training_baseline(store, model_version or None, model_name)
  return manifest_lib.BaselineManifest(
      model_name=model_name,
      model_version=int(baseline.pushed_version),
      pushed_model_uri=baseline.pushed_model.uri,
      model_uri=baseline.model.uri,
      examples_uri=baseline.examples.uri,
      examples_splits=_splits(baseline.examples),
      statistics_uri=baseline.statistics.uri,
      statistics_splits=_splits(baseline.statistics),
      artifact_ids={'pushed_model': baseline.pushed_model.id, 'model': baseline.model.id,
                    'examples': baseline.examples.id, 'statistics': baseline.statistics.id})


class Executor(base_executor.BaseExecutor):
  """Opens ML Metadata, walks the served version's lineage, writes the manifest."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    store = metadata_connection.open_store(
        metadata_connection.connection_from_url(exec_properties[spec.METADATA_URL_KEY]))
    manifest = resolve_manifest(store, exec_properties[spec.MODEL_NAME_KEY],
                                exec_properties.get(spec.MODEL_VERSION_KEY))
    output = artifact_utils.get_single_instance(output_dict[spec.BASELINE_KEY])
    manifest_lib.write(output.uri, manifest)
    output.set_int_custom_property(spec.MODEL_VERSION_PROPERTY, manifest.model_version)
    for name in spec.URI_PROPERTIES:
      output.set_string_custom_property(name, getattr(manifest, name))
    logging.info('Training baseline of %s version %d: examples %s, statistics %s',
                 manifest.model_name, manifest.model_version, manifest.examples_uri,
                 manifest.statistics_uri)
