"""Executor of DriftDetector, and the plain function it runs (`detect_drift`).

`detect_drift` takes serialized tf.Examples (the window, the baseline rows) and protos, so the
CLI, notebooks and the benchmark call it without TFX artifacts:
1. the window's rows become columns (columns.py); with a model version to assess, rows answered by
   other versions are left out (counted): each version is compared with its own baseline;
2. the drift measures against the baseline, with thresholds calibrated for the window's size
   (drift.py), for every monitored feature, the prediction (baseline: the served model's
   predictions on held-out training rows) and the label (when ground truth was joined);
3. TFDV validates the window's statistics against the schema's SERVING environment (the label and
   the ExampleGen's metadata features allowed), and the anomalies are classified with the drift
   policy's schema severity: blocking ones are a schema break, and make the verdict critical;
4. TFDV's own drift comparators (the schema's fixed thresholds) are run on the same statistics
   for comparison only: their values are reported beside ours and do not change the verdict;
5. one Anomalies proto (TFDV's schema anomalies, plus our drift anomalies as
   COMPARATOR_L_INFTY_HIGH / COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH, WARNING or ERROR severity,
   and every measurement in drift_skew_info), the JSON summary and the HTML report.
"""
import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from absl import logging
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx import types
from tfx.components.statistics_gen import stats_artifact_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.types import standard_artifacts
from tfx.utils import io_utils
from tfx.utils import path_utils

from components.baseline_resolver import manifest as manifest_lib
from components.data_gate import policy as gate_policy
from components.drift_detector import columns as columns_lib
from components.drift_detector import drift
from components.drift_detector import policy as policy_lib
from components.drift_detector import report as report_lib
from components.drift_detector import spec
from components.serving_log_gen import spec as log_spec
from core.statistics import STATS_OPTIONS
from models import features

PREDICTION_BATCH = 1024
_METRIC_ANOMALY = {
    drift.JENSEN_SHANNON: anomalies_pb2.AnomalyInfo.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
    drift.L_INFINITY: anomalies_pb2.AnomalyInfo.COMPARATOR_L_INFTY_HIGH}
_METRIC_MEASUREMENT = {
    drift.JENSEN_SHANNON: anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE,
    drift.L_INFINITY: anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY}


# ----------------------------------------------------------------------------- reading artifacts

def read_split(examples_uri: str, split: str) -> List[bytes]:
  """Serialized records of one split of an Examples artifact (gzipped or plain TFRecords)."""
  directory = os.path.join(examples_uri, f'Split-{split}')
  if not tf.io.gfile.isdir(directory):
    raise FileNotFoundError(f'split {split!r} not found under {examples_uri}')
  files = sorted(tf.io.gfile.glob(os.path.join(directory, '*')))
  records = []
  for path in files:
    compression = 'GZIP' if path.endswith('.gz') else ''
    dataset = tf.data.TFRecordDataset(path, compression_type=compression).batch(8192)
    for batch in dataset.as_numpy_iterator():
      records.extend(batch.tolist())
  return records


def split_names(artifact: types.Artifact) -> List[str]:
  return artifact_utils.decode_split_names(artifact.split_names)


def load_statistics(artifact: Optional[types.Artifact],
                    split: str) -> Optional[statistics_pb2.DatasetFeatureStatisticsList]:
  if artifact is None or split not in split_names(artifact):
    return None
  return stats_artifact_utils.load_statistics(artifact, split).proto()


def model_predictions(model_dir: str, serialized: Sequence[bytes]) -> np.ndarray:
  """P(big tipper) of the exported model's serving signature for each serialized example."""
  loaded = tf.saved_model.load(model_dir)
  signature = loaded.signatures[features.SERVING_SIGNATURE]
  result = []
  for start in range(0, len(serialized), PREDICTION_BATCH):
    batch = tf.constant(list(serialized[start:start + PREDICTION_BATCH]))
    output = signature(**{features.SERVING_INPUT_KEY: batch})[features.PREDICTION_KEY]
    result.append(np.asarray(output).reshape(len(batch), -1)[:, -1])
  return np.concatenate(result) if result else np.zeros(0)


# ----------------------------------------------------------------------------- schema and TFDV

