"""The data gate's severity policy and executor on hand-made anomalies, per split and per span."""
import json
import os

import pytest
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.types import standard_artifacts

from components.data_gate import executor as gate_executor
from components.data_gate import policy as policy_lib
from components.data_gate import spec


def _anomalies(**features) -> anomalies_pb2.Anomalies:
  """{feature: [(type name, description)]} -> Anomalies proto, as ExampleValidator writes it."""
  anomalies = anomalies_pb2.Anomalies()
  for feature, reasons in features.items():
    info = anomalies.anomaly_info[feature]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    for type_name, description in reasons:
      info.reason.add(type=anomalies_pb2.AnomalyInfo.Type.Value(type_name),
                      short_description=description, description=description)
  return anomalies


def test_schema_breaks_block_and_name_the_feature():
  anomalies = _anomalies(
      payment_type=[('ENUM_TYPE_UNEXPECTED_STRING_VALUES', 'Unexpected values: Bitcoin')],
      fare=[('FLOAT_TYPE_STRING_NOT_FLOAT', 'Expected FLOAT, got STRING')])
  findings = policy_lib.classify({'train': anomalies}, policy_lib.SeverityPolicy())
  assert {(f.feature, f.severity) for f in findings} == {
      ('payment_type', 'blocking'), ('fare', 'blocking')}
  message = policy_lib.blocking_message(findings)
  assert 'payment_type: Unexpected values: Bitcoin' in message
  assert 'fare: Expected FLOAT, got STRING' in message
  assert '2 blocking anomalies in 2 feature(s)' in message


def test_warning_types_and_feature_overrides_do_not_block():
  anomalies = _anomalies(
      company=[('ENUM_TYPE_UNEXPECTED_STRING_VALUES', 'new company')],
      trip_miles=[('COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH', 'drift')],
      extra=[('SCHEMA_NEW_COLUMN', 'new column')])
  summary = policy_lib.summarize(policy_lib.classify({'eval': anomalies},
                                                     policy_lib.SeverityPolicy()))
  assert summary['verdict'] == 'warnings'
  assert summary['num_warnings'] == 3 and summary['num_blocking'] == 0


def test_unknown_types_block_by_default_and_policy_is_configurable():
  anomalies = _anomalies(trip_seconds=[('INT_TYPE_SMALL_INT', 'negative duration')])
  assert policy_lib.classify({'train': anomalies},
                             policy_lib.SeverityPolicy())[0].severity == 'blocking'
  lenient = policy_lib.SeverityPolicy(feature_severity={'trip_seconds': 'warning'})
  assert policy_lib.classify({'train': anomalies}, lenient)[0].severity == 'warning'


def test_company_new_values_warn_but_company_going_empty_blocks():
  anomalies = _anomalies(company=[('ENUM_TYPE_UNEXPECTED_STRING_VALUES', 'new companies'),
                                  ('FEATURE_TYPE_LOW_FRACTION_PRESENT', 'going empty')])
  severities = {f.anomaly_type: f.severity for f in policy_lib.classify(
      {'span 6': anomalies}, policy_lib.SeverityPolicy())}
  assert severities == {'ENUM_TYPE_UNEXPECTED_STRING_VALUES': 'warning',
                        'FEATURE_TYPE_LOW_FRACTION_PRESENT': 'blocking'}
  closed = policy_lib.SeverityPolicy(open_domain_features=frozenset())
  assert {f.severity for f in policy_lib.classify({'span 6': anomalies}, closed)} == {
      'blocking'}


def test_drift_warns_by_default_and_blocks_with_the_readme_policy(tmp_path):
  import re
  from pipeline.config import REPO_ROOT
  anomalies = _anomalies(payment_type=[('COMPARATOR_L_INFTY_HIGH', 'mix changed')],
                         tip_share=[('SCHEMA_NEW_COLUMN', 'new column')])
  default = policy_lib.classify({'span 6': anomalies}, policy_lib.SeverityPolicy())
  assert {f.feature: f.severity for f in default} == {'payment_type': 'warning',
                                                      'tip_share': 'warning'}
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:      # the file the README shows
    readme_policy = re.search(r'```json\n(.*?)```', f.read(), re.DOTALL).group(1)
  path = tmp_path / 'policy.json'
  path.write_text(readme_policy)
  strict = policy_lib.SeverityPolicy.from_file(str(path))
  assert strict.warning_types == policy_lib.DEFAULT_WARNING_TYPES - policy_lib.DRIFT_TYPES
  assert {f.feature: f.severity for f in policy_lib.classify({'span 6': anomalies}, strict)} == {
      'payment_type': 'blocking', 'tip_share': 'warning'}


