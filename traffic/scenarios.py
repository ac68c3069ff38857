"""Traffic scenarios: reproducible breakage applied to held-back rows before they are replayed.

`loopline replay` sends the future spans to the server; a scenario changes the rows on the way, so
the monitoring can be checked against a known cause. Every scenario is a pure function over
CSV-like rows (a list of dicts column -> text, as `csv.DictReader` yields them) and returns new
rows (the input is never modified). Randomness comes only from the `seed` argument, so a replay is
reproducible.

| name | what it changes | features it shifts / breaks |
| --- | --- | --- |
| `none` | nothing (clean traffic) | - |
| `fare_inflation` | every fare multiplied by 1.5 (a price or unit change upstream) | `fare` |
| `payment_mix` | half of the cash rides become credit-card rides (card readers) | `payment_type` |
| `renamed_field` | `company` is sent as `taxi_company` | `company` (missing), new column |
| `missing_field` | `dropoff_latitude` / `dropoff_longitude` are no longer sent | both (missing) |
| `number_as_text` | `trip_seconds` is sent as a string (`"960"` as bytes) | `trip_seconds` (type) |
| `schema_break` | all three breaks at once: "the server team changed the log format" | the union |

The label (`big_tipper`) is never changed: the ground truth of a trip is what it was; a scenario
changes what the model sees. `fare_inflation` therefore also shifts the relation between features
and label (the model's predictions move, realized performance drops), `payment_mix` too.

What reaches the request log depends on the model's parser: the serving signature parses with the
schema's raw feature spec, so a value of the wrong type makes the server reject the request
(INVALID_ARGUMENT) and nothing is logged: the break shows up as failed requests in replay. A
missing column does not: every feature is parsed as optional (a missing value becomes the model's
default, checked on a pushed model with a request carrying `payment_type` alone), so the request
is answered and logged, and ServingLogExampleGen counts and names the logged requests missing a
feature the model requires (`fare`, `trip_miles`, `trip_start_*`, `payment_type`: always present
in the schema). The breaks above were chosen on optional columns, so the logs carry the break (the
drift detector must then name it), except `number_as_text`, which the model rejects when
replayed; the detector meets it when the logging side changes format (tests write such logs
directly).

Replay converts rows with `core.examples.row_to_example(row, scenario.example_types(types))`:
`example_types` turns the columns a scenario sends as text into BYTES, everything else keeps the
schema's type.

Pure logic (random, copy), no TensorFlow import.
"""
import dataclasses
import random
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

Row = Dict[str, str]
Rows = List[Row]

FARE_FACTOR = 1.5
CASH_TO_CARD_SHARE = 0.5


class UnknownScenarioError(KeyError):
  """A scenario name that is not registered; the message lists the registered ones."""

  def __str__(self):
    return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class Scenario:
  """A named, documented transform of replayed rows."""
  name: str
  description: str
  transform: Callable[[Rows, random.Random], Rows]
  shifted_features: Tuple[str, ...] = ()     # distribution changes drift detection must name
  broken_features: Tuple[str, ...] = ()      # features whose schema breaks (missing, type)
  renamed_columns: Tuple[Tuple[str, str], ...] = ()   # (old name, new name)
  text_columns: Tuple[str, ...] = ()         # columns sent as strings from now on

  @property
  def new_columns(self) -> Tuple[str, ...]:
    """Columns that appear although the schema does not know them."""
    return tuple(new for _, new in self.renamed_columns)

  @property
  def affected_features(self) -> Tuple[str, ...]:
    """Every schema feature the scenario changes: what a detector should name, and only these."""
    return tuple(sorted(set(self.shifted_features) | set(self.broken_features)))

  def apply(self, rows: Sequence[Mapping[str, str]], seed: int = 0) -> Rows:
    """New rows with the scenario applied (the input rows are left untouched)."""
    return self.transform([dict(row) for row in rows], random.Random(seed))

  def example_types(self, types: Mapping[str, int]) -> Dict[str, int]:
    """The column types to encode tf.Examples with: `text_columns` become BYTES.

    `types` maps column -> `schema_pb2.FeatureType` value (core.examples.feature_types);
    a renamed column keeps the type of the column it replaces.
    """
    bytes_type = 1  # schema_pb2.BYTES; a literal keeps this module free of TensorFlow imports
    result = dict(types)
    for column in self.text_columns:
      result[column] = bytes_type
    for old, new in self.renamed_columns:
      if old in types and new not in result:
        result[new] = types[old]
    return result


def _none(rows: Rows, rng: random.Random) -> Rows:
  del rng
  return rows


def _format_number(value: float) -> str:
  return f'{value:.2f}'


