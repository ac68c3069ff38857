"""Drift of a serving window against a training baseline, thresholds calibrated per window size.

Measures (one per monitored feature, plus the prediction and the label when available):
- numeric features and the prediction: Jensen-Shannon divergence (log base 2, in [0, 1]) between
  the baseline's and the window's histograms over the baseline's quantile bins (`k` bins with edges
  at the baseline's k-quantiles, `k` = window rows / 20 within [10, 50]: enough bins to see a shift,
  few enough that a small window fills them) plus one bin for missing or invalid values;
- categorical features and the label: L-infinity distance (max |p_i - q_i|) over the baseline's
  most frequent values (up to 100), one bin for any other value and one for missing/invalid.
The definitions are ours, not TFDV's (TFDV re-buckets two different quantile histograms and ignores
missing values; its L-infinity on a numeric feature is always 0): they are computed the same way
for the calibration and for the window, which is what makes the thresholds mean something.

Calibration (why thresholds hold at any window size). A distance between two samples of the same
distribution is not 0: it shrinks with the sizes of both samples (TFDV issue 216: JSD 0.43 between
two samples of one distribution, 1,000 vs 10 rows). The null distribution of each distance is
simulated by resampling the baseline: a window of n rows and a baseline of m rows drawn from the
baseline's own binned distribution (multinomial draws: exactly the histograms of bootstrap
resamples of the baseline rows, `n_resamples` times). Each tier's threshold for a measure is the
(1 - alpha / K) quantile of that null distribution, where alpha is the tier's window-level
false-alarm rate and K the number of measures assessed (Bonferroni: the rate holds for the whole
window whatever the correlation between features). The far tail is extrapolated exponentially from
the top 5% of the resamples (exact for chi-square-like tails, conservative for lighter ones), so
5,000 resamples (default) reach alpha / K of 1e-5. A tier's effect-size floor (critical: JSD 0.01,
L-infinity 0.05 by default) is applied on top. Below `min_window_rows` rows: insufficient data.

Measured (tests/test_drift_quality.py, bench/drift_bench.py): with the default warning target of
0.5%, 0.2-0.7% of clean windows of 100 to 100,000 rows are flagged. The nominal rate is met on
average over baselines; for one fixed baseline it varies a little by feature (the baseline's own
sampling noise is part of every distance), which is why the default sits below the 1% goal.

Pure numpy (no TFX, no TensorFlow); thresholds are cached per (measure, window size).
"""
import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from components.drift_detector import columns as columns_lib
from components.drift_detector import policy as policy_lib

NUMERIC = columns_lib.NUMERIC
CATEGORICAL = columns_lib.CATEGORICAL
JENSEN_SHANNON = 'jensen_shannon'
L_INFINITY = 'l_infinity'
FEATURE, PREDICTION, LABEL = 'feature', 'prediction', 'label'
MISSING_LABEL = '(missing)'
OTHER_LABEL = '(other)'
TAIL_START = 0.05        # exponential tail fitted above the 95% quantile of the null distances


# ----------------------------------------------------------------------------- distances

def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  """JSD (base 2) between probability vectors along the last axis."""
  p = np.asarray(p, np.float64)
  q = np.asarray(q, np.float64)
  m = 0.5 * (p + q)
  with np.errstate(divide='ignore', invalid='ignore'):
    left = np.where(p > 0, p * np.log2(np.where(p > 0, p, 1) / np.where(m > 0, m, 1)), 0.0)
    right = np.where(q > 0, q * np.log2(np.where(q > 0, q, 1) / np.where(m > 0, m, 1)), 0.0)
  return np.clip(0.5 * (left.sum(-1) + right.sum(-1)), 0.0, 1.0)


def l_infinity(p: np.ndarray, q: np.ndarray) -> np.ndarray:
  return np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).max(-1)


METRICS = {JENSEN_SHANNON: jensen_shannon, L_INFINITY: l_infinity}


