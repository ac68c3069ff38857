"""Calibration of the model's probabilities, and the expected calibration error (ECE).

A model that ranks well can still say 0.6 where 45% of such trips tip: the served probability
then misleads whoever thresholds or sums it. The Trainer (models/model.py) fits a calibrator on
the raw logits of the time-ordered validation window, the rows most like what the model will
serve, and bakes it into the export; `Calibrator.apply` is the same mapping in NumPy, for the
tests and the bench.

- Platt scaling: p = sigmoid(slope * logit + intercept) (a logistic regression on the logit).
- Isotonic regression: a non-decreasing piecewise-linear map from the logit to a probability.

`fit` chooses between them by the log loss of a K-fold cross-validation on the window (fitted on
K-1 folds, scored on the held-out fold): scored on the rows it was fitted on, the isotonic map
would always win. Platt's two parameters are the default; the isotonic map, with as many knots as
the window allows, is chosen only when its cross-validated log loss is lower by more than twice
the standard error of the row-by-row difference. A smaller edge is the folds' luck: measured on
the bundled data (README, "Model quality"), an isotonic map chosen on such an edge scored worse on
the future spans than Platt's. The chosen method is then refitted on the whole window.

ECE: the rows fall into ECE_BINS equal-width bins of the predicted probability; ECE is the
row-weighted mean, over the bins, of |mean prediction - fraction of positives|. Bins are
[0, 0.1), ..., [0.9, 1.0), and a prediction of exactly 1.0 has a bin of its own: the same
binning as the TFMA metric of models/calibration_metric.py, so both give the same number.

Pure NumPy and scikit-learn: no TensorFlow import.
"""
import dataclasses
import json
import os
from typing import Dict, Tuple

import numpy as np

ECE_BINS = 10
EXPORT_FILE = os.path.join('assets.extra', 'calibration.json')
"""Where an exported model (models/model.py) keeps the calibrator its `serving_default` applies."""
PLATT, ISOTONIC = 'platt', 'isotonic'
METHODS = (PLATT, ISOTONIC)
CROSS_VALIDATION_FOLDS = 5
# Isotonic outputs are kept inside (EPSILON, 1 - EPSILON): a probability of exactly 0 or 1 makes
# the log loss of one contrary label infinite.
EPSILON = 1e-4
MIN_ROWS_PER_CLASS = 2


class CalibrationError(ValueError):
  """A validation window that a calibrator cannot be fitted on; the message says why."""


def sigmoid(logits: np.ndarray) -> np.ndarray:
  return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def row_log_loss(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
  """Each row's log loss (probabilities clipped to [1e-7, 1 - 1e-7])."""
  p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(labels, dtype=np.float64)
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
  return float(np.mean(row_log_loss(labels, probabilities)))


def clearly_lower(losses: np.ndarray, baseline_losses: np.ndarray) -> bool:
  """Whether per-row `losses` are lower than `baseline_losses` (the same rows) on average by more
  than twice the standard error of the difference."""
  gain = np.asarray(baseline_losses, np.float64) - np.asarray(losses, np.float64)
  if len(gain) < 2:
    return False
  return bool(gain.mean() > 2 * gain.std(ddof=1) / np.sqrt(len(gain)))


def ece_bin(probabilities: np.ndarray, num_bins: int = ECE_BINS) -> np.ndarray:
  """The bin of each prediction: floor(p * num_bins), so p = 1.0 is a bin of its own."""
  return np.floor(np.asarray(probabilities, dtype=np.float64) * num_bins).astype(np.int64)


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray,
                               num_bins: int = ECE_BINS) -> float:
  """ECE over `num_bins` equal-width bins (module docstring); NaN without rows."""
  y = np.asarray(labels, dtype=np.float64).reshape(-1)
  p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
  if not len(y):
    return float('nan')
  bins = ece_bin(p, num_bins)
  gap = 0.0
  for b in np.unique(bins):
    in_bin = bins == b
    gap += abs(p[in_bin].sum() - y[in_bin].sum())
  return float(gap / len(y))


