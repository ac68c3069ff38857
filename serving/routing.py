"""Weighted canary / A-B routing of requests addressed to a bare model name.

`{'big_tipper': {'stable': 90, 'canary': 10}}` sends about 10% of the requests that name neither a
version nor a label to the version labelled `canary`. With a routing key (e.g. a user id header),
the choice is a deterministic function of the key, so one user always meets the same label while
the weights do not change. A routing seed makes the rest reproducible too: the same sequence of
keyless requests gets the same labels, and the seed salts the keys' hash (so another seed is another
split of the same users).
"""
import hashlib
import random


def parse_weights(spec: str) -> dict[str, float]:
  """'stable=90,canary=10' -> {'stable': 90.0, 'canary': 10.0}."""
  weights = {}
  for part in spec.split(','):
    label, sep, value = part.strip().partition('=')
    if not sep or not label:
      raise ValueError(f'Bad weight {part!r}: expected label=weight')
    try:
      weights[label] = float(value)
    except ValueError:
      raise ValueError(f'Bad weight {part!r}: {value!r} is not a number') from None
  validate_weights(weights)
  return weights


def validate_weights(weights: dict[str, float]):
  if not weights:
    raise ValueError('No labels given')
  if any(w < 0 or w != w for w in weights.values()):
    raise ValueError(f'Weights must be non-negative numbers: {weights}')
  if sum(weights.values()) <= 0:
    raise ValueError(f'Weights must not all be zero: {weights}')


def _unit_interval(model: str, key: str, salt: str = '') -> float:
  digest = hashlib.sha256(f'{salt}{model}\0{key}'.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') / 2.0**64


class CanaryRouter:
  """Chooses a version label per request for models with configured weights."""

  def __init__(self, weights: dict[str, dict[str, float]], rng: random.Random | None = None,
               seed: int | None = None):
    """`rng` draws the keyless requests' labels; `seed` (instead of an rng): a Random(seed) for
    them, and the salt of the routing keys' hash."""
    for model_weights in weights.values():
      validate_weights(model_weights)
    if rng is not None and seed is not None:
      raise ValueError('give a routing rng or a routing seed, not both')
    self._weights = {m: dict(sorted(w.items())) for m, w in weights.items()}
    self._rng = rng or random.Random(seed)
    self._salt = f'{seed}\0' if seed is not None else ''

  def routes(self, model: str) -> bool:
    return model in self._weights

  def choose_label(self, model: str, available_labels: set[str] | None,
                   routing_key: str | None = None) -> str | None:
    """The label to serve this request, or None to fall back to TF Serving's default (latest).

    Labels that are not currently assigned (`available_labels`; None means "unknown, trust the
    weights") are left out and the remaining weights renormalized.
    """
    weights = self._weights.get(model)
    if not weights:
      return None
    if available_labels is not None:
      weights = {l: w for l, w in weights.items() if l in available_labels}
    total = sum(weights.values())
    if total <= 0:
      return None
    point = (_unit_interval(model, routing_key, self._salt) if routing_key is not None else
             self._rng.random()) * total
    for label, weight in weights.items():
      if point < weight:
        return label
      point -= weight
    return [l for l, w in weights.items() if w > 0][-1]