def _shares(counts: np.ndarray) -> np.ndarray:
  counts = np.asarray(counts, np.float64)
  total = counts.sum(-1, keepdims=True)
  return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def tail_quantile(samples: np.ndarray, tail_probability: float) -> float:
  """The value exceeded with probability `tail_probability` under the samples' distribution.

  Empirical above the TAIL_START quantile; beyond, an exponential tail fitted to the excesses
  over the (1 - TAIL_START) quantile: u + mean_excess * ln(TAIL_START / p).
  """
  samples = np.sort(np.asarray(samples, np.float64))
  if tail_probability >= TAIL_START:
    return float(np.quantile(samples, 1.0 - tail_probability))
  start = float(np.quantile(samples, 1.0 - TAIL_START))
  excess = samples[samples > start] - start
  mean_excess = float(excess.mean()) if excess.size else 0.0
  if mean_excess <= 0.0:      # a degenerate null (a constant feature): any change is drift
    return start
  return start + mean_excess * math.log(TAIL_START / tail_probability)


# ----------------------------------------------------------------------------- binning

@dataclasses.dataclass(frozen=True)
class Binning:
  """How one measure's values become bins; the last bin is always missing/invalid."""
  kind: str
  edges: Optional[np.ndarray] = None           # numeric: interior cut points
  vocabulary: Tuple[str, ...] = ()             # categorical: values with a bin of their own
  with_other: bool = True

  @property
  def size(self) -> int:
    if self.kind == NUMERIC:
      return len(self.edges) + 2                # len(edges) + 1 ranges, + missing
    return len(self.vocabulary) + int(self.with_other) + 1

  def labels(self) -> List[str]:
    if self.kind == NUMERIC:
      edges = [f'{e:.4g}' for e in self.edges]
      if not edges:
        return ['all values', MISSING_LABEL]
      ranges = [f'< {edges[0]}'] + [f'[{a}, {b})' for a, b in zip(edges, edges[1:])] + [
          f'>= {edges[-1]}']
      return ranges + [MISSING_LABEL]
    return list(self.vocabulary) + ([OTHER_LABEL] if self.with_other else []) + [MISSING_LABEL]

  def encode(self, values: np.ndarray) -> np.ndarray:
    """Bin index of every value (missing/invalid: the last bin)."""
    if self.kind == NUMERIC:
      values = np.asarray(values, np.float64)
      codes = np.searchsorted(self.edges, values, side='right')
      codes[np.isnan(values)] = self.size - 1
      return codes
    index = {v: i for i, v in enumerate(self.vocabulary)}
    other = len(self.vocabulary) if self.with_other else None
    missing = self.size - 1
    codes = np.empty(len(values), np.int64)
    for i, value in enumerate(values):
      if value is None:
        codes[i] = missing
      else:
        code = index.get(value, other)
        codes[i] = missing if code is None else code
    return codes

  def histogram(self, values: np.ndarray) -> np.ndarray:
    return np.bincount(self.encode(values), minlength=self.size)


def numeric_binning(baseline_values: np.ndarray, n_bins: int) -> Binning:
  present = np.asarray(baseline_values, np.float64)
  present = present[~np.isnan(present)]
  if present.size == 0:
    return Binning(NUMERIC, edges=np.zeros(0))
  quantiles = np.quantile(present, np.arange(1, n_bins) / n_bins)
  edges = np.unique(quantiles)
  # A cut at the minimum would leave an empty first bin: drop it.
  edges = edges[edges > present.min()]
  return Binning(NUMERIC, edges=edges)


def categorical_binning(baseline_values: np.ndarray, max_categories: int,
                        with_other: bool = True) -> Binning:
  present = [v for v in baseline_values if v is not None]
  values, counts = np.unique(np.asarray(present, dtype=object).astype(str), return_counts=True) \
      if present else (np.zeros(0, dtype=object), np.zeros(0, np.int64))
  order = np.lexsort((values, -counts))[:max_categories]
  return Binning(CATEGORICAL, vocabulary=tuple(str(values[i]) for i in order),
                 with_other=with_other)


