"""Executor of RealizedMetrics: picks one version's slice out of a model-agnostic evaluation."""
import json
import os
from typing import Any, Dict, List, Optional

import tensorflow_model_analysis as tfma
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.baseline_resolver import manifest as manifest_lib
from components.realized_metrics import spec


def version_metrics(evaluation_uri: str, model_version: int) -> Optional[Dict[str, float]]:
  """{metric: value} of the `model_version == model_version` slice, or None if it has no rows."""
  result = tfma.load_eval_result(evaluation_uri)
  for slice_key, by_output in result.slicing_metrics:
    if tuple(slice_key) == ((spec.SLICE_FEATURE, model_version),):
      values = by_output.get('', {}).get('', {})
      return {name: float(next(iter(values[name].values())))
              for name in spec.REPORTED_METRICS if name in values}
  return None


class Executor(base_executor.BaseExecutor):
  """Writes the version's realized metrics (JSON and custom properties) and the threshold check."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    evaluation = artifact_utils.get_single_instance(input_dict[spec.EVALUATION_KEY])
    output = artifact_utils.get_single_instance(output_dict[spec.METRICS_KEY])
    if input_dict.get(spec.BASELINE_KEY):
      version = manifest_lib.read(
          artifact_utils.get_single_uri(input_dict[spec.BASELINE_KEY])).model_version
    else:
      version = int(exec_properties[spec.MODEL_VERSION_KEY])
    metrics = version_metrics(evaluation.uri, version) or {'example_count': 0.0}
    below = 'auc' in metrics and metrics['auc'] < float(exec_properties[spec.MIN_AUC_KEY])
    output.set_string_custom_property('model_name', exec_properties[spec.MODEL_NAME_KEY])
    output.set_int_custom_property('model_version', version)
    for name, value in metrics.items():
      output.set_float_custom_property(name, value)
    output.set_int_custom_property(spec.BELOW_THRESHOLD_PROPERTY, int(below))
    with open(os.path.join(output.uri, spec.METRICS_FILE), 'w') as f:
      json.dump({'model_version': version, 'metrics': metrics, 'below_threshold': below,
                 'min_auc': float(exec_properties[spec.MIN_AUC_KEY])}, f, indent=2)
