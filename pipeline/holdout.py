"""Quality on a time-ordered holdout: the pushed model scored on spans it never saw.

The Evaluator measures the model on a hash split of its own spans. Users care about the future:
this scores the exported `serving_default` signature (the calibrated probabilities the server
returns) on later spans (by default the held-back "future" spans 6-8) and reports AUC, log loss,
expected calibration error and accuracy.
"""
import csv
from typing import Dict, List

import numpy as np
import tensorflow as tf
import tensorflow_data_validation as tfdv
from sklearn import metrics

from core import examples as examples_lib
from core import spans as spans_lib
from models import calibration
from models import features

BATCH_SIZE = 512


def score_rows(model_dir: str, rows: List[Dict[str, str]], schema_path: str) -> np.ndarray:
  """P(big tipper) for each row, through the model's serving signature."""
  types = examples_lib.feature_types(tfdv.load_schema_text(schema_path))
  types.pop(features.LABEL_KEY, None)
  serve = tf.saved_model.load(model_dir).signatures[features.SERVING_SIGNATURE]
  scores = []
  for start in range(0, len(rows), BATCH_SIZE):
    batch = examples_lib.rows_to_serialized_examples(rows[start:start + BATCH_SIZE], types)
    output = serve(**{features.SERVING_INPUT_KEY: tf.constant(batch)})
    scores.append(output[features.PREDICTION_KEY].numpy().reshape(-1))
  return np.concatenate(scores) if scores else np.zeros(0)


def evaluate_on_spans(model_dir: str, data_root: str, first_span: int, last_span: int,
                      schema_path: str) -> Dict[str, float]:
  """AUC, log loss, ECE, accuracy at 0.5, row count and base rate on the given spans."""
  versions = spans_lib.check_span_range(data_root, first_span, last_span)
  rows = []
  for span, version in versions.items():
    with open(spans_lib.span_path(data_root, span, version), newline='') as f:
      rows.extend(csv.DictReader(f))
  labels = np.array([int(r[features.LABEL_KEY]) for r in rows])
  scores = score_rows(model_dir, rows, schema_path)
  return {
      'spans': f'{first_span}-{last_span}',
      'rows': len(rows),
      'auc': float(metrics.roc_auc_score(labels, scores)),
      'log_loss': calibration.log_loss(labels, scores),
      'expected_calibration_error': calibration.expected_calibration_error(labels, scores),
      'accuracy': float(np.mean((scores > 0.5) == labels)),
      'base_rate': float(labels.mean()),
  }