@dataclasses.dataclass(frozen=True)
class Calibrator:
  """A fitted logit -> probability map (see module docstring).

  Platt: `slope`, `intercept`. Isotonic: the knots `x` (logits, increasing) and `y`
  (probabilities), linearly interpolated between them and constant beyond the ends.
  `validation_log_loss`: the cross-validated log loss of each method on the window, and `raw`,
  the window's log loss before calibration; `rows`: the window's size; `window_start`: unix
  seconds of its first trip (0: not recorded).
  """
  method: str
  slope: float = 1.0
  intercept: float = 0.0
  x: Tuple[float, ...] = ()
  y: Tuple[float, ...] = ()
  validation_log_loss: Dict[str, float] = dataclasses.field(default_factory=dict)
  rows: int = 0
  window_start: int = 0

  def __post_init__(self):
    if self.method not in METHODS:
      raise CalibrationError(f'unknown calibration method {self.method!r}; expected one of '
                             f'{METHODS}')
    if self.method == ISOTONIC and (not self.x or len(self.x) != len(self.y)):
      raise CalibrationError('an isotonic calibrator needs as many knots x as values y, at '
                             f'least one (got {len(self.x)} and {len(self.y)})')

  def apply(self, logits: np.ndarray) -> np.ndarray:
    """Calibrated probabilities of raw logits (any shape)."""
    z = np.asarray(logits, dtype=np.float64)
    if self.method == PLATT:
      return sigmoid(self.slope * z + self.intercept)
    return np.interp(z, np.asarray(self.x), np.asarray(self.y))

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_json(cls, text: str) -> 'Calibrator':
    fields = json.loads(text)
    fields['x'], fields['y'] = tuple(fields.get('x', ())), tuple(fields.get('y', ()))
    return cls(**fields)


def read_exported(model_dir: str) -> Calibrator:
  """The calibrator an exported model applies in `serving_default` (EXPORT_FILE)."""
  with open(os.path.join(model_dir, EXPORT_FILE)) as f:
    return Calibrator.from_json(f.read())


def _fit_platt(logits: np.ndarray, labels: np.ndarray) -> Calibrator:
  from sklearn.linear_model import LogisticRegression
  regression = LogisticRegression(C=1e6, max_iter=1000).fit(logits.reshape(-1, 1), labels)
  return Calibrator(PLATT, slope=float(regression.coef_[0, 0]),
                    intercept=float(regression.intercept_[0]))


def _fit_isotonic(logits: np.ndarray, labels: np.ndarray) -> Calibrator:
  from sklearn.isotonic import IsotonicRegression
  regression = IsotonicRegression(y_min=EPSILON, y_max=1 - EPSILON, out_of_bounds='clip',
                                  increasing=True).fit(logits, labels)
  return Calibrator(ISOTONIC, x=tuple(float(v) for v in regression.X_thresholds_),
                    y=tuple(float(v) for v in regression.y_thresholds_))


_FITTERS = {PLATT: _fit_platt, ISOTONIC: _fit_isotonic}


def fit(logits: np.ndarray, labels: np.ndarray, seed: int = 0) -> Calibrator:
  """The calibrator of the lower cross-validated log loss on (logits, labels), refitted on all
  of them. Raises CalibrationError when a class has fewer than MIN_ROWS_PER_CLASS rows."""
  z = np.asarray(logits, dtype=np.float64).reshape(-1)
  y = np.asarray(labels, dtype=np.float64).reshape(-1)
  if len(z) != len(y):
    raise CalibrationError(f'{len(z)} logits but {len(y)} labels')
  positives = int(y.sum())
  if min(positives, len(y) - positives) < MIN_ROWS_PER_CLASS:
    raise CalibrationError(
        f'the validation window has {positives} positive and {len(y) - positives} negative '
        f'rows: a calibrator needs at least {MIN_ROWS_PER_CLASS} of each')
  folds = np.random.default_rng(seed).permutation(len(y)) % min(CROSS_VALIDATION_FOLDS, len(y))
  row_losses = {}
  for method, fitter in _FITTERS.items():
    held_out = np.zeros(len(y))
    for fold in np.unique(folds):
      test = folds == fold
      train = ~test
      if len(np.unique(y[train])) < 2:      # a fold's complement with one class: Platt's
        held_out[test] = y[train].mean()     # regression is undefined; predict the base rate
        continue
      held_out[test] = fitter(z[train], y[train]).apply(z[test])
    row_losses[method] = row_log_loss(y, held_out)
  method = ISOTONIC if clearly_lower(row_losses[ISOTONIC], row_losses[PLATT]) else PLATT
  losses = {'raw': log_loss(y, sigmoid(z)),
            **{m: float(np.mean(v)) for m, v in row_losses.items()}}
  return dataclasses.replace(_FITTERS[method](z, y), validation_log_loss=losses, rows=len(y))
