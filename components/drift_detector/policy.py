"""Drift policy: the tiers, the calibration budget and what is monitored. Plain configuration.

Two tiers, each a target false-alarm rate for a whole window (every monitored feature, the
prediction and the label together): the share of clean windows, drawn from the training
distribution, that may reach the tier. Thresholds are calibrated per window size (see drift.py),
so the rate holds at 100 rows as at 100,000.
- `warning` (default 0.5%, under the 1% goal, see drift.py): soft; reported and recorded.
- `critical` (default 0.1%, and a minimum effect size): recorded, and the trigger for retraining.
  The effect-size floors (`min_jensen_shannon`, `min_l_infinity`) keep a shift that is
  statistically certain but too small to matter (a huge window sees everything) at `warning`.

Schema anomalies (TFDV, SERVING environment) are classified with the data gate's SeverityPolicy
(components/data_gate/policy.py). The serving default differs from training's in two ways:
a column the schema does not know is blocking (the log format changed), and presence fractions
below the schema's minimum only warn (a presence drop is a distribution change, measured and
calibrated as one: missing values are a bin of every distance). Blocking schema anomalies make the
verdict `critical` with `schema_break` set: retraining does not fix a break upstream.

Pure logic (dataclasses, json); no TFX import.
"""
import dataclasses
import json
from typing import Optional, Tuple

from components.data_gate import policy as gate_policy
from models import features

NO_DRIFT = 'no_drift'
WARNING = 'warning'
CRITICAL = 'critical'
INSUFFICIENT_DATA = 'insufficient_data'
VERDICTS = (NO_DRIFT, WARNING, CRITICAL, INSUFFICIENT_DATA)
TIERS = (WARNING, CRITICAL)

# Calendar features are set by when the traffic happened: a window of an hour has one
# `trip_start_hour`, a half-year one only six months, whatever the data. Compared with a baseline
# that spans years they always "drift", so they are not monitored by default (TFDV still checks
# their domains); monitor them (`features=...`) with windows that cover their whole cycle.
CALENDAR_FEATURES = ('trip_start_hour', 'trip_start_day', 'trip_start_month')
DEFAULT_FEATURES = tuple(f for f in features.MODEL_FEATURES if f not in CALENDAR_FEATURES)

SERVING_WARNING_TYPES = frozenset(
    (gate_policy.DEFAULT_WARNING_TYPES - {'SCHEMA_NEW_COLUMN'})
    | {'FEATURE_TYPE_LOW_FRACTION_PRESENT', 'FEATURE_TYPE_LOW_NUMBER_PRESENT'})


def serving_schema_policy() -> gate_policy.SeverityPolicy:
  return gate_policy.SeverityPolicy(warning_types=SERVING_WARNING_TYPES)


class DriftPolicyError(ValueError):
  """A policy that cannot be applied; the message says which setting."""


@dataclasses.dataclass(frozen=True)
class Tier:
  """One severity tier: a window-level false-alarm rate and optional effect-size floors."""
  false_alarm_rate: float
  min_jensen_shannon: float = 0.0
  min_l_infinity: float = 0.0

  def floor(self, metric: str) -> float:
    return self.min_jensen_shannon if metric == 'jensen_shannon' else self.min_l_infinity


@dataclasses.dataclass(frozen=True)
class DriftPolicy:
  warning: Tier = Tier(false_alarm_rate=0.005)
  critical: Tier = Tier(false_alarm_rate=0.001, min_jensen_shannon=0.01, min_l_infinity=0.05)
  min_window_rows: int = 50          # below: verdict insufficient_data
  min_labeled_rows: int = 30         # below: no label drift measured
  n_resamples: int = 5000            # null resamples per (measure, window size)
  seed: int = 0
  features: Optional[Tuple[str, ...]] = DEFAULT_FEATURES   # None: every SERVING feature
  exclude_features: Tuple[str, ...] = ()   # e.g. features the server's privacy filter hashes
  prediction_drift: bool = True
  label_drift: bool = True
  rows_per_bin: int = 20             # numeric bins: window rows / rows_per_bin, within:
  min_numeric_bins: int = 10
  max_numeric_bins: int = 50
  max_categories: int = 100          # categorical: the baseline's most frequent values
  schema_policy: gate_policy.SeverityPolicy = dataclasses.field(
      default_factory=serving_schema_policy)

  def __post_init__(self):
    for name in TIERS:
      tier = getattr(self, name)
      if not 0.0 < tier.false_alarm_rate < 1.0:
        raise DriftPolicyError(f'{name}.false_alarm_rate must be in (0, 1), '
                               f'got {tier.false_alarm_rate}')
      if tier.min_jensen_shannon < 0 or tier.min_l_infinity < 0:
        raise DriftPolicyError(f'{name}: effect-size floors must be >= 0')
    if self.critical.false_alarm_rate > self.warning.false_alarm_rate:
      raise DriftPolicyError('critical.false_alarm_rate must not exceed warning\'s')
    if self.n_resamples < 200:
      raise DriftPolicyError(f'n_resamples must be >= 200, got {self.n_resamples}')
    if self.min_window_rows < 1 or self.min_labeled_rows < 1:
      raise DriftPolicyError('min_window_rows and min_labeled_rows must be positive')
    if not 1 < self.min_numeric_bins <= self.max_numeric_bins or self.rows_per_bin < 1:
      raise DriftPolicyError('need 1 < min_numeric_bins <= max_numeric_bins, rows_per_bin >= 1')
    if self.features is not None:
      object.__setattr__(self, 'features', tuple(self.features))
    object.__setattr__(self, 'exclude_features', tuple(self.exclude_features))

  def tier(self, name: str) -> Tier:
    return getattr(self, name)

  def numeric_bins(self, n_rows: int) -> int:
    """Quantile bins of a numeric distance for a window of `n_rows` (missing values: +1 bin)."""
    return int(min(self.max_numeric_bins, max(self.min_numeric_bins,
                                              n_rows // self.rows_per_bin)))

  def to_json(self) -> str:
    data = dataclasses.asdict(self)
    data['schema_policy'] = json.loads(self.schema_policy.to_json())
    data['features'] = list(self.features) if self.features is not None else None
    data['exclude_features'] = list(self.exclude_features)
    return json.dumps(data, sort_keys=True)

  @classmethod
  def from_json(cls, text: str) -> 'DriftPolicy':
    data = gate_policy.parse_json_object(text, 'drift policy', DriftPolicyError)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise DriftPolicyError(f'unknown drift policy key(s): {unknown}')
    for name in TIERS:
      if name in data:
        try:
          data[name] = Tier(**data[name])
        except TypeError as e:
          raise DriftPolicyError(f'{name}: {e}') from e
    if 'schema_policy' in data:
      data['schema_policy'] = gate_policy.SeverityPolicy.from_json(
          json.dumps(data['schema_policy']))
    for name in ('features', 'exclude_features'):
      if data.get(name) is not None:
        data[name] = tuple(data[name])
    return cls(**data)
