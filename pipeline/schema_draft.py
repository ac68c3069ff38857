"""`loopline schema draft`: infer a schema from fresh statistics of some spans, for review.

The committed `schema/schema.pbtxt` is curated by hand (domains, physical ranges, environments,
drift comparators). When the data changes, a draft inferred from the new spans is written next to
it and compared: what the draft sees differently is printed, and a person decides what to adopt.
"""
import os
import tempfile
from typing import Dict, List

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from core import spans as spans_lib


def infer_draft(data_root: str, first_span: int, last_span: int) -> schema_pb2.Schema:
  """Statistics of the span range (TFDV on Beam's DirectRunner) -> inferred schema."""
  versions = spans_lib.check_span_range(data_root, first_span, last_span)
  with tempfile.TemporaryDirectory() as range_dir:
    # TFDV reads one glob: link the range's files into one directory.
    for span, version in versions.items():
      os.symlink(os.path.abspath(spans_lib.span_path(data_root, span, version)),
                 os.path.join(range_dir, f'span-{span}.csv'))
    statistics = tfdv.generate_statistics_from_csv(
        data_location=os.path.join(range_dir, '*.csv'))
  return tfdv.infer_schema(statistics, infer_feature_shape=False)


def compare(curated: schema_pb2.Schema, draft: schema_pb2.Schema) -> List[str]:
  """Human-readable differences that matter for review: features, types, domains, presence."""
  differences = []
  curated_features: Dict[str, schema_pb2.Feature] = {f.name: f for f in curated.feature}
  draft_features: Dict[str, schema_pb2.Feature] = {f.name: f for f in draft.feature}
  for name in sorted(set(draft_features) - set(curated_features)):
    differences.append(f'new feature in the data: {name}')
  for name in sorted(set(curated_features) - set(draft_features)):
    differences.append(f'feature missing from the data: {name}')
  draft_domains = {d.name: set(d.value) for d in draft.string_domain}
  curated_domains = {d.name: set(d.value) for d in curated.string_domain}
  for name in sorted(set(curated_features) & set(draft_features)):
    cur, new = curated_features[name], draft_features[name]
    if cur.type != new.type:
      differences.append(f'{name}: type {schema_pb2.FeatureType.Name(cur.type)} -> '
                         f'{schema_pb2.FeatureType.Name(new.type)}')
    if new.presence.min_fraction < cur.presence.min_fraction:
      differences.append(f'{name}: present in {new.presence.min_fraction:.3f} of rows, curated '
                         f'minimum {cur.presence.min_fraction:.3f}')
    domain = cur.domain or name
    unseen = draft_domains.get(new.domain or name, set()) - curated_domains.get(domain, set())
    if unseen and domain in curated_domains:
      differences.append(f'{name}: values outside the curated domain: {sorted(unseen)[:10]}')
  return differences


def write_draft(data_root: str, first_span: int, last_span: int, curated_path: str,
                out_path: str) -> List[str]:
  """Writes the draft schema and returns its differences from the curated one."""
  draft = infer_draft(data_root, first_span, last_span)
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  tfdv.write_schema_text(draft, out_path)
  return compare(tfdv.load_schema_text(curated_path), draft) if os.path.exists(
      curated_path) else []
