"""One run of the training pipeline, as `loopline train` and the loop start it: the inputs checked
before TFX starts, LocalDagRunner, the run summary and the time-ordered holdout, then the pushed
version staged in the registry.
"""
import os
import sys
import time


def check_inputs(config) -> None:
  """Bad input is reported before TFX starts: data range, schema file."""
  from core import spans as spans_lib
  if '://' not in config.data_root:
    spans_lib.check_span_range(config.data_root, config.first_span, config.last_span)
  if '://' not in config.schema_path:
    if not os.path.isfile(config.schema_path):
      raise ValueError(f'schema file {config.schema_path!r} does not exist')
    import tensorflow_data_validation as tfdv
    from google.protobuf import text_format
    try:
      schema = tfdv.load_schema_text(config.schema_path)
    except text_format.ParseError as e:
      raise ValueError(f'schema file {config.schema_path!r} is malformed: {e}') from e
    if not schema.feature:
      raise ValueError(f'schema file {config.schema_path!r} declares no feature')


def train(config, out=None, holdout_spans=None, holdout_data_root=None) -> dict:
  """Runs the training pipeline with LocalDagRunner; returns the run summary.

  `holdout_spans`: later spans (under `holdout_data_root`, default the config's data root) that
  the trained model is scored on: the time-ordered holdout.
  Raises DataGateError (blocking anomalies), ValueError/SpanError (bad input).
  """
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from components.data_gate.executor import DataGateError
  from pipeline import holdout, progress, run_summary, training_pipeline
  out = out or sys.stdout      # looked up per call: a test's or a notebook's stdout may change
  check_inputs(config)
  log_file = os.path.join(config.home, 'logs', f'train-{time.strftime("%Y%m%d-%H%M%S")}.log')
  print(f'Training pipeline {config.pipeline_name}', file=out)
  for line in config.describe():
    print(f'  {line}', file=out)
  print(f'  full logs: {log_file}', file=out, flush=True)
  started = time.monotonic()
  try:
    with progress.show_progress(log_file):
      LocalDagRunner().run(training_pipeline.create_pipeline(
          config, config.enable_tuning or training_pipeline.tuned_hyperparameters_exist(config)))
  except DataGateError:
    raise
  except Exception as e:  # TFX wraps executor errors; surface the data gate's own message.
    cause = e
    while cause is not None and not isinstance(cause, DataGateError):
      cause = cause.__cause__ or cause.__context__
    if cause is not None:
      raise cause from None
    raise
  summary = run_summary.collect(config)
  summary['wall_seconds'] = time.monotonic() - started
  holdout_root = holdout_data_root or config.data_root
  if holdout_spans and summary.get('model_uri') and '://' not in holdout_root:
    summary['holdout'] = holdout.evaluate_on_spans(summary['model_uri'], holdout_root,
                                                   holdout_spans[0], holdout_spans[1],
                                                   config.schema_path)
  return summary


def stage_in_registry(config, summary: dict) -> None:
  """After a run that pushed: the version enters staging (canary), or production when there is
  none yet (registry/README.md). The outcome is added to the summary as `registry`."""
  if summary.get('pushed_version'):
    summary['registry'] = _stage_in_registry(config, summary['pushed_version'])


def _stage_in_registry(config, version) -> str:
  import registry
  try:
    transition = registry.stage_pushed_model(config, version)
  except registry.RegistryError as e:        # training succeeded; the registry refused
    return f'not staged: {e}'
  if transition is None:
    return f'version {version} already registered (stage unchanged)'
  return f'{transition.action}: version {transition.version} -> {transition.to_stage}'
