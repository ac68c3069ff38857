"""RealizedMetrics: how one served version actually performed on its own labelled traffic.

The monitoring pipeline's Evaluator scores the logged predictions against the ground truth that
arrived later (model-agnostic TFMA: `prediction_key='prediction'`, no model is run again), sliced
by `model_version` like the training evaluation, so a canary is compared with stable on real
traffic. This component takes one version's slice out of that evaluation and records it as a
`LooplineRealizedMetrics` artifact: the metrics as custom properties (read by the model registry),
among them the expected calibration error (models/calibration_metric.py), which shows
probabilities drifting away from reality even while the AUC holds, and `below_threshold` = 1
when the realized AUC is under `min_auc` (a retraining trigger).
In a pipeline compiled for a cluster the version is known only at run time: pass `baseline` (a
TrainingBaselineResolver output) instead of `model_version`.
A version with no labelled traffic in the window gets `example_count` 0 and no AUC.

Example:
  realized = RealizedMetrics(evaluation=evaluator.outputs['evaluation'], model_name='big_tipper',
                             model_version=1795759493, min_auc=0.85)
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec

from components.realized_metrics import executor
from components.realized_metrics import spec


class RealizedMetrics(base_component.BaseComponent):
  """One version's realized metrics from a sliced evaluation (see module docstring)."""

  SPEC_CLASS = spec.RealizedMetricsSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, evaluation: types.BaseChannel, model_name: str, min_auc: float,
               model_version: Optional[int] = None,
               baseline: Optional[types.BaseChannel] = None):
    if (model_version is None) == (baseline is None):
      raise ValueError('RealizedMetrics needs the version: give exactly one of `model_version` '
                       'and `baseline` (a TrainingBaselineResolver output)')
    super().__init__(spec=spec.RealizedMetricsSpec(
        evaluation=evaluation, baseline=baseline, model_name=model_name,
        model_version=model_version, min_auc=min_auc,
        realized_metrics=types.Channel(type=spec.RealizedMetricsArtifact)))