def test_every_finding_is_listed_blocking_first_each_with_its_span():
  findings = policy_lib.classify(
      {'span 10 (version 1)': _anomalies(trip_seconds=[('SCHEMA_MISSING_COLUMN', 'gone')]),
       'span 2 (version 1)': _anomalies(tip_share=[('SCHEMA_NEW_COLUMN', 'new column')]),
       'spans 1-10, train split': _anomalies(
           trip_seconds=[('FEATURE_TYPE_LOW_FRACTION_PRESENT', 'low presence')],
           fare=[('FLOAT_TYPE_BIG_FLOAT', 'too big')])},
      policy_lib.SeverityPolicy(),
      {'span 10 (version 1)': 10, 'span 2 (version 1)': 2})
  assert [(f.source, f.span) for f in findings][:2] == [('span 2 (version 1)', 2),
                                                        ('span 10 (version 1)', 10)]
  message = policy_lib.blocking_message(findings)
  lines = message.splitlines()
  assert lines[0].startswith('Data gate: 2 blocking anomalies in 2 feature(s) (and 1 warning')
  assert lines[1:6] == [
      '  blocking (2):',
      '    - trip_seconds: gone [SCHEMA_MISSING_COLUMN, span 10 (version 1)]',
      '    - fare: too big [FLOAT_TYPE_BIG_FLOAT, spans 1-10, train split]',
      '  warnings (1):',
      '    - tip_share: new column [SCHEMA_NEW_COLUMN, span 2 (version 1)]']
  # the range's low presence of trip_seconds repeats span 10's finding: an echo, not listed
  assert '(1 finding(s) of the whole range repeat these: spans 1-10, train split)' in message
  summary = policy_lib.summarize(findings)
  assert (summary['num_blocking'], summary['num_warnings']) == (2, 1)
  assert [e['anomaly_type'] for e in summary['echoes']] == ['FEATURE_TYPE_LOW_FRACTION_PRESENT']


def test_clean_anomalies_give_a_clean_verdict():
  summary = policy_lib.summarize(policy_lib.classify({'train': anomalies_pb2.Anomalies()},
                                                     policy_lib.SeverityPolicy()))
  assert summary == {'verdict': 'clean', 'num_blocking': 0, 'num_warnings': 0,
                     'blocking': [], 'warnings': [], 'echoes': []}


def test_policy_round_trips_through_json():
  policy = policy_lib.SeverityPolicy(warning_types=frozenset({'SCHEMA_NEW_COLUMN'}),
                                     feature_severity={'fare': 'warning'})
  assert policy_lib.SeverityPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize('text, message', [
    ('not json', 'not valid JSON'),
    ('[1]', 'must be a JSON object'),
    ('{"blocking": []}', "unknown severity policy key"),
    ('{"warning_types": ["NOT_A_TYPE"]}', "unknown anomaly type"),
    ('{"feature_severity": {"fare": "fatal"}}', "feature 'fare': severity 'fatal'"),
    ('{"warning_types": "SCHEMA_NEW_COLUMN"}', 'warning_types must be a list'),
    ('{"feature_severity": ["fare"]}', 'feature_severity must be an object'),
])
def test_bad_policies_are_refused_with_a_clear_message(text, message):
  with pytest.raises(policy_lib.PolicyError, match=message):
    policy_lib.SeverityPolicy.from_json(text)


def test_a_policy_file_that_cannot_be_used_is_named(tmp_path):
  with pytest.raises(policy_lib.PolicyError, match="'.*nowhere.json' cannot be read"):
    policy_lib.SeverityPolicy.from_file(str(tmp_path / 'nowhere.json'))
  (tmp_path / 'bad.json').write_text('{"warning_types": ["NOPE"]}')
  with pytest.raises(policy_lib.PolicyError, match="bad.json': unknown anomaly type"):
    policy_lib.SeverityPolicy.from_file(str(tmp_path / 'bad.json'))