def inflate_fares(rows: Sequence[Mapping[str, str]], factor: float = FARE_FACTOR) -> Rows:
  """New rows with every fare multiplied by `factor` (the `fare_inflation` transform, any size)."""
  result = [dict(row) for row in rows]
  for row in result:
    if row.get('fare'):
      row['fare'] = _format_number(float(row['fare']) * factor)
  return result


def cash_to_card(rows: Sequence[Mapping[str, str]], share: float = CASH_TO_CARD_SHARE,
                 seed: int = 0) -> Rows:
  """New rows where `share` of the cash rides are credit-card rides (`payment_mix`, any size)."""
  rng = random.Random(seed)
  result = [dict(row) for row in rows]
  for row in result:
    if row.get('payment_type') == 'Cash' and rng.random() < share:
      row['payment_type'] = 'Credit Card'
  return result


def _fare_inflation(rows: Rows, rng: random.Random) -> Rows:
  del rng
  return inflate_fares(rows)


def _payment_mix(rows: Rows, rng: random.Random) -> Rows:
  return cash_to_card(rows, seed=rng.randrange(2 ** 32))


def _rename(rows: Rows, old: str, new: str) -> Rows:
  for row in rows:
    if old in row:
      row[new] = row.pop(old)
  return rows


def _renamed_field(rows: Rows, rng: random.Random) -> Rows:
  del rng
  return _rename(rows, 'company', 'taxi_company')


def _missing_field(rows: Rows, rng: random.Random) -> Rows:
  del rng
  for row in rows:
    row.pop('dropoff_latitude', None)
    row.pop('dropoff_longitude', None)
  return rows


def _number_as_text(rows: Rows, rng: random.Random) -> Rows:
  # The text is the number itself: only the type changes (see Scenario.example_types).
  del rng
  return rows


def _schema_break(rows: Rows, rng: random.Random) -> Rows:
  return _number_as_text(_missing_field(_renamed_field(rows, rng), rng), rng)


SCENARIOS: Dict[str, Scenario] = {s.name: s for s in (
    Scenario('none', 'Clean traffic: the rows as they were.', _none),
    Scenario('fare_inflation',
             f'Numeric shift: every fare is multiplied by {FARE_FACTOR} (a price increase, or a '
             'unit change upstream). Only `fare` changes.',
             _fare_inflation, shifted_features=('fare',)),
    Scenario('payment_mix',
             f'Categorical mix change: {CASH_TO_CARD_SHARE:.0%} of the cash rides are paid by '
             'credit card instead (card readers installed in every cab). Only `payment_type` '
             'changes (Cash ~68% -> ~34%, Credit Card ~31% -> ~65% on the training spans).',
             _payment_mix, shifted_features=('payment_type',)),
    Scenario('renamed_field',
             'Schema break: `company` is sent under the name `taxi_company`. The model still '
             'answers (company is optional for it), the logs lack `company` and carry a column '
             'the schema does not know.',
             _renamed_field, broken_features=('company',),
             renamed_columns=(('company', 'taxi_company'),)),
    Scenario('missing_field',
             'Schema break: `dropoff_latitude` and `dropoff_longitude` are no longer sent. The '
             'model still answers (both are optional for it).',
             _missing_field, broken_features=('dropoff_latitude', 'dropoff_longitude')),
    Scenario('number_as_text',
             'Schema break: `trip_seconds` is sent as text (the digits as a string feature). '
             'The model rejects such requests (INVALID_ARGUMENT); logs written by a changed '
             'logger carry it as bytes.',
             _number_as_text, broken_features=('trip_seconds',), text_columns=('trip_seconds',)),
    Scenario('schema_break',
             '"The server team changed the log format": `company` renamed to `taxi_company`, '
             'the dropoff coordinates dropped, `trip_seconds` sent as text.',
             _schema_break,
             broken_features=('company', 'dropoff_latitude', 'dropoff_longitude', 'trip_seconds'),
             renamed_columns=(('company', 'taxi_company'),), text_columns=('trip_seconds',)),
)}


def get(name: str) -> Scenario:
  """The registered scenario `name`, or UnknownScenarioError listing the known names."""
  try:
    return SCENARIOS[name]
  except KeyError:
    raise UnknownScenarioError(
        f'unknown scenario {name!r}; known: {", ".join(sorted(SCENARIOS))}') from None


def names() -> List[str]:
  return sorted(SCENARIOS)


def apply(name: str, rows: Sequence[Mapping[str, str]], seed: int = 0) -> Rows:
  """Shortcut: `get(name).apply(rows, seed)`."""
  return get(name).apply(rows, seed)
