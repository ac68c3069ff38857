"""Pure logic of SpanValidator: span files against the schema, column types, presence, anomalies.

- `check_headers`: each span file's header against the schema's features (TRAINING environment):
  a feature missing from a header is SCHEMA_MISSING_COLUMN, a column the schema does not know is
  SCHEMA_NEW_COLUMN, each naming the span, the version, the file and the column.
- `typed_value`: a span's cells are read as the schema types them; a cell that does not fit
  (text in a numeric column, a fraction in an integer one) is a type break, counted per span and
  column (`TypeBreaks`) and reported as UNEXPECTED_DATA_TYPE naming the span, the column, how
  many values and one of them; the statistics see it as a missing value.
- `presence_drops`: a feature present in clearly fewer of the newest span's rows than of the
  spans before it (a column going empty on part of the rows), even when the schema's
  `min_fraction` still holds: a one-sided two-proportion z-test with an effect floor.
- `add_findings`: merges these into a span's TFDV `Anomalies`, one reason per anomaly type.

No TFX import.
"""
import dataclasses
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_metadata.proto.v0 import statistics_pb2

TRAINING = 'TRAINING'
MISSING_COLUMN = 'SCHEMA_MISSING_COLUMN'
NEW_COLUMN = 'SCHEMA_NEW_COLUMN'
LOW_PRESENCE = 'FEATURE_TYPE_LOW_FRACTION_PRESENT'

TYPE_BREAK = 'UNEXPECTED_DATA_TYPE'
_EXAMPLE_CHARACTERS = 40

# A column missing from a header, or values of the wrong type (read as missing), explain every
# presence anomaly of that column in that span.
PRESENCE_TYPES = frozenset({MISSING_COLUMN, LOW_PRESENCE, 'FEATURE_TYPE_NOT_PRESENT',
                            'FEATURE_TYPE_LOW_NUMBER_PRESENT'})
_REPLACES = {MISSING_COLUMN: PRESENCE_TYPES, TYPE_BREAK: PRESENCE_TYPES | {TYPE_BREAK}}
_SHORT_DESCRIPTIONS = {MISSING_COLUMN: 'Column missing from a span file',
                       NEW_COLUMN: 'New column in a span file',
                       LOW_PRESENCE: 'Column going empty',
                       TYPE_BREAK: 'Values of the wrong type'}

# A presence drop is reported when it is both certain (z) and large enough to matter (points).
PRESENCE_DROP_MIN_Z = 4.0
PRESENCE_DROP_MIN_POINTS = 0.05


@dataclasses.dataclass(frozen=True)
class SpanFile:
  """One CSV file of one span version, with its header."""
  span: int
  version: int
  path: str
  columns: Tuple[str, ...]


def span_files_from_json(recorded: Mapping) -> List[SpanFile]:
  """SpanFiles of the `span_files` property SpanRangeCsvExampleGen records."""
  return [SpanFile(int(entry['span']), int(entry['version']), f['path'], tuple(f['columns']))
          for entry in recorded['spans'] for f in entry['files']]


def spans_of(files: Sequence[SpanFile]) -> Dict[int, int]:
  """{span: version} of the files, in span order."""
  return dict(sorted({f.span: f.version for f in files}.items()))


@dataclasses.dataclass(frozen=True)
class Finding:
  """One problem of one span, as it goes into that span's Anomalies."""
  span: int
  feature: str
  anomaly_type: str      # an anomalies_pb2.AnomalyInfo.Type name
  description: str


def in_environment(feature: schema_pb2.Feature, schema: schema_pb2.Schema,
                   environment: str = TRAINING) -> bool:
  if environment in feature.not_in_environment:
    return False
  if feature.in_environment:
    return environment in feature.in_environment
  return environment in schema.default_environment or not schema.default_environment


def schema_columns(schema: schema_pb2.Schema, environment: str = TRAINING) -> List[str]:
  """The features a span of `environment` must carry as columns, in schema order."""
  return [f.name for f in schema.feature if in_environment(f, schema, environment)]


def display_path(path: str, root: Optional[str] = None) -> str:
  """`path` relative to `root` (e.g. 'span-6/version-1/data.csv') when it lies under it."""
  if root and path.startswith(root.rstrip('/') + '/'):
    return path[len(root.rstrip('/')) + 1:]
  return path


def check_headers(files: Sequence[SpanFile], schema: schema_pb2.Schema,
                  environment: str = TRAINING, root: Optional[str] = None) -> List[Finding]:
  """Every schema column missing from a file's header, every header column the schema does not
  know; one finding per span and column, naming every file it concerns."""
  expected = schema_columns(schema, environment)
  known = {f.name for f in schema.feature}
  by_key: Dict[Tuple[int, str, str], List[SpanFile]] = {}
  for span_file in files:
    header = set(span_file.columns)
    for column in expected:
      if column not in header:
        by_key.setdefault((span_file.span, column, MISSING_COLUMN), []).append(span_file)
    for column in span_file.columns:
      if column not in known:
        by_key.setdefault((span_file.span, column, NEW_COLUMN), []).append(span_file)
  findings = []
  for (span, column, anomaly_type), concerned in sorted(by_key.items()):
    names = ', '.join(display_path(f.path, root) for f in concerned)
    what = ('missing from the header of' if anomaly_type == MISSING_COLUMN
            else 'not in the schema, found in the header of')
    findings.append(Finding(span, column, anomaly_type,
                            f'column {column!r} {what} {names} (span {span}, version '
                            f'{concerned[0].version})'))
  return findings