def _anomalies_artifact(tmp_path, anomalies_by_split, name='anomalies'):
  artifact = standard_artifacts.ExampleAnomalies()
  artifact.uri = str(tmp_path / name)
  artifact.split_names = json.dumps(sorted(anomalies_by_split))
  for split, anomalies in anomalies_by_split.items():
    os.makedirs(os.path.join(artifact.uri, f'Split-{split}'))
    with open(os.path.join(artifact.uri, f'Split-{split}', 'SchemaDiff.pb'), 'wb') as f:
      f.write(anomalies.SerializeToString())
  return artifact


def _run_executor(tmp_path, anomalies_by_split, anomalies_by_span=None):
  report = spec.DataGateReport()
  report.uri = str(tmp_path / 'report')
  os.makedirs(report.uri)
  inputs = {spec.ANOMALIES_KEY: [_anomalies_artifact(tmp_path, anomalies_by_split)]}
  if anomalies_by_span is not None:
    per_span = _anomalies_artifact(tmp_path, anomalies_by_span, 'span_anomalies')
    per_span.set_string_custom_property('span_versions', '1:1,2:1,3:2')
    inputs[spec.SPAN_ANOMALIES_KEY] = [per_span]
  gate_executor.Executor().Do(inputs, {spec.REPORT_KEY: [report]},
                              {spec.SEVERITY_POLICY_KEY: policy_lib.SeverityPolicy().to_json()})
  return report


def test_executor_records_warnings_on_its_output(tmp_path):
  report = _run_executor(tmp_path, {
      'train': _anomalies(company=[('ENUM_TYPE_UNEXPECTED_STRING_VALUES', 'new company')]),
      'eval': anomalies_pb2.Anomalies()})
  assert report.get_string_custom_property('verdict') == 'warnings'
  assert report.get_int_custom_property('num_warnings') == 1
  with open(os.path.join(report.uri, spec.REPORT_FILE)) as f:
    assert json.load(f)['warnings'][0]['feature'] == 'company'


def test_executor_stops_on_blocking_anomalies(tmp_path):
  with pytest.raises(gate_executor.DataGateError, match='fare: Expected FLOAT'):
    _run_executor(tmp_path, {'train': _anomalies(
        fare=[('FLOAT_TYPE_STRING_NOT_FLOAT', 'Expected FLOAT, got STRING')])})
  assert not os.listdir(tmp_path / 'report')


def test_executor_names_the_span_and_version_of_span_anomalies(tmp_path):
  report = _run_executor(
      tmp_path, {'train': _anomalies(tip_share=[('SCHEMA_NEW_COLUMN', 'new column')]),
                 'eval': anomalies_pb2.Anomalies()},
      {'span-1': anomalies_pb2.Anomalies(), 'span-2': anomalies_pb2.Anomalies(),
       'span-3': _anomalies(tip_share=[('SCHEMA_NEW_COLUMN', 'in span-3/version-2/data.csv')])})
  with open(os.path.join(report.uri, spec.REPORT_FILE)) as f:
    saved = json.load(f)
  [warning] = saved['warnings']
  assert (warning['source'], warning['span']) == ('span 3 (version 2)', 3)
  assert [e['source'] for e in saved['echoes']] == ['spans 1-3, train split']
  assert report.get_int_custom_property('num_warnings') == 1
  with pytest.raises(gate_executor.DataGateError,
                     match=r'trip_seconds: gone \[SCHEMA_MISSING_COLUMN, span 3 \(version 2\)\]'):
    _run_executor(tmp_path / 'blocked', {'train': anomalies_pb2.Anomalies()}, {
        'span-3': _anomalies(trip_seconds=[('SCHEMA_MISSING_COLUMN', 'gone')])})


def test_executor_names_a_missing_split_file(tmp_path):
  artifact = _anomalies_artifact(tmp_path, {'train': anomalies_pb2.Anomalies()})
  artifact.split_names = json.dumps(['train', 'eval'])
  with pytest.raises(gate_executor.DataGateError, match="split 'eval' not found"):
    gate_executor.load_anomalies(artifact)
