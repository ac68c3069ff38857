"""Traffic scenarios: each changes what its docstring says, and nothing else."""
import collections

import pytest
from tensorflow_metadata.proto.v0 import schema_pb2

from tests.conftest import read_span
from traffic import scenarios

_, ROWS = read_span(3)
ROWS = ROWS[:600]
TYPES = {'fare': schema_pb2.FLOAT, 'trip_seconds': schema_pb2.INT,
         'company': schema_pb2.BYTES, 'payment_type': schema_pb2.BYTES}


def _changed_columns(before, after):
  changed = set()
  for old, new in zip(before, after):
    for column in set(old) | set(new):
      if old.get(column) != new.get(column):
        changed.add(column)
  return changed


def test_registry_names_and_unknown_scenario():
  assert scenarios.names() == sorted(['none', 'fare_inflation', 'payment_mix', 'renamed_field',
                                      'missing_field', 'number_as_text', 'schema_break'])
  for name in scenarios.names():
    assert scenarios.get(name).description
  with pytest.raises(scenarios.UnknownScenarioError, match='known: fare_inflation'):
    scenarios.get('fares_up')


@pytest.mark.parametrize('name', scenarios.names())
def test_scenario_changes_only_what_it_declares(name):
  scenario = scenarios.get(name)
  original = [dict(row) for row in ROWS]
  changed_rows = scenario.apply(ROWS, seed=1)
  assert ROWS == original, 'the input rows must not be modified'
  assert len(changed_rows) == len(ROWS)
  changed = _changed_columns(ROWS, changed_rows)
  # A column sent as text keeps its digits: only its type changes (see example_types).
  expected = (set(scenario.shifted_features) | (set(scenario.broken_features) -
                                                set(scenario.text_columns))
              | set(scenario.new_columns))
  assert changed == expected
  assert all(row['big_tipper'] == old['big_tipper'] for row, old in zip(changed_rows, ROWS))
  assert scenario.apply(ROWS, seed=1) == changed_rows, 'same seed, same rows'


def test_fare_inflation_and_payment_mix_shift_their_feature():
  inflated = scenarios.apply('fare_inflation', ROWS)
  assert all(abs(float(new['fare']) - 1.5 * float(old['fare'])) < 0.006
             for new, old in zip(inflated, ROWS) if old['fare'])
  before = collections.Counter(r['payment_type'] for r in ROWS)
  after = collections.Counter(r['payment_type'] for r in scenarios.apply('payment_mix', ROWS))
  assert 0.35 < after['Cash'] / before['Cash'] < 0.65
  assert after['Credit Card'] - before['Credit Card'] == before['Cash'] - after['Cash']
  doubled = scenarios.inflate_fares(ROWS[:3], factor=2.0)
  assert doubled[0]['fare'] == f'{2 * float(ROWS[0]["fare"]):.2f}'


def test_schema_breaks_and_the_types_replay_sends():
  broken = scenarios.apply('schema_break', ROWS)
  assert all('company' not in row and 'dropoff_latitude' not in row for row in broken)
  assert [row['taxi_company'] for row in broken] == [row['company'] for row in ROWS]
  scenario = scenarios.get('schema_break')
  types = scenario.example_types(TYPES)
  assert types['trip_seconds'] == schema_pb2.BYTES          # the number sent as text
  assert types['taxi_company'] == schema_pb2.BYTES          # the renamed column keeps its type
  assert types['fare'] == schema_pb2.FLOAT
  assert scenarios.get('none').example_types(TYPES) == TYPES
  assert scenario.affected_features == ('company', 'dropoff_latitude', 'dropoff_longitude',
                                        'trip_seconds')