def serving_schema(schema: schema_pb2.Schema,
                   exclude: Sequence[str] = ()) -> schema_pb2.Schema:
  """The schema a serving window is validated against (SERVING environment).

  The label may be present (joined ground truth, on some rows only), the ExampleGen's metadata
  features are declared (a prediction must be a probability), excluded features (hashed or
  redacted by the server's privacy filter) are dropped.
  """
  result = schema_pb2.Schema()
  result.CopyFrom(schema)
  kept = [f for f in result.feature if f.name not in exclude]
  del result.feature[:]
  result.feature.extend(kept)
  by_name = {f.name: f for f in result.feature}
  label = by_name.get(features.LABEL_KEY)
  if label is not None:
    environments = [e for e in label.not_in_environment if e != 'SERVING']
    del label.not_in_environment[:]
    label.not_in_environment.extend(environments)
    label.presence.min_fraction = 0.0
    label.presence.min_count = 0
  declared = {log_spec.PREDICTION_FEATURE: schema_pb2.FLOAT,
              log_spec.MODEL_VERSION_FEATURE: schema_pb2.INT,
              log_spec.REQUEST_ID_FEATURE: schema_pb2.BYTES,
              log_spec.TIMESTAMP_FEATURE: schema_pb2.INT}
  for name, feature_type in declared.items():
    if name in by_name:
      continue
    feature = result.feature.add(name=name, type=feature_type)
    feature.value_count.min = 1
    feature.value_count.max = 1
    if name == log_spec.PREDICTION_FEATURE:
      feature.float_domain.min = 0.0
      feature.float_domain.max = 1.0
  return result


def window_statistics(serialized: Sequence[bytes],
                      schema: schema_pb2.Schema) -> statistics_pb2.DatasetFeatureStatisticsList:
  """TFDV statistics of the rows, in memory (no Beam), with the training pipeline's options."""
  from tensorflow_data_validation.statistics import stats_impl
  from tfx_bsl.coders import example_coder
  batch = example_coder.ExamplesToRecordBatchDecoder().DecodeBatch(list(serialized))
  return stats_impl.generate_statistics_in_memory(
      batch, tfdv.StatsOptions(schema=schema, **STATS_OPTIONS))


def _without_features(stats: statistics_pb2.DatasetFeatureStatisticsList,
                      exclude: Sequence[str]) -> statistics_pb2.DatasetFeatureStatisticsList:
  if not exclude:
    return stats
  result = statistics_pb2.DatasetFeatureStatisticsList()
  result.CopyFrom(stats)
  for dataset in result.datasets:
    kept = [f for f in dataset.features
            if (f.path.step[0] if f.path.step else f.name) not in exclude]
    del dataset.features[:]
    dataset.features.extend(kept)
  return result


def tfdv_fixed_thresholds(window_stats, baseline_stats, schema) -> Dict[str, Dict[str, Any]]:
  """TFDV's own drift values at the schema's fixed thresholds: {feature: value, threshold, flagged}.

  For comparison only (see module docstring).
  """
  anomalies = tfdv.validate_statistics(window_stats, schema, environment='SERVING',
                                       previous_statistics=baseline_stats)
  result = {}
  for info in anomalies.drift_skew_info:
    name = '.'.join(info.path.step)
    for measurement in info.drift_measurements:
      result[name] = {'value': float(measurement.value),
                      'threshold': float(measurement.threshold),
                      'flagged': bool(measurement.value > measurement.threshold)}
  return result


# ----------------------------------------------------------------------------- detection

@dataclasses.dataclass
class DriftOutcome:
  verdict: str
  summary: Dict[str, Any]
  anomalies: anomalies_pb2.Anomalies
  html: str
  assessment: drift.Assessment

  @property
  def drifted_features(self) -> List[str]:
    return self.summary['drifted']

  @property
  def critical_features(self) -> List[str]:
    return self.summary['critical']


def build_baseline(baseline_rows: Sequence[bytes], schema: schema_pb2.Schema,
                   policy: policy_lib.DriftPolicy,
                   baseline_predictions: Optional[np.ndarray] = None) -> drift.Baseline:
  specs = columns_lib.feature_specs(schema, policy.features, exclude=policy.exclude_features)
  columns = columns_lib.columns_from_examples(baseline_rows, specs,
                                              extra_int=[features.LABEL_KEY])
  labels = columns.values.pop(features.LABEL_KEY)
  return drift.Baseline(columns, specs, policy, predictions=baseline_predictions,
                        labels=labels if (labels >= 0).any() else None,
                        label_name=features.LABEL_KEY,
                        prediction_name=log_spec.PREDICTION_FEATURE)


