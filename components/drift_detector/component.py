"""DriftDetector: is the served traffic still the data the serving model was trained on?

Compares a serving window (ServingLogExampleGen's `serving` split) with the training data of the
model version that served it: the raw training Examples and their StatisticsGen output, resolved
through ML Metadata lineage (metadata/lineage.py: PushedModel -> Model -> Trainer's examples ->
Transform's input -> StatisticsGen) and brought into the monitoring pipeline with Importers that
re-use those very artifacts, so the lineage edge baseline -> drift verdict is recorded in MLMD.

Measured per feature: L-infinity (categorical) and Jensen-Shannon divergence (numeric, quantile
bins of the baseline, missing values a bin of their own), plus prediction drift (the model's
predictions on held-out training rows vs the served ones) and label drift (when ground truth was
joined). Thresholds are calibrated for the window's size by resampling the baseline, so the share
of clean windows flagged stays at the policy's target whatever the window size; two tiers,
warning and critical (components/drift_detector/policy.py). TFDV validates the window against the
schema's SERVING environment: a schema break (a renamed field, a number sent as text) is an
anomaly and a `critical` verdict with `schema_break=1`, never a crash. Below the policy's minimum
window size: `insufficient_data`.

In a pipeline compiled for a cluster, where nothing can be resolved at build time, the baseline
comes instead as one `baseline` input: TrainingBaselineResolver's manifest of the same four
artifacts, resolved by the same lineage walk at run time (components/baseline_resolver). Give
either `baseline_examples` (with the optional statistics, model, pushed model) or `baseline`.

Traffic of several versions in one window (stable + canary): only rows answered by the baseline's
version are assessed (the `pushed_model` input's `pushed_version`, or `model_version`); the others
are counted in the report. Use one DriftDetector per served version, each with its own baseline.

Outputs:
- `anomalies` (ExampleAnomalies, split `serving`): TFDV's schema anomalies, our drift anomalies
  (WARNING or ERROR severity) and every measurement in `drift_skew_info`;
- `report` (LooplineDriftReport): `drift.json` and `drift.html` (one plot per drifted measure).
Both carry the custom properties `verdict` (no_drift | warning | critical | insufficient_data),
`drifted_features`, `critical_features` (comma-separated measure names; `prediction` and
`big_tipper` name prediction and label drift), `schema_break`, `num_rows`, `model_version`.

Example:
  detector = DriftDetector(
      examples=serving_log_gen.outputs['examples'],
      statistics=statistics_gen.outputs['statistics'],
      baseline_examples=importers['examples'].outputs['result'],
      baseline_statistics=importers['statistics'].outputs['result'],
      schema=schema_importer.outputs['schema'],
      model=importers['model'].outputs['result'],
      pushed_model=importers['pushed_model'].outputs['result'],
      policy=DriftPolicy())
  # or, resolved at run time:
  detector = DriftDetector(examples=..., statistics=..., schema=...,
                           baseline=baseline_resolver.outputs['baseline'])
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.drift_detector import executor
from components.drift_detector import policy as policy_lib
from components.drift_detector import spec


class DriftDetector(base_component.BaseComponent):
  """Drift of a serving window against its lineage-resolved baseline (see module docstring)."""

  SPEC_CLASS = spec.DriftDetectorSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, examples: types.BaseChannel, schema: types.BaseChannel,
               baseline_examples: Optional[types.BaseChannel] = None,
               statistics: Optional[types.BaseChannel] = None,
               baseline_statistics: Optional[types.BaseChannel] = None,
               model: Optional[types.BaseChannel] = None,
               pushed_model: Optional[types.BaseChannel] = None,
               baseline: Optional[types.BaseChannel] = None,
               policy: Optional[policy_lib.DriftPolicy] = None,
               model_version: Optional[int] = None,
               serving_split: str = spec.DEFAULT_SERVING_SPLIT,
               baseline_split: str = spec.DEFAULT_BASELINE_SPLIT,
               prediction_split: str = spec.DEFAULT_PREDICTION_SPLIT):
    if (baseline is None) == (baseline_examples is None):
      raise ValueError('DriftDetector needs its baseline either as `baseline_examples` (and the '
                       'optional statistics, model, pushed model) or as `baseline` (a '
                       'TrainingBaselineResolver output): give exactly one of the two')
    if baseline is not None and any(c is not None for c in (baseline_statistics, model,
                                                             pushed_model)):
      raise ValueError('DriftDetector: `baseline` already names the statistics, model and '
                       'pushed model; do not pass them too')
    super().__init__(spec=spec.DriftDetectorSpec(
        examples=examples,
        statistics=statistics,
        baseline_examples=baseline_examples,
        baseline_statistics=baseline_statistics,
        schema=schema,
        model=model,
        pushed_model=pushed_model,
        baseline=baseline,
        drift_policy=(policy or policy_lib.DriftPolicy()).to_json(),
        model_version=model_version,
        serving_split=serving_split,
        baseline_split=baseline_split,
        prediction_split=prediction_split,
        anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies),
        report=types.Channel(type=spec.DriftReport)))
