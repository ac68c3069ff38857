"""The curated schema agrees with the feature contract and the data."""
import os

import pytest

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from pipeline.config import REPO_ROOT
from tests.conftest import read_span

SCHEMA = tfdv.load_schema_text(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'))
BY_NAME = {f.name: f for f in SCHEMA.feature}


def test_schema_declares_exactly_the_span_columns():
  header, _ = read_span(1)
  assert set(BY_NAME) == set(header)
  assert set(features.SERVING_FEATURES) | {features.LABEL_KEY} == set(BY_NAME)


def test_label_is_kept_out_of_serving():
  assert list(SCHEMA.default_environment) == ['TRAINING', 'SERVING']
  assert list(BY_NAME[features.LABEL_KEY].not_in_environment) == ['SERVING']
  assert not any(f.not_in_environment for f in SCHEMA.feature if f.name != features.LABEL_KEY)


def test_every_model_feature_has_a_drift_comparator_of_its_kind():
  categorical = set(features.INTEGER_CATEGORICAL_FEATURES) | set(
      features.STRING_CATEGORICAL_FEATURES)
  for name in features.MODEL_FEATURES:
    comparator = BY_NAME[name].drift_comparator
    if name in categorical:
      assert comparator.infinity_norm.threshold > 0, name
    else:
      assert comparator.jensen_shannon_divergence.threshold > 0, name


def test_physical_ranges_and_domains():
  assert BY_NAME['fare'].float_domain.min == 0
  assert (BY_NAME['trip_start_hour'].int_domain.min,
          BY_NAME['trip_start_hour'].int_domain.max) == (0, 23)
  assert BY_NAME['pickup_latitude'].float_domain.min == pytest.approx(41.6)
  payment_domain = next(d for d in SCHEMA.string_domain if d.name == 'payment_type')
  assert {'Cash', 'Credit Card'} <= set(payment_domain.value)
  assert BY_NAME['company'].distribution_constraints.min_domain_mass == 0.9


def test_schema_feature_types_match_the_transform_inputs():
  for name in features.NUMERIC_FEATURES + features.COORDINATE_FEATURES:
    assert BY_NAME[name].type in (schema_pb2.FLOAT, schema_pb2.INT), name
  for name in features.INTEGER_CATEGORICAL_FEATURES:
    assert BY_NAME[name].type == schema_pb2.INT, name
  for name in features.STRING_CATEGORICAL_FEATURES:
    assert BY_NAME[name].type == schema_pb2.BYTES, name


def test_every_payment_type_in_the_bundled_data_is_in_the_domain():
  domain = set(next(d for d in SCHEMA.string_domain if d.name == 'payment_type').value)
  for span in range(1, 9):
    _, rows = read_span(span)
    assert {r['payment_type'] for r in rows} <= domain, span
