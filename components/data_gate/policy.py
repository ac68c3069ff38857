"""Severity policy for data anomalies: which ones stop the pipeline and which only warn.

TFDV marks every anomaly ERROR; a pipeline needs tiers. The policy is plain configuration:
- `warning_types`: anomaly types that are recorded and logged but never stop a run (by default the
  drift/skew comparators and changes that do not break a consumer, such as a new column);
- every other type blocks (a type change, a missing column, a column going empty, an unseen
  category in a closed domain, a value outside its physical range, too few rows...), so an
  anomaly type nobody thought about errs on the side of stopping;
- `open_domain_features`: features whose vocabulary is open (by default `company`: new taxi
  companies appear over time and must not stop training): their unseen values only warn, every
  other anomaly of theirs (the column going empty, a type change) is judged like any feature's;
- `feature_severity`: per-feature overrides of every anomaly type (none by default).

Drift of the newest span against the ones before it (the COMPARATOR_* types, SpanValidator) is a
warning by default; leave those types out of `warning_types` to make it block.

Pure logic on tensorflow_metadata protos; no TFX import.
"""
import dataclasses
import json
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

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
DRIFT_TYPES = frozenset(t for t in DEFAULT_WARNING_TYPES if t.startswith('COMPARATOR_'))
DEFAULT_OPEN_DOMAIN_FEATURES = frozenset({'company'})
UNSEEN_VALUE_TYPES = frozenset({'ENUM_TYPE_UNEXPECTED_STRING_VALUES'})
_POLICY_KEYS = ('warning_types', 'open_domain_features', 'feature_severity')
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
  open_domain_features: frozenset = DEFAULT_OPEN_DOMAIN_FEATURES
  feature_severity: Mapping[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    unknown = sorted(set(self.warning_types) - _KNOWN_TYPES)
    if unknown:
      raise PolicyError(f'unknown anomaly type(s) in warning_types: {unknown}')
    for feature, severity in self.feature_severity.items():
      if severity not in SEVERITIES:
        raise PolicyError(f'feature {feature!r}: severity {severity!r} is not one of {SEVERITIES}')
    object.__setattr__(self, 'warning_types', frozenset(self.warning_types))
    object.__setattr__(self, 'open_domain_features', frozenset(self.open_domain_features))

  def severity(self, feature: str, anomaly_type: str) -> str:
    if feature in self.feature_severity:
      return self.feature_severity[feature]
    if anomaly_type in self.warning_types or (
        feature in self.open_domain_features and anomaly_type in UNSEEN_VALUE_TYPES):
      return WARNING
    return BLOCKING

  def to_json(self) -> str:
    return json.dumps({'warning_types': sorted(self.warning_types),
                       'open_domain_features': sorted(self.open_domain_features),
                       'feature_severity': dict(sorted(self.feature_severity.items()))},
                      sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'SeverityPolicy':
    data = parse_json_object(text, 'severity policy')
    unexpected = sorted(set(data) - set(_POLICY_KEYS))
    if unexpected:
      raise PolicyError(f'unknown severity policy key(s): {unexpected} (known: '
                        f'{", ".join(_POLICY_KEYS)})')
    for key in ('warning_types', 'open_domain_features'):
      if not isinstance(data.get(key, []), list):
        raise PolicyError(f'{key} must be a list of names')
    if not isinstance(data.get('feature_severity', {}), dict):
      raise PolicyError('feature_severity must be an object {feature: severity}')
    return cls(warning_types=frozenset(data.get('warning_types', DEFAULT_WARNING_TYPES)),
               open_domain_features=frozenset(
                   data.get('open_domain_features', DEFAULT_OPEN_DOMAIN_FEATURES)),
               feature_severity=dict(data.get('feature_severity', {})))

  @classmethod
  def from_file(cls, path: str) -> 'SeverityPolicy':
    """The policy of a JSON file (`loopline train --severity-policy FILE`)."""
    try:
      with open(path) as f:
        text = f.read()
    except OSError as e:
      raise PolicyError(f'severity policy file {path!r} cannot be read: {e.strerror}') from e
    try:
      return cls.from_json(text)
    except PolicyError as e:
      raise PolicyError(f'severity policy file {path!r}: {e}') from e


@dataclasses.dataclass(frozen=True)
class Finding:
  """One anomaly of one feature in one span or split, with the severity the policy gave it."""
  source: str        # which data it came from, e.g. 'span 6 (version 1)', 'spans 1-6, train split'
  feature: str
  anomaly_type: str
  description: str
  severity: str
  span: Optional[int] = None    # the span it came from; None for the whole range's statistics

  def describe(self) -> str:
    return f'{self.feature}: {self.description} [{self.anomaly_type}, {self.source}]'


def classify(anomalies_by_source: Mapping[str, anomalies_pb2.Anomalies],
             policy: SeverityPolicy,
             span_of_source: Optional[Mapping[str, int]] = None) -> List[Finding]:
  """Every anomaly reason of every feature, each with its severity, in a stable order (sources
  in natural order: span 2 before span 10). `span_of_source`: the span of the sources that are
  one span."""
  span_of_source = span_of_source or {}
  findings = []
  for source, anomalies in sorted(anomalies_by_source.items(),
                                  key=lambda kv: natural_order(kv[0])):
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
                                policy.severity(feature, anomaly_type),
                                span_of_source.get(source)))
  return findings


