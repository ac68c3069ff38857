"""SpanValidator: the pure checks (headers, column types, presence drops, anomalies), the span
reading, and the executor on small samples of the bundled spans with one span broken."""
import json
import os
import shutil

import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2
from tfx.types import artifact_utils
from tfx.types import standard_artifacts

from components.span_example_gen import executor as example_gen_executor
from components.span_validator import executor as validator_executor
from components.span_validator import spec
from components.span_validator import structure
from pipeline.config import REPO_ROOT
from tests.conftest import read_span, sample_spans, write_span

SCHEMA = tfdv.load_schema_text(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'))
HEADER, _ = read_span(1)


def _span_file(span, path, columns=HEADER, version=1):
  return structure.SpanFile(span, version, path, tuple(columns))


# --- pure logic -------------------------------------------------------------------------------

def test_header_check_names_span_version_file_and_column():
  root = '/data/spans'
  files = [_span_file(5, f'{root}/span-5/version-1/data.csv'),
           _span_file(6, f'{root}/span-6/version-2/a.csv', version=2),
           _span_file(6, f'{root}/span-6/version-2/b.csv',
                      [c for c in HEADER if c != 'trip_seconds'] + ['tip_share'], version=2)]
  findings = structure.check_headers(files, SCHEMA, root=root)
  assert [(f.span, f.feature, f.anomaly_type) for f in findings] == [
      (6, 'tip_share', 'SCHEMA_NEW_COLUMN'), (6, 'trip_seconds', 'SCHEMA_MISSING_COLUMN')]
  missing = findings[1].description
  assert "'trip_seconds'" in missing and 'span-6/version-2/b.csv' in missing
  assert 'a.csv' not in missing and 'span 6, version 2' in missing
  assert 'span-6/version-2/b.csv' in findings[0].description


def test_a_serving_header_lacks_only_the_label():
  serving = [c for c in HEADER if c != 'big_tipper']
  assert structure.check_headers([_span_file(1, 'x.csv', serving)], SCHEMA, 'SERVING') == []
  assert [f.feature for f in structure.check_headers([_span_file(1, 'x.csv', serving)],
                                                     SCHEMA)] == ['big_tipper']


def test_cells_are_typed_by_the_schema_and_breaks_are_counted_with_an_example():
  from tensorflow_metadata.proto.v0 import schema_pb2
  assert structure.typed_value(b'12', schema_pb2.FLOAT) == 12.0
  assert structure.typed_value(b'12', schema_pb2.BYTES) == b'12'
  assert structure.typed_value(b'n/a', schema_pb2.FLOAT) is None
  assert structure.typed_value(b'12.5', schema_pb2.INT) is None
  breaks = structure.TypeBreaks(span=6, version=2, rows=500)
  for cell in (b'n/a', b'unknown'):
    breaks.add('trip_miles', cell)
  [finding] = breaks.findings(SCHEMA)
  assert (finding.span, finding.feature, finding.anomaly_type) == (
      6, 'trip_miles', 'UNEXPECTED_DATA_TYPE')
  assert finding.description == ("2 of the 500 values of column 'trip_miles' in span 6 "
                                 "(version 2) are not FLOAT, e.g. 'n/a'")


def _presence_statistics(rows, present):
  """DatasetFeatureStatistics with `rows` examples and {feature: rows with a value}."""
  dataset = statistics_pb2.DatasetFeatureStatistics(num_examples=rows)
  for name, count in present.items():
    feature = dataset.features.add()
    feature.path.step.append(name)
    feature.string_stats.common_stats.num_non_missing = count
  return dataset


def test_a_column_going_empty_on_part_of_the_newest_span_is_a_presence_drop():
  previous = _presence_statistics(1100, {'company': 726, 'fare': 1100})      # 66%
  emptied = _presence_statistics(600, {'company': 317})                      # 53%, no fare
  [company, fare] = structure.presence_drops(emptied, previous, 3, 'spans 1-2',
                                             ['company', 'fare'])
  assert (company.span, company.feature, company.anomaly_type) == (
      3, 'company', 'FEATURE_TYPE_LOW_FRACTION_PRESENT')
  assert '52.8% of the rows of span 3, 66.0% of spans 1-2' in company.description
  assert fare.feature == 'fare' and 'present in 0.0%' in fare.description


def test_natural_variation_and_small_spans_are_not_presence_drops():
  previous = _presence_statistics(11000, {'company': 7260})                  # 66%
  assert structure.presence_drops(_presence_statistics(2400, {'company': 1540}), previous, 6,
                                  'spans 1-5', ['company']) == []            # 64%: natural
  assert structure.presence_drops(_presence_statistics(30, {'company': 15}), previous, 6,
                                  'spans 1-5', ['company']) == []            # 50% of 30 rows


def test_a_header_finding_replaces_the_presence_reasons_it_explains():
  anomalies = anomalies_pb2.Anomalies()
  info = anomalies.anomaly_info['trip_seconds']
  info.reason.add(type=anomalies_pb2.AnomalyInfo.FEATURE_TYPE_NOT_PRESENT,
                  description='The feature was not present in any examples.')
  anomalies.anomaly_info['fare'].reason.add(
      type=anomalies_pb2.AnomalyInfo.FLOAT_TYPE_STRING_NOT_FLOAT, description='text')
  structure.add_findings(anomalies, [structure.Finding(
      6, 'trip_seconds', structure.MISSING_COLUMN, "column 'trip_seconds' missing from x.csv")])
  [reason] = anomalies.anomaly_info['trip_seconds'].reason
  assert reason.type == anomalies_pb2.AnomalyInfo.SCHEMA_MISSING_COLUMN
  assert reason.description == "column 'trip_seconds' missing from x.csv"
  assert len(anomalies.anomaly_info['fare'].reason) == 1


def test_excluded_features_lose_their_drift_comparator_in_a_copy():
  copy = structure.without_drift_comparators(SCHEMA, ['trip_start_month'])
  by_name = {f.name: f for f in copy.feature}
  assert not by_name['trip_start_month'].HasField('drift_comparator')
  assert by_name['payment_type'].HasField('drift_comparator')
  assert next(f for f in SCHEMA.feature if f.name == 'trip_start_month').HasField(
      'drift_comparator')


@pytest.mark.parametrize('split', ['spans-1-5', 'span-', 'span-x', 'train'])
def test_only_span_splits_name_a_span(split):
  assert spec.span_of_split('span-12') == 12
  with pytest.raises(ValueError, match='not a span split'):
    spec.span_of_split(split)


# --- reading a span ---------------------------------------------------------------------------

def test_a_span_is_read_with_absent_missing_values_and_schema_types(tmp_path):
  rows = [dict.fromkeys(HEADER, '') for _ in range(3)]
  for i, row in enumerate(rows):
    row.update(fare=str(10 + i), payment_type='Cash', trip_seconds=str(60 * i), big_tipper='0')
  rows[2]['trip_seconds'] = 'n/a'                      # text in an INT column
  path = write_span(str(tmp_path), 4, HEADER + ['tip_share'], rows)
  breaks = structure.TypeBreaks(4, 1)
  batches = list(validator_executor.span_record_batches(
      [_span_file(4, path, HEADER + ['tip_share'])], SCHEMA, breaks, batch_size=2))
  assert [b.num_rows for b in batches] == [2, 1]
  first = batches[0].to_pydict()
  assert first['fare'] == [[10.0], [11.0]]                 # whole numbers, FLOAT
  assert first['company'] == [None, None]                  # empty: missing
  assert 'tip_share' not in first                          # not in the schema: left out
  assert batches[1].to_pydict()['trip_seconds'] == [None]  # the broken cell: missing
  assert (breaks.rows, breaks.columns) == (3, {'trip_seconds': [1, 'n/a']})


# --- the executor -----------------------------------------------------------------------------

def _examples_artifact(data_root, spans):
  examples = standard_artifacts.Examples()
  examples.set_string_custom_property(
      example_gen_executor.SPAN_FILES_PROPERTY, json.dumps(
          example_gen_executor.span_files_property(
              data_root, ['\n'.join(f'span-{s}/version-1/*.csv' for s in spans)],
              {s: 1 for s in spans})))
  return examples


def _run_validator(tmp_path, data_root, spans):
  schema = standard_artifacts.Schema()
  schema.uri = str(tmp_path / 'schema')
  os.makedirs(schema.uri)
  shutil.copy(os.path.join(REPO_ROOT, 'schema', 'schema.pbtxt'), schema.uri)
  outputs = {spec.STATISTICS_KEY: [standard_artifacts.ExampleStatistics()],
             spec.ANOMALIES_KEY: [standard_artifacts.ExampleAnomalies()]}
  for key, (artifact,) in outputs.items():
    artifact.uri = str(tmp_path / key)
    os.makedirs(artifact.uri)
  validator_executor.Executor().Do(
          {spec.EXAMPLES_KEY: [_examples_artifact(data_root, spans)],
           spec.SCHEMA_KEY: [schema]},
          outputs, {spec.DRIFT_EXCLUDED_KEY: json.dumps(['trip_start_month'])})
  statistics, anomalies = outputs[spec.STATISTICS_KEY][0], outputs[spec.ANOMALIES_KEY][0]
  by_span = {}
  for split in artifact_utils.decode_split_names(anomalies.split_names):
    parsed = anomalies_pb2.Anomalies()
    with open(os.path.join(anomalies.uri, f'Split-{split}', spec.ANOMALIES_FILE), 'rb') as f:
      parsed.ParseFromString(f.read())
    by_span[spec.span_of_split(split)] = {
        name: {anomalies_pb2.AnomalyInfo.Type.Name(r.type): r.description for r in info.reason}
        for name, info in parsed.anomaly_info.items()}
  return statistics, anomalies, by_span


def test_the_newest_span_is_checked_alone_and_against_the_ones_before(tmp_path):
  """Span 3 lost trip_seconds, has a new column, text in trip_miles, half its cash rides paid by
  card and company emptied on a fifth of its rows: each is named with span 3; spans 1-2 are
  clean."""
  data_root = sample_spans(str(tmp_path / 'spans'), spans=(1, 2, 3), every=8)
  header, rows = read_span(3, data_root)
  cash = [r for r in rows if r['payment_type'] == 'Cash']
  for row in cash[::2]:
    row['payment_type'] = 'Credit Card'
  with_company = [r for r in rows if r['company']]
  for row in with_company[:len(rows) // 5]:
    row['company'] = ''
  for row in rows:
    row['tip_share'] = '0.1'
  rows[7]['trip_miles'] = 'n/a'
  write_span(data_root, 3, [c for c in header if c != 'trip_seconds'] + ['tip_share'], rows)

  statistics, anomalies, by_span = _run_validator(tmp_path, data_root, (1, 2, 3))
  assert artifact_utils.decode_split_names(statistics.split_names) == [
      'span-1', 'span-2', 'span-3', 'spans-1-2']
  assert statistics.get_string_custom_property(spec.SPAN_VERSIONS_PROPERTY) == '1:1,2:1,3:1'
  assert anomalies.get_int_custom_property(spec.NEWEST_SPAN_PROPERTY) == 3
  assert anomalies.get_string_custom_property(spec.PREVIOUS_SPANS_PROPERTY) == '1-2'
  newest = by_span[3]
  assert list(newest['trip_seconds']) == ['SCHEMA_MISSING_COLUMN']
  assert 'span-3/version-1/data.csv' in newest['trip_seconds']['SCHEMA_MISSING_COLUMN']
  assert 'span-3/version-1/data.csv' in newest['tip_share']['SCHEMA_NEW_COLUMN']
  assert newest['payment_type']['COMPARATOR_L_INFTY_HIGH'].startswith(
      'span 3 against spans 1-2: ')
  assert 'of the rows of span 3' in newest['company']['FEATURE_TYPE_LOW_FRACTION_PRESENT']
  assert newest['trip_miles']['UNEXPECTED_DATA_TYPE'] == (
      f"1 of the {len(rows)} values of column 'trip_miles' in span 3 (version 1) are not "
      f"FLOAT, e.g. 'n/a'")
  assert 'trip_start_month' not in newest              # excluded from the comparison
  assert by_span[1] == {} and by_span[2] == {}
  span_3 = tfdv.load_stats_binary(os.path.join(statistics.uri, 'Split-span-3',
                                               spec.STATISTICS_FILE))
  assert span_3.datasets[0].num_examples == len(rows)


def test_clean_spans_raise_nothing_on_the_features_a_break_would_name(tmp_path):
  data_root = sample_spans(str(tmp_path / 'spans'), spans=(1, 2, 3), every=8)
  _, _, by_span = _run_validator(tmp_path, data_root, (1, 2, 3))
  assert by_span[1] == {} and by_span[2] == {}
  assert not {'trip_seconds', 'tip_share', 'payment_type', 'company'} & set(by_span[3])
  # what is left is numeric drift of a small sample (warnings by default), nothing else
  assert {t for reasons in by_span[3].values() for t in reasons} <= {
      'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH'}


def test_examples_without_span_files_are_refused():
  with pytest.raises(ValueError, match="no 'span_files' property"):
    example_gen_executor.read_span_files(standard_artifacts.Examples())
