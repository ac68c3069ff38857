"""Executor of ServingLogExampleGen, and the plain function it runs (`generate_window`).

`generate_window(log_dir, output_uri, ...)` reads the finalized request-log files of a time window
(converter.py), joins the ground truth (feedback.py), and writes an Examples layout:

    <output_uri>/Split-serving/data_tfrecord-00000-of-00001.gz   every logged example
    <output_uri>/Split-labeled/data_tfrecord-00000-of-00001.gz   those with ground truth
    <output_uri>/serving_log_window.json                          every count (see spec.py)

(gzipped TFRecords of tf.Examples, as every TFX ExampleGen writes them). An empty window writes
empty splits: downstream components see zero examples, never a missing file.
"""
import hashlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.util import examples_utils
from tfx.dsl.components.base import base_executor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils
from tfx.utils import io_utils

from components.serving_log_gen import converter
from components.serving_log_gen import feedback as feedback_lib
from components.serving_log_gen import spec

DATA_FILE = 'data_tfrecord-00000-of-00001.gz'


def window_fingerprint(log_dir: str, feedback_dir: Optional[str] = None) -> str:
  """sha256 over the names, sizes and modification times of the finalized logs and feedback files.

  Changes whenever a log file is finalized or deleted or feedback arrives, so a cached run of the
  ExampleGen is reused only when nothing it would read changed.
  """
  digest = hashlib.sha256()
  for directory in (log_dir, feedback_dir):
    if not directory or not os.path.isdir(directory):
      digest.update(b'-')
      continue
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
      if entry.is_file() and not entry.name.startswith('.'):
        stat = entry.stat()
        digest.update(f'{entry.name}:{stat.st_size}:{stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()


def write_split(output_uri: str, split: str, serialized: List[bytes]) -> str:
  directory = os.path.join(output_uri, f'Split-{split}')
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, DATA_FILE)
  with tf.io.TFRecordWriter(path, options='GZIP') as writer:
    for record in serialized:
      writer.write(record)
  return path


def generate_window(log_dir: str, output_uri: str, feedback_dir: Optional[str] = None,
                    window_start: Optional[int] = None, window_end: Optional[int] = None,
                    model_name: Optional[str] = None,
                    required_features: Sequence[str] = ()) -> Dict[str, Any]:
  """Writes the window's examples under `output_uri`; returns the summary (also written as JSON).
  `required_features`: logged examples without a value for one are counted, per feature."""
  window = converter.read_window(log_dir, window_start, window_end, model_name=model_name,
                                 required_features=required_features)
  feedback = feedback_lib.read_feedback(feedback_dir)
  labels = feedback_lib.join((e.key for e in window.examples), feedback,
                             window.keys_outside_window)
  serving, labeled = [], []
  for logged, label in zip(window.examples, labels):
    serialized, reserved, empty = converter.to_output_example(logged, label)
    window.counts.reserved_features_dropped += reserved
    window.counts.empty_features_dropped += empty
    serving.append(serialized)
    if label is not None:
      labeled.append(serialized)
  write_split(output_uri, spec.SERVING_SPLIT, serving)
  write_split(output_uri, spec.LABELED_SPLIT, labeled)
  summary = {
      'log_dir': log_dir,
      'feedback_dir': feedback_dir,
      'window_start': window_start,
      'window_end': window_end,
      'model_name': model_name,
      'num_examples': len(serving),
      'num_labeled': len(labeled),
      'model_versions': {str(k): v for k, v in converter.model_versions(window.examples).items()},
      'label_counts': feedback_lib.label_counts(labels),
      'logs': window.counts.as_dict(),
      'feedback': feedback.counts.as_dict(),
  }
  with tf.io.gfile.GFile(os.path.join(output_uri, spec.SUMMARY_FILE), 'w') as f:
    f.write(json.dumps(summary, indent=2, sort_keys=True))
  if window.counts.examples_missing_required:
    logging.warning('Serving window: %d logged example(s) without a value for a feature the '
                    'model requires: %s', window.counts.examples_missing_required,
                    format_missing(window.counts.missing_required))
  skipped = window.counts.num_unconvertible + window.counts.corrupt_records
  if skipped or window.counts.truncated_files:
    logging.warning('Serving window: %d record(s)/example(s) skipped, %d truncated file(s): %s',
                    skipped, window.counts.truncated_files, window.counts.as_dict())
  logging.info('Serving window: %d examples (%d labeled) from %d file(s); versions %s',
               len(serving), len(labeled), window.counts.files_read, summary['model_versions'])
  return summary


def format_missing(missing: Dict[str, int]) -> str:
  """{'fare': 3, 'payment_type': 1} -> 'fare:3,payment_type:1' (by count, then name)."""
  return ','.join(f'{name}:{count}' for name, count in
                  sorted(missing.items(), key=lambda kv: (-kv[1], kv[0])))


def record_summary(examples: types.Artifact, summary: Dict[str, Any]) -> None:
  """Puts the window's counts on the Examples artifact (custom properties, for MLMD queries)."""
  examples.split_names = artifact_utils.encode_split_names(list(spec.SPLITS))
  examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
  examples.set_int_custom_property(spec.NUM_EXAMPLES_PROPERTY, summary['num_examples'])
  examples.set_int_custom_property(spec.NUM_LABELED_PROPERTY, summary['num_labeled'])
  examples.set_string_custom_property(
      spec.MODEL_VERSIONS_PROPERTY,
      ','.join(f'{k}:{v}' for k, v in summary['model_versions'].items()))
  for name in spec.SKIPPED_PROPERTIES:
    examples.set_int_custom_property(name, int(summary['logs'][name]))
  for name in spec.FEEDBACK_PROPERTIES:
    examples.set_int_custom_property(name, int(summary['feedback'][name]))
  examples.set_int_custom_property(spec.MISSING_REQUIRED_PROPERTY,
                                   int(summary['logs']['examples_missing_required']))
  examples.set_string_custom_property(spec.MISSING_REQUIRED_FEATURES_PROPERTY,
                                      format_missing(summary['logs']['missing_required']))
  for name in ('window_start', 'window_end'):
    if summary[name] is not None:
      examples.set_int_custom_property(name, int(summary[name]))
  examples.set_string_custom_property(spec.COUNTS_PROPERTY, json.dumps(
      {'logs': summary['logs'], 'feedback': {k: v for k, v in summary['feedback'].items()
                                             if k != 'problems'}}, sort_keys=True))


class Executor(base_executor.BaseExecutor):
  """Reads the window, joins the ground truth, writes the Examples (see module docstring)."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    examples = artifact_utils.get_single_instance(output_dict[spec.EXAMPLES_KEY])
    required: Sequence[str] = ()
    if input_dict.get(spec.SCHEMA_KEY):
      required = converter.required_features(io_utils.SchemaReader().read(
          io_utils.get_only_uri_in_dir(artifact_utils.get_single_uri(
              input_dict[spec.SCHEMA_KEY]))))
    summary = generate_window(
        log_dir=exec_properties[spec.LOG_DIR_KEY],
        output_uri=examples.uri,
        feedback_dir=exec_properties.get(spec.FEEDBACK_DIR_KEY) or None,
        window_start=exec_properties.get(spec.WINDOW_START_KEY),
        window_end=exec_properties.get(spec.WINDOW_END_KEY),
        model_name=exec_properties.get(spec.MODEL_NAME_KEY) or None,
        required_features=required)
    record_summary(examples, summary)
