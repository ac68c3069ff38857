"""One run of the training pipeline, as `loopline train` and the loop start it: the inputs checked
before TFX starts (every span the run will read, training and holdout, and the schema),
LocalDagRunner, the run summary and the time-ordered holdout, then the pushed version staged in
the registry.
"""
import os
import sys
import time
from typing import Optional, Tuple

SpanRange = Tuple[int, int]


def default_holdout(config, data_root: Optional[str] = None
                    ) -> Tuple[Optional[SpanRange], Optional[str]]:
  """The time-ordered holdout a run scores on when none was asked for: the future spans (6-8)
  if they are all under the data root and none of them trains. Returns (spans, None), or
  (None, a note saying why there is no holdout): a missing default is not an error."""
  from core import spans as spans_lib
  root = data_root or config.data_root
  first, last = spans_lib.FUTURE_SPANS
  if _overlap((first, last), config):
    return None, (f'no time-ordered holdout: the future spans {first}-{last} are among the '
                  f'training spans {config.first_span}-{config.last_span}')
  if '://' in root:
    return None, f'no time-ordered holdout: {root} is not a local directory'
  try:
    spans_lib.check_span_range(root, first, last)
  except spans_lib.SpanError as e:
    return None, f'no time-ordered holdout: {e}'
  return (first, last), None


def _overlap(spans: SpanRange, config) -> bool:
  return spans[0] <= config.last_span and config.first_span <= spans[1]


def check_holdout(config, holdout_spans: SpanRange, data_root: Optional[str] = None) -> None:
  """An asked-for holdout must exist (SpanError naming what is missing) and must not be among
  the training spans (ValueError)."""
  from core import spans as spans_lib
  if _overlap(holdout_spans, config):
    raise ValueError(f'holdout spans {holdout_spans[0]}-{holdout_spans[1]} overlap the training '
                     f'spans {config.first_span}-{config.last_span}: a holdout must be data the '
                     f'model never trained on')
  root = data_root or config.data_root
  if '://' not in root:
    spans_lib.check_span_range(root, *holdout_spans)


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
  the trained model is scored on: the time-ordered holdout, checked before the run like the
  training spans.
  Raises DataGateError (blocking anomalies), ValueError/SpanError (bad input).
  """
  from pipeline import holdout
  check_inputs(config)
  if holdout_spans:
    check_holdout(config, holdout_spans, holdout_data_root)
  summary = _run_pipeline(config, 'train', out)
  holdout_root = holdout_data_root or config.data_root
  if holdout_spans and summary.get('model_uri') and '://' not in holdout_root:
    summary['holdout'] = holdout.evaluate_on_spans(summary['model_uri'], holdout_root,
                                                   holdout_spans[0], holdout_spans[1],
                                                   config.schema_path)
  return summary


GATE_NODE = 'DataGate'


def validate(config, out=None) -> dict:
  """Runs the training pipeline up to the data gate and no further (ExampleGen, statistics,
  SpanValidator, ExampleValidator, DataGate): is the data fit to train on? Returns the run
  summary (`data_gate` with every finding). Raises DataGateError (blocking anomalies),
  ValueError/SpanError (bad input)."""
  check_inputs(config)
  return _run_pipeline(config, 'validate', out, to_node=GATE_NODE)


def _run_pipeline(config, command: str, out=None, to_node: Optional[str] = None) -> dict:
  """LocalDagRunner on the training pipeline (up to `to_node`, or whole), with progress; the
  run summary. A blocking data gate surfaces as its own DataGateError."""
  from tfx.orchestration import pipeline as pipeline_lib
  from tfx.orchestration.local.local_dag_runner import LocalDagRunner
  from components.data_gate.executor import DataGateError
  from pipeline import progress, run_summary, training_pipeline
  out = out or sys.stdout      # looked up per call: a test's or a notebook's stdout may change
  log_file = os.path.join(config.home, 'logs', f'{command}-{time.strftime("%Y%m%d-%H%M%S")}.log')
  print(f'Training pipeline {config.pipeline_name}'
        + (f' up to {to_node}' if to_node else ''), file=out)
  for line in config.describe():
    print(f'  {line}', file=out)
  print(f'  full logs: {log_file}', file=out, flush=True)
  started = time.monotonic()
  run_options = pipeline_lib.RunOptions(to_nodes=[to_node]) if to_node else None
  try:
    with progress.show_progress(log_file):
      LocalDagRunner().run(training_pipeline.create_pipeline(
          config, config.enable_tuning or training_pipeline.tuned_hyperparameters_exist(config)),
                           run_options=run_options)
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
