"""Version directories and version policies, exactly as TF Serving's file-system source sees them.

A version is a child directory of the model's base path whose whole name is a decimal integer
(`00042` is version 42; `v1`, `.tmp-42`, `42.partial` are ignored). A version is loadable only once
its `saved_model.pb` (or `.pbtxt`) exists: the Pusher writes that file last and we additionally
expect it to publish through a rename, so a directory without it is still being written.
"""
import dataclasses
import os
import re

_VERSION_NAME = re.compile(r'[0-9]{1,19}')
MAX_VERSION = 2**63 - 1
SAVED_MODEL_FILES = ('saved_model.pb', 'saved_model.pbtxt')


def parse_version(name: str) -> int | None:
  """The version number a directory name stands for, or None when it is not a version."""
  if not _VERSION_NAME.fullmatch(name):
    return None
  version = int(name)
  return version if version <= MAX_VERSION else None


def list_versions(base_path: str) -> dict[int, str]:
  """{version: directory} under `base_path`.

  Raises FileNotFoundError when the base path does not exist (TF Serving treats that as an error,
  whereas an existing base path without versions just means "nothing to serve yet"). A version
  entry that is not a directory, or a symlink resolving outside the base path, is ignored: nothing
  outside the base path is ever loaded.
  """
  if not os.path.isdir(base_path):
    raise FileNotFoundError(f'Model base path {base_path} does not exist or is not a directory')
  root = os.path.realpath(base_path)
  versions = {}
  for entry in os.scandir(base_path):
    version = parse_version(entry.name)
    if version is None or not entry.is_dir():
      continue
    if os.path.dirname(os.path.realpath(entry.path)) != root:
      continue
    # Two names for one version (`7` and `007`): keep the first in sorted order, deterministically.
    if version not in versions or entry.path < versions[version]:
      versions[version] = entry.path
  return versions


def is_complete(version_path: str) -> bool:
  """Whether a version directory holds a SavedModel graph file (written last by the Pusher)."""
  return any(os.path.isfile(os.path.join(version_path, name)) for name in SAVED_MODEL_FILES)


def fingerprint(version_path: str) -> tuple:
  """Identity of a version's graph file (mtime, size): a changed file deserves a new load attempt."""
  for name in SAVED_MODEL_FILES:
    path = os.path.join(version_path, name)
    if os.path.isfile(path):
      stat = os.stat(path)
      return (name, stat.st_mtime_ns, stat.st_size)
  return ()


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
  """TF Serving's `model_version_policy`: `latest {num_versions}`, `all {}` or `specific {versions}`."""
  kind: str = 'latest'
  num_versions: int = 1
  versions: tuple[int, ...] = ()

  def __post_init__(self):
    if self.kind not in ('latest', 'all', 'specific'):
      raise ValueError(f'Unknown version policy {self.kind!r}; expected latest, all or specific')
    if self.kind == 'latest' and self.num_versions < 1:
      raise ValueError(f'latest.num_versions must be at least 1, got {self.num_versions}')
    if self.kind == 'specific' and not self.versions:
      raise ValueError('specific version policy lists no versions')

  def select(self, candidates: set[int]) -> set[int]:
    """The versions to serve among the loadable ones."""
    if self.kind == 'all':
      return set(candidates)
    if self.kind == 'specific':
      return set(candidates) & set(self.versions)
    return set(sorted(candidates, reverse=True)[:self.num_versions])

  def describe(self) -> str:
    if self.kind == 'latest':
      return f'latest {self.num_versions}'
    if self.kind == 'specific':
      return 'specific ' + ','.join(str(v) for v in self.versions)
    return 'all'