def detect_drift(window_rows: Sequence[bytes], schema: schema_pb2.Schema,
                 baseline: drift.Baseline,
                 baseline_statistics: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None,
                 window_stats: Optional[statistics_pb2.DatasetFeatureStatisticsList] = None,
                 model_version: Optional[int] = None,
                 monitor: Optional[drift.Monitor] = None,
                 baseline_info: Optional[Dict[str, Any]] = None) -> DriftOutcome:
  """The verdict on a window of serialized serving examples (see module docstring).

  `window_stats`: statistics of exactly these rows, if already computed (StatisticsGen); they are
  computed in memory otherwise, or when rows of other model versions had to be left out.
  `monitor`: reuse one (and its calibration cache) across windows of one baseline.
  """
  policy = baseline.policy
  monitor = monitor or drift.Monitor(baseline)
  specs = baseline.specs
  columns = columns_lib.columns_from_examples(
      window_rows, specs, extra_numeric=[log_spec.PREDICTION_FEATURE],
      extra_int=[log_spec.MODEL_VERSION_FEATURE, features.LABEL_KEY])
  versions_column = columns.values.pop(log_spec.MODEL_VERSION_FEATURE)
  predictions = columns.values.pop(log_spec.PREDICTION_FEATURE)
  labels = columns.values.pop(features.LABEL_KEY)
  versions = {str(int(v)): int(c) for v, c in zip(*np.unique(versions_column,
                                                             return_counts=True))}
  rows = list(window_rows)
  if model_version is not None and model_version >= 0:
    keep = versions_column == model_version
    if not keep.all():
      invalid = columns.invalid
      columns = columns.select(keep)
      columns.invalid = invalid       # counts over the whole window: a break is a break
      predictions, labels = predictions[keep], labels[keep]
      rows = [r for r, k in zip(rows, keep) if k]
      window_stats = None
  assessment = monitor.assess(columns, predictions=predictions, labels=labels)

  validation_schema = serving_schema(schema, policy.exclude_features)
  anomalies = anomalies_pb2.Anomalies()
  tfdv_values: Dict[str, Dict[str, Any]] = {}
  if rows:
    if window_stats is None:
      window_stats = window_statistics(rows, validation_schema)
    window_stats = _without_features(window_stats, policy.exclude_features)
    anomalies = tfdv.validate_statistics(window_stats, validation_schema, environment='SERVING')
    if baseline_statistics is not None:
      tfdv_values = tfdv_fixed_thresholds(
          window_stats, _without_features(baseline_statistics, policy.exclude_features),
          validation_schema)
  findings = gate_policy.classify({'serving': anomalies}, policy.schema_policy)
  blocking = [f for f in findings if f.severity == gate_policy.BLOCKING]

  verdict, reason = assessment.verdict, assessment.reason
  if blocking:
    verdict = policy_lib.CRITICAL
    reason = (f'schema break: {len(blocking)} blocking anomal'
              f'{"y" if len(blocking) == 1 else "ies"} in '
              f'{", ".join(sorted({f.feature for f in blocking}))}; ' + reason)
  _add_drift_anomalies(anomalies, assessment)
  summary = _summary(verdict, reason, assessment, findings, tfdv_values, policy, versions,
                     len(window_rows), model_version, baseline, baseline_info or {})
  return DriftOutcome(verdict, summary, anomalies, report_lib.to_html(summary), assessment)


def _add_drift_anomalies(anomalies: anomalies_pb2.Anomalies,
                         assessment: drift.Assessment) -> None:
  for measure in assessment.measures:
    if measure.value is None:
      continue
    info = anomalies.drift_skew_info.add()
    info.path.step.append(measure.name)
    info.drift_measurements.add(type=_METRIC_MEASUREMENT[measure.metric], value=measure.value,
                                threshold=measure.thresholds[policy_lib.WARNING])
    if not measure.drifted:
      continue
    anomaly = anomalies.anomaly_info[measure.name]
    severity = (anomalies_pb2.AnomalyInfo.ERROR if measure.status == policy_lib.CRITICAL
                else anomalies_pb2.AnomalyInfo.WARNING)
    if anomaly.severity != anomalies_pb2.AnomalyInfo.ERROR:
      anomaly.severity = severity
    anomaly.path.step[:] = [measure.name]
    description = (f'{measure.metric} {measure.value:.4f} above the calibrated '
                   f'{measure.status} threshold {measure.thresholds[measure.status]:.4f} '
                   f'for {measure.n_window} rows ({measure.role} drift)')
    anomaly.reason.add(type=_METRIC_ANOMALY[measure.metric],
                       short_description=f'{measure.role} drift ({measure.status})',
                       description=description)
    anomaly.short_description = anomaly.reason[0].short_description if len(
        anomaly.reason) == 1 else 'Multiple errors'
    anomaly.description = ' '.join(r.description for r in anomaly.reason)