def split_echoes(findings: Sequence[Finding]) -> Tuple[List[Finding], List[Finding]]:
  """(findings to show, echoes): a finding of the whole range's statistics (no span) is an echo
  when a span's finding of the same feature and severity explains it (a column dropped from
  span 6 also lowers the range's presence): the span's finding says more, and says where."""
  explained = {(f.feature, f.severity) for f in findings if f.span is not None}
  echoes = [f for f in findings if f.span is None and (f.feature, f.severity) in explained]
  return [f for f in findings if f not in echoes], echoes


def summarize(findings: List[Finding]) -> Dict[str, object]:
  """JSON-able summary: verdict, counts, and the findings by severity (echoes apart)."""
  shown, echoes = split_echoes(findings)
  blocking = [f for f in shown if f.severity == BLOCKING]
  warnings = [f for f in shown if f.severity == WARNING]
  return {
      'verdict': 'blocked' if blocking else ('warnings' if warnings else 'clean'),
      'num_blocking': len(blocking),
      'num_warnings': len(warnings),
      'blocking': [dataclasses.asdict(f) for f in blocking],
      'warnings': [dataclasses.asdict(f) for f in warnings],
      'echoes': [dataclasses.asdict(f) for f in echoes],
  }


def natural_order(text: str) -> tuple:
  """Sort key that orders the numbers inside `text` by value ('span 2' before 'span 10')."""
  return tuple((0, int(part), '') if part.isdigit() else (1, 0, part)
               for part in re.split(r'(\d+)', text) if part)


def format_findings(findings: Sequence[Finding], indent: str = '  ') -> List[str]:
  """One line per finding: blocking ones first, then warnings, each naming where it came from."""
  lines = []
  for severity, title in ((BLOCKING, 'blocking'), (WARNING, 'warnings')):
    chosen = [f for f in findings if f.severity == severity]
    if chosen:
      lines.append(f'{indent}{title} ({len(chosen)}):')
      lines += [f'{indent}  - {f.describe()}' for f in chosen]
  return lines


def blocking_message(findings: List[Finding]) -> str:
  """The error that stops the run: every anomaly, blocking ones first (echoes left out)."""
  shown, echoes = split_echoes(findings)
  blocking = [f for f in shown if f.severity == BLOCKING]
  warnings = [f for f in shown if f.severity == WARNING]
  lines = [f'Data gate: {len(blocking)} blocking anomal{"y" if len(blocking) == 1 else "ies"} '
           f'in {len({f.feature for f in blocking})} feature(s) (and {len(warnings)} '
           f'warning(s)); the run stops before Transform.']
  lines += format_findings(shown)
  if echoes:
    lines.append(f'  ({len(echoes)} finding(s) of the whole range repeat these: '
                 f'{", ".join(sorted({f.source for f in echoes}, key=natural_order))})')
  return '\n'.join(lines)