# ----------------------------------------------------------------------------- baseline

@dataclasses.dataclass(frozen=True)
class Measure:
  name: str
  role: str            # FEATURE, PREDICTION or LABEL
  kind: str            # NUMERIC or CATEGORICAL

  @property
  def metric(self) -> str:
    return JENSEN_SHANNON if self.kind == NUMERIC else L_INFINITY


class Baseline:
  """The reference distribution of every measure: training rows (and predictions on them)."""

  def __init__(self, columns: columns_lib.Columns, specs: Sequence[columns_lib.FeatureSpec],
               policy: policy_lib.DriftPolicy, predictions: Optional[np.ndarray] = None,
               labels: Optional[np.ndarray] = None, label_name: str = 'big_tipper',
               prediction_name: str = 'prediction'):
    """`predictions`: the model's predictions on baseline rows (ideally held-out rows);
    `labels`: the baseline rows' labels (ints, -1 or NaN: unknown)."""
    self.policy = policy
    self.specs = list(specs)
    self.n_rows = columns.n_rows
    self.measures: List[Measure] = [Measure(s.name, FEATURE, s.kind) for s in self.specs]
    self._values: Dict[str, np.ndarray] = {s.name: columns.values[s.name] for s in self.specs}
    if predictions is not None and policy.prediction_drift:
      predictions = np.asarray(predictions, np.float64)
      self.measures.append(Measure(prediction_name, PREDICTION, NUMERIC))
      self._values[prediction_name] = predictions[~np.isnan(predictions)]
    if labels is not None and policy.label_drift:
      self.measures.append(Measure(label_name, LABEL, CATEGORICAL))
      self._values[label_name] = label_strings(labels, keep_unknown=False)
    self._binnings: Dict[Tuple[str, int], Binning] = {}
    self._histograms: Dict[Tuple[str, int], np.ndarray] = {}

  def measure(self, name: str) -> Measure:
    return next(m for m in self.measures if m.name == name)

  def size(self, name: str) -> int:
    return len(self._values[name])

  def binning(self, measure: Measure, n_window: int) -> Binning:
    n_bins = self.policy.numeric_bins(n_window) if measure.kind == NUMERIC else 0
    key = (measure.name, n_bins)
    if key not in self._binnings:
      values = self._values[measure.name]
      if measure.kind == NUMERIC:
        self._binnings[key] = numeric_binning(values, n_bins)
      else:
        self._binnings[key] = categorical_binning(values, self.policy.max_categories,
                                                  with_other=measure.role != LABEL)
    return self._binnings[key]

  def histogram(self, measure: Measure, n_window: int) -> np.ndarray:
    n_bins = self.policy.numeric_bins(n_window) if measure.kind == NUMERIC else 0
    key = (measure.name, n_bins)
    if key not in self._histograms:
      self._histograms[key] = self.binning(measure, n_window).histogram(
          self._values[measure.name])
    return self._histograms[key]


def label_strings(labels: np.ndarray, keep_unknown: bool = True) -> np.ndarray:
  """Labels as category strings ('0', '1'); unknown labels (-1, NaN) dropped or None."""
  labels = np.asarray(labels, np.float64)
  known = ~np.isnan(labels) & (labels >= 0)
  text = np.array([str(int(v)) if k else None for v, k in zip(labels, known)], dtype=object)
  return text if keep_unknown else text[known]


# ----------------------------------------------------------------------------- calibration

def null_distances(probabilities: np.ndarray, n_window: int, n_baseline: int, metric: str,
                   n_resamples: int, rng: np.random.Generator) -> np.ndarray:
  """Distances between a window of n and a baseline of m rows drawn from one distribution."""
  probabilities = np.asarray(probabilities, np.float64)
  probabilities = probabilities / probabilities.sum()
  window = rng.multinomial(n_window, probabilities, size=n_resamples) / n_window
  reference = rng.multinomial(n_baseline, probabilities, size=n_resamples) / n_baseline
  return METRICS[metric](window, reference)


