"""ServingLogExampleGen: the served traffic of a time window as an `Examples` artifact.

Reads the server's request logs (TFRecord files of `PredictionLog`, one record per example, see
serving/log_writer.py) for `[window_start, window_end)` (unix seconds of the request; either may
be omitted), only finalized files (`prediction_log-*.tfrecord`, never the hidden `.tmp` ones), and
writes each logged example as a tf.Example with:
- the features as the server logged them (after its privacy redaction/hashing),
- `prediction` (float, the served probability), `model_version` (int), `request_id` (bytes),
  `log_timestamp` (int),
- `big_tipper` (the label) when ground truth for the request was delivered under `feedback_dir`
  (CSV `request_id,big_tipper[,example]`, see components/serving_log_gen/feedback.py).

A missing value is an absent feature, as on the training path: a logged feature with an empty
value list is left out. With the `schema` input, a logged example without a value for a feature
the model requires (a model feature the schema says is always present) is counted and named
(`examples_missing_required`, `missing_required_features`: "fare:3,...").

Two splits: `serving` (every example: StatisticsGen, DriftDetector) and `labeled` (those with a
label: the Evaluator, `example_splits=['labeled']`). Corrupt or truncated records, undecodable
logs, and bad or unmatched feedback are skipped and counted, never fatal: the counts are custom
properties of the output (`num_examples`, `num_labeled`, `model_versions`, `corrupt_records`,
`truncated_files`, `skipped_bytes`, `temporary_files_ignored`, `num_unconvertible`,
`labels_unknown`, `labels_outside_window`, `duplicate_labels`, `conflicting_keys`, ... and all of
them as JSON in `window_counts`) and `serving_log_window.json` in the artifact.

Caching: the logs and the feedback are not input artifacts, so the cache key is the parameters
(and the schema); by default the constructor adds a fingerprint of the log and feedback files
(names, sizes, mtimes) as a parameter, so new logs or new feedback make it run again. A pipeline compiled once and run later (Kubeflow)
must pass `input_fingerprint=''` and disable caching instead.

Example:
  serving_examples = ServingLogExampleGen(
      log_dir=home.request_log_dir(h), feedback_dir=home.feedback_dir(h),
      window_start=1767225600, window_end=1767229200,
      schema=schema_importer.outputs['schema']).outputs['examples']
"""
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import standard_artifacts

from components.serving_log_gen import executor
from components.serving_log_gen import spec

AUTO = 'auto'


class ServingLogExampleGen(base_component.BaseComponent):
  """Request logs of a time window -> Examples (see module docstring)."""

  SPEC_CLASS = spec.ServingLogExampleGenSpec
  EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

  def __init__(self, log_dir: str, feedback_dir: Optional[str] = None,
               window_start: Optional[int] = None, window_end: Optional[int] = None,
               model_name: Optional[str] = None, input_fingerprint: Optional[str] = AUTO,
               schema: Optional[types.BaseChannel] = None):
    """`input_fingerprint`: 'auto' (default) fingerprints the log and feedback files now."""
    if window_start is not None and window_end is not None and window_end <= window_start:
      raise ValueError(f'window_end ({window_end}) must be after window_start ({window_start})')
    if input_fingerprint == AUTO:
      input_fingerprint = executor.window_fingerprint(log_dir, feedback_dir)
    super().__init__(spec=spec.ServingLogExampleGenSpec(
        log_dir=log_dir,
        feedback_dir=feedback_dir or '',
        window_start=window_start,
        window_end=window_end,
        model_name=model_name or '',
        input_fingerprint=input_fingerprint or '',
        schema=schema,
        examples=types.Channel(type=standard_artifacts.Examples)))