def typed_value(cell: bytes, feature_type: int) -> Union[int, float, bytes, None]:
  """The value of a non-empty CSV cell as the schema types its column (INT, FLOAT, BYTES), or
  None when it does not fit (a type break)."""
  try:
    if feature_type == schema_pb2.INT:
      return int(cell)
    if feature_type == schema_pb2.FLOAT:
      return float(cell)
  except ValueError:
    return None
  return cell


@dataclasses.dataclass
class TypeBreaks:
  """One span's cells that do not fit their column's schema type: {column: [count, example]}."""
  span: int
  version: int
  rows: int = 0
  columns: Dict[str, list] = dataclasses.field(default_factory=dict)

  def add(self, column: str, cell: bytes) -> None:
    entry = self.columns.setdefault(column, [0, cell.decode('utf-8', 'replace')])
    entry[0] += 1

  def findings(self, schema: schema_pb2.Schema) -> List[Finding]:
    types = {f.name: schema_pb2.FeatureType.Name(f.type) for f in schema.feature}
    return [Finding(self.span, column, TYPE_BREAK,
                    f'{count} of the {self.rows} values of column {column!r} in span '
                    f'{self.span} (version {self.version}) are not {types[column]}, e.g. '
                    f'{example[:_EXAMPLE_CHARACTERS]!r}')
            for column, (count, example) in sorted(self.columns.items())]


def presence(statistics: statistics_pb2.DatasetFeatureStatistics) -> Dict[str, Tuple[int, int]]:
  """{feature: (rows with a value, rows)} of one dataset's statistics."""
  rows = int(statistics.num_examples)
  result = {}
  for feature in statistics.features:
    name = '.'.join(feature.path.step) if feature.path.step else feature.name
    common = _common_stats(feature)
    result[name] = (int(common.num_non_missing) if common is not None else 0, rows)
  return result


def _common_stats(feature: statistics_pb2.FeatureNameStatistics):
  kind = feature.WhichOneof('stats')
  if kind in ('num_stats', 'string_stats', 'bytes_stats', 'struct_stats'):
    return getattr(feature, kind).common_stats
  return None


def presence_drops(newest: statistics_pb2.DatasetFeatureStatistics,
                   previous: statistics_pb2.DatasetFeatureStatistics, span: int,
                   previous_label: str, features: Iterable[str],
                   min_z: float = PRESENCE_DROP_MIN_Z,
                   min_points: float = PRESENCE_DROP_MIN_POINTS) -> List[Finding]:
  """Features of `features` present in fewer of the newest span's rows than of the previous
  spans', by at least `min_points` and `min_z` standard errors (one-sided two-proportion z-test);
  a feature absent from the newest statistics altogether counts as present in no row."""
  new_presence, old_presence = presence(newest), presence(previous)
  new_rows, old_rows = int(newest.num_examples), int(previous.num_examples)
  findings = []
  for name in features:
    if name not in old_presence or not new_rows or not old_rows:
      continue
    p_new = new_presence.get(name, (0, new_rows))[0] / new_rows
    p_old = old_presence[name][0] / old_rows
    pooled = (p_new * new_rows + p_old * old_rows) / (new_rows + old_rows)
    standard_error = math.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / new_rows + 1 / old_rows))
    z = (p_old - p_new) / standard_error
    if p_old - p_new >= min_points and z >= min_z:
      findings.append(Finding(
          span, name, LOW_PRESENCE,
          f'present in {p_new:.1%} of the rows of span {span}, {p_old:.1%} of {previous_label} '
          f'(z = {z:.1f}): the column is going empty'))
  return findings


def without_drift_comparators(schema: schema_pb2.Schema,
                              features: Iterable[str]) -> schema_pb2.Schema:
  """A copy of `schema` whose `features` have no drift comparator (they are not compared)."""
  result = schema_pb2.Schema()
  result.CopyFrom(schema)
  excluded = set(features)
  for feature in result.feature:
    if feature.name in excluded:
      feature.ClearField('drift_comparator')
  return result


def add_findings(anomalies: anomalies_pb2.Anomalies, findings: Iterable[Finding]) -> None:
  """Puts findings into `anomalies` (ERROR severity). A finding replaces TFDV's reasons of the
  same type for the same feature, and a column missing from a header or values of the wrong type
  every presence reason of that column (TFDV's 'not present in any examples' gives way to the
  header check's finding, which names the file)."""
  for finding in findings:
    info = anomalies.anomaly_info[finding.feature]
    info.severity = anomalies_pb2.AnomalyInfo.ERROR
    anomaly_type = anomalies_pb2.AnomalyInfo.Type.Value(finding.anomaly_type)
    replaced = {anomalies_pb2.AnomalyInfo.Type.Value(t)
                for t in _REPLACES.get(finding.anomaly_type, {finding.anomaly_type})}
    kept = [r for r in info.reason if r.type not in replaced]
    del info.reason[:]
    info.reason.extend(kept)
    info.reason.add(type=anomaly_type,
                    short_description=_SHORT_DESCRIPTIONS.get(finding.anomaly_type,
                                                              finding.anomaly_type),
                    description=finding.description)
    info.short_description = (info.reason[0].short_description if len(info.reason) == 1
                              else 'Multiple errors')
    info.description = ' '.join(r.description for r in info.reason)
    if not info.path.step:
      info.path.step.append(finding.feature)