def _summary(verdict, reason, assessment, findings, tfdv_values, policy, versions, n_window,
             model_version, baseline, baseline_info) -> Dict[str, Any]:
  measures = []
  for m in assessment.measures:
    row = dataclasses.asdict(m)
    row['tfdv'] = tfdv_values.get(m.name)
    measures.append(row)
  return {
      'verdict': verdict,
      'reason': reason,
      'schema_break': any(f.severity == gate_policy.BLOCKING for f in findings),
      'drifted': assessment.drifted,
      'critical': assessment.critical,
      'drifted_features': assessment.drifted_features,
      'window': {'rows': n_window, 'rows_assessed': assessment.n_rows,
                 'labeled': assessment.n_labeled, 'model_versions': versions,
                 'model_version_assessed': model_version,
                 'rows_other_versions': n_window - assessment.n_rows},
      'baseline': dict(baseline_info, rows=baseline.n_rows,
                       prediction_rows=(baseline.size(log_spec.PREDICTION_FEATURE) if any(
                           m.role == drift.PREDICTION for m in baseline.measures) else 0)),
      'schema_anomalies': [dataclasses.asdict(f) for f in findings],
      'tfdv_fixed_thresholds_flagged': sorted(k for k, v in tfdv_values.items() if v['flagged']),
      'measures': measures,
      'policy': json.loads(policy.to_json()),
  }


# ----------------------------------------------------------------------------- executor

def write_outputs(outcome: DriftOutcome, anomalies_artifact: types.Artifact,
                  report_artifact: types.Artifact, model_version: Optional[int],
                  split: str) -> None:
  anomalies_artifact.split_names = artifact_utils.encode_split_names([split])
  io_utils.write_bytes_file(
      os.path.join(anomalies_artifact.uri, f'Split-{split}', spec.ANOMALIES_FILE),
      outcome.anomalies.SerializeToString())
  with tf.io.gfile.GFile(os.path.join(report_artifact.uri, spec.REPORT_JSON), 'w') as f:
    f.write(report_lib.to_json(outcome.summary))
  with tf.io.gfile.GFile(os.path.join(report_artifact.uri, spec.REPORT_HTML), 'w') as f:
    f.write(outcome.html)
  for artifact in (anomalies_artifact, report_artifact):
    artifact.set_string_custom_property(spec.VERDICT_PROPERTY, outcome.verdict)
    artifact.set_string_custom_property(spec.DRIFTED_PROPERTY,
                                        ','.join(outcome.summary['drifted']))
    artifact.set_string_custom_property(spec.CRITICAL_PROPERTY,
                                        ','.join(outcome.summary['critical']))
    artifact.set_int_custom_property(spec.SCHEMA_BREAK_PROPERTY,
                                     int(outcome.summary['schema_break']))
    artifact.set_int_custom_property(spec.NUM_ROWS_PROPERTY, outcome.assessment.n_rows)
    artifact.set_int_custom_property(spec.MODEL_VERSION_PROPERTY,
                                     -1 if model_version is None else int(model_version))


def _optional(input_dict, key) -> Optional[types.Artifact]:
  artifacts = input_dict.get(key) or []
  return artifacts[0] if artifacts else None


def pushed_version_of(pushed_model: Optional[types.Artifact]) -> Optional[int]:
  if pushed_model is None or not pushed_model.has_custom_property('pushed_version'):
    return None
  value = pushed_model.get_custom_property('pushed_version')
  try:
    return int(value)
  except (TypeError, ValueError):
    return None


@dataclasses.dataclass
class BaselineInputs:
  """The baseline artifacts, from the Importer channels or from a resolver's manifest."""
  examples: types.Artifact
  statistics: Optional[types.Artifact]
  model: Optional[types.Artifact]
  pushed_version: Optional[int]


