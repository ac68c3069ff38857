"""Severity policy for data anomalies: which ones stop the pipeline and which only warn.

TFDV marks every anomaly ERROR; a pipeline needs tiers. The policy is plain configuration:
- `warning_types`: anomaly types that are recorded and logged but never stop a run (by default the
  drift/skew comparators and changes that do not break a consumer, such as a new column);
- every other type blocks (a type change, a missing column, an unseen category in a closed domain,
  a value outside its physical range, too few rows...), so an anomaly type nobody thought about
  errs on the side of stopping;
- `feature_severity`: per-feature overrides (by default `company`, whose vocabulary is open:
  new taxi companies appear over time and must not stop training).

Pure logic on tensorflow_metadata protos; no TFX import.
"""
import dataclasses
import json
from typing import Dict, Iterable, List, Mapping

from tensorflow_metadata.proto.v0 import anomalies_pb2

BLOCKING = 'blocking'
WARNING = 'warning'
SEVERITIES = (BLOCKING, WARNING)

DEFAULT_WARNING_TYPES = frozenset({
    'SCHEMA_NEW_COLUMN',
    'FEATURE_TYPE_HIGH_UNIQUE',
    'FEATURE_TYPE_LOW_UNIQUE',
    'DATASET_HIGH_NUM_EXAMPLES',
    'SEMANTIC_DOMAIN_UPDATE',
    'COMPARATOR_L_INFTY_HIGH',
    'COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH',
    'COMPARATOR_NORMALIZED_ABSOLUTE_DIFFERENCE_HIGH',
    'COMPARATOR_LOW_NUM_EXAMPLES',
    'COMPARATOR_HIGH_NUM_EXAMPLES',
    'SCHEMA_TRAINING_SERVING_SKEW',
})
DEFAULT_FEATURE_SEVERITY = {'company': WARNING}
_KNOWN_TYPES = frozenset(anomalies_pb2.AnomalyInfo.Type.keys())


class PolicyError(ValueError):
  """A policy that cannot be applied; the message names the offending entry."""


def parse_json_object(text: str, what: str, error: type = PolicyError) -> dict:
  """`text` as a JSON object, or `error` saying that `what` is not valid JSON / not an object."""
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    raise error(f'{what} is not valid JSON: {e}') from e
  if not isinstance(data, dict):
    raise error(f'{what} must be a JSON object')
  return data


@dataclasses.dataclass(frozen=True)
class SeverityPolicy:
  warning_types: frozenset = DEFAULT_WARNING_TYPES
  feature_severity: Mapping[str, str] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_FEATURE_SEVERITY))

  def __post_init__(self):
    unknown = sorted(set(self.warning_types) - _KNOWN_TYPES)
    if unknown:
      raise PolicyError(f'unknown anomaly type(s) in warning_types: {unknown}')
    for feature, severity in self.feature_severity.items():
      if severity not in SEVERITIES:
        raise PolicyError(f'feature {feature!r}: severity {severity!r} is not one of {SEVERITIES}')
    object.__setattr__(self, 'warning_types', frozenset(self.warning_types))

  def severity(self, feature: str, anomaly_type: str) -> str:
    if feature in self.feature_severity:
      return self.feature_severity[feature]
    return WARNING if anomaly_type in self.warning_types else BLOCKING

  def to_json(self) -> str:
    return json.dumps({'warning_types': sorted(self.warning_types),
                       'feature_severity': dict(sorted(self.feature_severity.items()))},
                      sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'SeverityPolicy':
    data = parse_json_object(text, 'severity policy')
    unexpected = sorted(set(data) - {'warning_types', 'feature_severity'})
    if unexpected:
      raise PolicyError(f'unknown severity policy key(s): {unexpected}')
    return cls(warning_types=frozenset(data.get('warning_types', DEFAULT_WARNING_TYPES)),
               feature_severity=dict(data.get('feature_severity', DEFAULT_FEATURE_SEVERITY)))


@dataclasses.dataclass(frozen=True)
class Finding:
  """One anomaly of one feature in one split, with the severity the policy gave it."""
  source: str        # which statistics it came from, e.g. 'span 1-5 / train'
  feature: str
  anomaly_type: str
  description: str
  severity: str

  def describe(self) -> str:
    return f'{self.feature}: {self.description} [{self.anomaly_type}, {self.source}]'


def classify(anomalies_by_source: Mapping[str, anomalies_pb2.Anomalies],
             policy: SeverityPolicy) -> List[Finding]:
  """Every anomaly reason of every feature, each with its severity, in a stable order."""
  findings = []
  for source, anomalies in sorted(anomalies_by_source.items()):
    infos: Iterable = list(anomalies.anomaly_info.items())
    if anomalies.HasField('dataset_anomaly_info'):
      infos = list(infos) + [('__dataset__', anomalies.dataset_anomaly_info)]
    for feature, info in sorted(infos, key=lambda kv: kv[0]):
      reasons = list(info.reason) or [anomalies_pb2.AnomalyInfo.Reason(
          type=info.type, short_description=info.short_description,
          description=info.description)]
      for reason in reasons:
        anomaly_type = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
        description = reason.description or reason.short_description or info.description
        findings.append(Finding(source, feature, anomaly_type, description,
                                policy.severity(feature, anomaly_type)))
  return findings


def summarize(findings: List[Finding]) -> Dict[str, object]:
  """JSON-able summary: verdict, counts, and the findings by severity."""
  blocking = [f for f in findings if f.severity == BLOCKING]
  warnings = [f for f in findings if f.severity == WARNING]
  return {
      'verdict': 'blocked' if blocking else ('warnings' if warnings else 'clean'),
      'num_blocking': len(blocking),
      'num_warnings': len(warnings),
      'blocking': [dataclasses.asdict(f) for f in blocking],
      'warnings': [dataclasses.asdict(f) for f in warnings],
  }


def blocking_message(findings: List[Finding]) -> str:
  """The error that stops the run: one line per blocking feature anomaly."""
  blocking = [f for f in findings if f.severity == BLOCKING]
  lines = [f'Data gate: {len(blocking)} blocking anomal{"y" if len(blocking) == 1 else "ies"} '
           f'in {len({f.feature for f in blocking})} feature(s); the run stops before Transform.']
  lines += [f'  - {f.describe()}' for f in blocking]
  return '\n'.join(lines)