@dataclasses.dataclass
class Threshold:
  """A measure's thresholds for one window size, and the null distribution they came from."""
  by_tier: Dict[str, float]
  null_mean: float
  null_p99: float


# ----------------------------------------------------------------------------- assessment

@dataclasses.dataclass
class MeasureResult:
  name: str
  role: str
  kind: str
  metric: str
  status: str                 # no_drift | warning | critical | insufficient_data
  value: Optional[float]
  thresholds: Dict[str, float]
  n_window: int
  n_baseline: int
  invalid: int = 0
  bins: List[str] = dataclasses.field(default_factory=list)
  baseline_share: List[float] = dataclasses.field(default_factory=list)
  window_share: List[float] = dataclasses.field(default_factory=list)
  null_mean: Optional[float] = None

  @property
  def drifted(self) -> bool:
    return self.status in (policy_lib.WARNING, policy_lib.CRITICAL)

  def describe(self) -> str:
    if self.value is None:
      return f'{self.name}: {self.status} ({self.n_window} rows)'
    return (f'{self.name}: {self.metric} {self.value:.4f} (warning > '
            f'{self.thresholds.get("warning", float("nan")):.4f}, critical > '
            f'{self.thresholds.get("critical", float("nan")):.4f}; {self.n_window} rows)')


@dataclasses.dataclass
class Assessment:
  verdict: str
  n_rows: int
  n_labeled: int
  measures: List[MeasureResult]
  reason: str

  def names(self, *statuses: str) -> List[str]:
    return [m.name for m in self.measures if m.status in statuses]

  @property
  def drifted(self) -> List[str]:
    return self.names(policy_lib.WARNING, policy_lib.CRITICAL)

  @property
  def critical(self) -> List[str]:
    return self.names(policy_lib.CRITICAL)

  @property
  def drifted_features(self) -> List[str]:
    return [m.name for m in self.measures if m.drifted and m.role == FEATURE]