def _artifact(artifact_type, uri: str, splits: Optional[Sequence[str]] = None) -> types.Artifact:
  artifact = artifact_type()
  artifact.uri = uri
  if splits is not None:
    artifact.split_names = artifact_utils.encode_split_names(list(splits))
  return artifact


def baseline_inputs(input_dict: Dict[str, List[types.Artifact]]) -> BaselineInputs:
  """The baseline as artifacts, whichever way it came (see the component's docstring)."""
  manifest_artifact = _optional(input_dict, spec.BASELINE_KEY)
  if manifest_artifact is None:
    return BaselineInputs(
        examples=artifact_utils.get_single_instance(input_dict[spec.BASELINE_EXAMPLES_KEY]),
        statistics=_optional(input_dict, spec.BASELINE_STATISTICS_KEY),
        model=_optional(input_dict, spec.MODEL_KEY),
        pushed_version=pushed_version_of(_optional(input_dict, spec.PUSHED_MODEL_KEY)))
  manifest = manifest_lib.read(manifest_artifact.uri)
  return BaselineInputs(
      examples=_artifact(standard_artifacts.Examples, manifest.examples_uri,
                         manifest.examples_splits),
      statistics=_artifact(standard_artifacts.ExampleStatistics, manifest.statistics_uri,
                           manifest.statistics_splits),
      model=_artifact(standard_artifacts.Model, manifest.model_uri),
      pushed_version=manifest.model_version)


class Executor(base_executor.BaseExecutor):
  """Measures drift of the serving window against its baseline (see module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    policy = policy_lib.DriftPolicy.from_json(exec_properties[spec.DRIFT_POLICY_KEY])
    serving_split = exec_properties.get(spec.SERVING_SPLIT_KEY) or spec.DEFAULT_SERVING_SPLIT
    baseline_split = exec_properties.get(spec.BASELINE_SPLIT_KEY) or spec.DEFAULT_BASELINE_SPLIT
    prediction_split = (exec_properties.get(spec.PREDICTION_SPLIT_KEY) or
                        spec.DEFAULT_PREDICTION_SPLIT)
    examples = artifact_utils.get_single_instance(input_dict[spec.EXAMPLES_KEY])
    schema = io_utils.SchemaReader().read(io_utils.get_only_uri_in_dir(
        artifact_utils.get_single_uri(input_dict[spec.SCHEMA_KEY])))
    statistics = _optional(input_dict, spec.STATISTICS_KEY)
    baseline_in = baseline_inputs(input_dict)
    baseline_examples, baseline_statistics, model = (baseline_in.examples, baseline_in.statistics,
                                                     baseline_in.model)

    model_version = exec_properties.get(spec.MODEL_VERSION_KEY)
    if model_version is None:
      model_version = baseline_in.pushed_version
    baseline_rows = read_split(baseline_examples.uri, baseline_split)
    predictions = None
    if model is not None and policy.prediction_drift:
      split = (prediction_split if prediction_split in split_names(baseline_examples)
               else baseline_split)
      rows = baseline_rows if split == baseline_split else read_split(baseline_examples.uri,
                                                                      split)
      predictions = model_predictions(path_utils.serving_model_path(model.uri), rows)
    baseline = build_baseline(baseline_rows, schema, policy, predictions)
    outcome = detect_drift(
        read_split(examples.uri, serving_split), schema, baseline,
        baseline_statistics=load_statistics(baseline_statistics, baseline_split),
        window_stats=load_statistics(statistics, serving_split),
        model_version=model_version,
        baseline_info={'examples_uri': baseline_examples.uri,
                       'statistics_uri': baseline_statistics.uri if baseline_statistics else None,
                       'model_uri': model.uri if model else None,
                       'pushed_version': baseline_in.pushed_version})
    write_outputs(outcome, artifact_utils.get_single_instance(output_dict[spec.ANOMALIES_KEY]),
                  artifact_utils.get_single_instance(output_dict[spec.REPORT_KEY]),
                  model_version, serving_split)
    log = logging.warning if outcome.verdict in (policy_lib.WARNING,
                                                 policy_lib.CRITICAL) else logging.info
    log('Drift verdict %s: %s', outcome.verdict, outcome.summary['reason'])
