"""preprocessing_fn through TensorFlow Transform's Beam implementation on a few rows."""
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils

from models import features
from models import preprocessing

RAW_SPEC = {
    **{k: tf.io.VarLenFeature(tf.float32) for k in features.NUMERIC_FEATURES
       if k != 'trip_seconds'},
    'trip_seconds': tf.io.VarLenFeature(tf.int64),
    **{k: tf.io.VarLenFeature(tf.float32) for k in features.COORDINATE_FEATURES},
    **{k: tf.io.VarLenFeature(tf.int64) for k in features.INTEGER_CATEGORICAL_FEATURES},
    **{k: tf.io.VarLenFeature(tf.string) for k in features.STRING_CATEGORICAL_FEATURES},
    features.TIME_FEATURE: tf.io.VarLenFeature(tf.int64),
    features.LABEL_KEY: tf.io.VarLenFeature(tf.int64),
}


def _row(fare, payment, company, hour, label, miles=1.0, seconds=300, start=1420070400):
  row = {k: [] for k in RAW_SPEC}
  row.update(fare=[fare], trip_miles=[miles], trip_seconds=[seconds], payment_type=[payment],
             trip_start_hour=[hour], big_tipper=[label], pickup_latitude=[41.9],
             pickup_longitude=[-87.6], trip_start_day=[3], trip_start_month=[5])
  if company is not None:
    row['company'] = [company]
  if start is not None:
    row[features.TIME_FEATURE] = [start]
  return row


@pytest.fixture(scope='module')
def transformed():
  rows = [_row(5.0, b'Cash', b'A', 1, 0), _row(10.0, b'Credit Card', None, 23, 1),
          _row(20.0, b'Credit Card', b'A', 30, 1, start=None),
          _row(40.0, b'Cash', b'B', 0, 0, miles=-3.0, start=1451606400)]
  metadata = dataset_metadata.DatasetMetadata(schema_utils.schema_from_feature_spec(RAW_SPEC))
  with tft_beam.Context(temp_dir=tempfile.mkdtemp(), force_tf_compat_v1=False):
    (data, _), _ = ((rows, metadata)
                    | tft_beam.AnalyzeAndTransformDataset(preprocessing.preprocessing_fn))
  return data


def test_every_normalization_is_emitted(transformed):
  for key in features.NUMERIC_FEATURES:
    for normalization in preprocessing.NORMALIZATIONS:
      assert preprocessing.numeric_input_name(key, normalization) in transformed[0]
  fares = np.array([r['fare_z_score_xf'] for r in transformed])
  assert abs(fares.mean()) < 1e-5 and abs(fares.std() - 1) < 1e-4
  log_fares = np.array([r['fare_log_z_score_xf'] for r in transformed])
  assert abs(log_fares.mean()) < 1e-5


def test_negative_values_are_clipped_before_scaling(transformed):
  miles = [r['trip_miles_log_z_score_xf'] for r in transformed]
  assert miles[3] == min(miles)                  # -3 miles treated as 0, not log1p(-3) = nan
  assert all(np.isfinite(miles))


def test_categories_are_indexed_and_clipped(transformed):
  hours = [r['trip_start_hour_xf'] for r in transformed]
  assert hours == [1, 23, 23, 0]                 # 30 is clipped to the last bucket
  payments = [r['payment_type_xf'] for r in transformed]
  assert payments[1] == payments[2] != payments[0] == payments[3]
  assert all(0 <= p < preprocessing.vocabulary_size('payment_type') for p in payments)
  companies = [r['company_xf'] for r in transformed]
  assert companies[0] == companies[2] != companies[1]       # missing company is its own value


def test_label_passes_through(transformed):
  assert [r['big_tipper_xf'] for r in transformed] == [0, 1, 1, 0]


def test_trip_start_time_passes_through_for_the_time_ordered_split(transformed):
  # Not a model input: it orders the rows (models/model.py); a missing time is 0, the oldest.
  assert [r[preprocessing.TIME_KEY] for r in transformed] == [1420070400, 1420070400, 0,
                                                                1451606400]


def test_unknown_normalization_is_refused():
  with pytest.raises(ValueError, match="unknown normalization 'minmax'"):
    preprocessing.numeric_input_name('fare', 'minmax')