class Monitor:
  """Assesses windows against one baseline; calibrated thresholds are cached per window size."""

  def __init__(self, baseline: Baseline):
    self.baseline = baseline
    self.policy = baseline.policy
    self._thresholds: Dict[Tuple[str, int, int], Threshold] = {}

  def threshold(self, measure: Measure, n_window: int, n_measures: int) -> Threshold:
    """Thresholds of `measure` for a window of `n_window` rows among `n_measures` measures."""
    key = (measure.name, n_window, n_measures)
    if key not in self._thresholds:
      histogram = self.baseline.histogram(measure, n_window)
      # One generator per (measure, size): thresholds do not depend on the order of calls.
      seed = [self.policy.seed, n_window, n_measures] + [ord(c) for c in measure.name]
      rng = np.random.default_rng(seed)
      if histogram.sum() == 0:
        null = np.zeros(self.policy.n_resamples)
      else:
        null = null_distances(histogram, n_window, int(histogram.sum()), measure.metric,
                              self.policy.n_resamples, rng)
      by_tier = {}
      for tier_name in policy_lib.TIERS:
        tier = self.policy.tier(tier_name)
        quantile = tail_quantile(null, tier.false_alarm_rate / n_measures)
        by_tier[tier_name] = max(quantile, tier.floor(measure.metric))
      self._thresholds[key] = Threshold(by_tier, float(null.mean()),
                                        float(np.quantile(null, 0.99)))
    return self._thresholds[key]

  def thresholds(self, n_rows: int, n_labeled: int = 0,
                 n_predictions: Optional[int] = None) -> Dict[str, Threshold]:
    """Every measure's thresholds for a window of this size (what `assess` would use)."""
    sizes = self._sizes(n_rows, n_labeled, n_rows if n_predictions is None else n_predictions)
    assessed = {k: v for k, v in sizes.items() if v >= self._minimum(k)}
    return {name: self.threshold(self.baseline.measure(name), n, len(assessed))
            for name, n in assessed.items()}

  def _minimum(self, name: str) -> int:
    role = self.baseline.measure(name).role
    return self.policy.min_labeled_rows if role == LABEL else self.policy.min_window_rows

  def _sizes(self, n_rows: int, n_labeled: int, n_predictions: int) -> Dict[str, int]:
    sizes = {}
    for measure in self.baseline.measures:
      sizes[measure.name] = {FEATURE: n_rows, PREDICTION: n_predictions,
                             LABEL: n_labeled}[measure.role]
    return sizes

  def assess(self, window: columns_lib.Columns, predictions: Optional[np.ndarray] = None,
             labels: Optional[np.ndarray] = None) -> Assessment:
    """The window's verdict and every measure against its calibrated thresholds.

    `predictions`: served probabilities (NaN: none); `labels`: ground truth per row (-1 or NaN:
    not delivered). Measures whose inputs are absent are not assessed.
    """
    values: Dict[str, np.ndarray] = {}
    for measure in self.baseline.measures:
      if measure.role == FEATURE:
        values[measure.name] = window.values.get(
            measure.name, columns_lib.empty_column(measure.kind, window.n_rows))
      elif measure.role == PREDICTION and predictions is not None:
        predictions = np.asarray(predictions, np.float64)
        values[measure.name] = predictions[~np.isnan(predictions)]
      elif measure.role == LABEL and labels is not None:
        values[measure.name] = label_strings(labels, keep_unknown=False)
    n_labeled = len(values.get(self._label_name(), ()))
    sizes = {name: len(v) for name, v in values.items()}
    assessed = [name for name, n in sizes.items() if n >= self._minimum(name)]
    results = []
    for measure in self.baseline.measures:
      if measure.name not in values:
        continue
      n = sizes[measure.name]
      result = MeasureResult(measure.name, measure.role, measure.kind, measure.metric,
                             policy_lib.INSUFFICIENT_DATA, None, {}, n,
                             self.baseline.size(measure.name),
                             invalid=int(window.invalid.get(measure.name, 0)))
      results.append(result)
      if measure.name not in assessed:
        continue
      binning = self.baseline.binning(measure, n)
      reference = _shares(self.baseline.histogram(measure, n))
      observed = _shares(binning.histogram(values[measure.name]))
      value = float(METRICS[measure.metric](reference, observed))
      threshold = self.threshold(measure, n, len(assessed))
      result.value = value
      result.thresholds = dict(threshold.by_tier)
      result.null_mean = threshold.null_mean
      result.status = (policy_lib.CRITICAL if value > threshold.by_tier[policy_lib.CRITICAL]
                       else policy_lib.WARNING if value > threshold.by_tier[policy_lib.WARNING]
                       else policy_lib.NO_DRIFT)
      result.bins = binning.labels()
      result.baseline_share = [float(x) for x in reference]
      result.window_share = [float(x) for x in observed]
    return _assessment(results, window.n_rows, n_labeled, self.policy)

  def _label_name(self) -> Optional[str]:
    return next((m.name for m in self.baseline.measures if m.role == LABEL), None)


def _assessment(results: List[MeasureResult], n_rows: int, n_labeled: int,
                policy: policy_lib.DriftPolicy) -> Assessment:
  if n_rows < policy.min_window_rows:
    return Assessment(policy_lib.INSUFFICIENT_DATA, n_rows, n_labeled, results,
                      f'{n_rows} rows < min_window_rows {policy.min_window_rows}')
  critical = [r.name for r in results if r.status == policy_lib.CRITICAL]
  warning = [r.name for r in results if r.status == policy_lib.WARNING]
  if critical:
    return Assessment(policy_lib.CRITICAL, n_rows, n_labeled, results,
                      f'critical drift: {", ".join(critical)}')
  if warning:
    return Assessment(policy_lib.WARNING, n_rows, n_labeled, results,
                      f'drift warning: {", ".join(warning)}')
  return Assessment(policy_lib.NO_DRIFT, n_rows, n_labeled, results,
                    'every measure within its calibrated thresholds')
