"""TF Serving's `models.config`, as the registry writes it: labels from stages, atomic writes, a lock.

`stable` -> the production version, `canary` -> the staging version, and
`model_version_policy { specific { versions: ... } }` with exactly the labelled versions (TF Serving
only assigns a label to a version it serves). Every other model of the file, and any other label
of ours, is kept as it is. A `logging_config` is refused rather than written: open-source
TF Serving will not start with one.

Writers are serialized by an exclusive `fcntl` lock on a file beside the config, and the file is
replaced atomically (temporary file in the same directory, fsync, `os.replace`), so readers (our
server, a real TF Serving polling the file) see the old or the new config, never a partial one.

No TFX import: only TF Serving's config proto.
"""
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from typing import Dict, Iterator, Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from registry.errors import ConcurrentChangeError, ServingConfigError
from registry.stages import CANARY_LABEL, STABLE_LABEL

HEADER = ('# TF Serving model config (text ModelServerConfig), written by the Loopline model '
          'registry\n# (loopline models stage|promote|rollback). stable = production, canary = '
          'staging.\n# Read by `loopline serve --model-config-file` and by tensorflow_model_server '
          '--model_config_file.\n')
LOCK_SUFFIX = '.lock'
TEMPORARY_PREFIX = '.tmp-'


def digest(text: Optional[str]) -> str:
  """Identity of the config file's content ('' when there is no file)."""
  return hashlib.sha256(text.encode('utf-8')).hexdigest() if text is not None else ''


def read_text(path: str) -> Optional[str]:
  try:
    with open(path, encoding='utf-8') as f:
      return f.read()
  except FileNotFoundError:
    return None


def parse(text: Optional[str], path: str = 'models.config'
          ) -> model_server_config_pb2.ModelServerConfig:
  """The config in `text` (an empty config for None); ServingConfigError when unusable."""
  config = model_server_config_pb2.ModelServerConfig()
  if text is None:
    return config
  try:
    text_format.Parse(text, config)
  except text_format.ParseError as e:
    raise ServingConfigError(f'{path} is not a valid TF Serving ModelServerConfig: {e}') from e
  if config.WhichOneof('config') == 'custom_model_config':
    raise ServingConfigError(f'{path} uses custom_model_config; the registry only writes '
                             'model_config_list')
  return config


def labels(config: model_server_config_pb2.ModelServerConfig, model_name: str) -> Dict[str, int]:
  """{label: version} of `model_name` in the config."""
  for entry in config.model_config_list.config:
    if entry.name == model_name:
      return {k: int(v) for k, v in entry.version_labels.items()}
  return {}


def render(existing: model_server_config_pb2.ModelServerConfig, model_name: str, base_path: str,
           stable: Optional[int], canary: Optional[int]
           ) -> model_server_config_pb2.ModelServerConfig:
  """`existing` with `model_name`'s `stable`/`canary` labels and version policy set.

  The model's entry is created (name, base_path, platform tensorflow) when missing; an existing
  entry keeps its base_path (e.g. /models/big_tipper in a container) and its other labels, whose
  versions stay in the policy. Other models are untouched.
  """
  config = model_server_config_pb2.ModelServerConfig()
  config.CopyFrom(existing)
  for entry in config.model_config_list.config:
    if entry.HasField('logging_config'):
      raise ServingConfigError(
          f'model {entry.name!r} has a logging_config: open-source TF Serving refuses to start '
          'with it (request logging belongs to the Loopline server or gateway). Remove it from '
          'models.config first')
  entry = next((e for e in config.model_config_list.config if e.name == model_name), None)
  if entry is None:
    entry = config.model_config_list.config.add()
    entry.name, entry.base_path, entry.model_platform = model_name, base_path, 'tensorflow'
  for label, version in ((STABLE_LABEL, stable), (CANARY_LABEL, canary)):
    if version is None:
      entry.version_labels.pop(label, None)
    else:
      entry.version_labels[label] = int(version)
  versions = sorted(set(int(v) for v in entry.version_labels.values()))
  if versions:
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(versions)
  return config


def to_text(config: model_server_config_pb2.ModelServerConfig) -> str:
  return HEADER + text_format.MessageToString(config)


def write_atomically(path: str, text: str) -> None:
  """Replace `path` with `text`: readers see the old file or the new one, never a part."""
  directory = os.path.dirname(path) or '.'
  os.makedirs(directory, exist_ok=True)
  temporary = os.path.join(directory, f'{TEMPORARY_PREFIX}{os.path.basename(path)}-{os.getpid()}-'
                           f'{time.monotonic_ns()}')
  try:
    with open(temporary, 'w', encoding='utf-8') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  finally:
    if os.path.exists(temporary):
      os.unlink(temporary)
  fd = os.open(directory, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


@contextlib.contextmanager
def exclusive_lock(config_path: str, what: str, timeout_seconds: float = 30.0) -> Iterator[None]:
  """Hold the registry's write lock (`<config>.lock`, fcntl) for `what`.

  Waits up to `timeout_seconds`, then raises ConcurrentChangeError naming the holder. The lock is
  released by the kernel if the holder dies, so a crash never leaves it stuck.
  """
  lock_path = config_path + LOCK_SUFFIX
  os.makedirs(os.path.dirname(lock_path) or '.', exist_ok=True)
  fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    deadline = time.monotonic() + timeout_seconds
    while True:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
          raise
        if time.monotonic() >= deadline:
          holder = _read_holder(lock_path)
          raise ConcurrentChangeError(
              f'another registry change holds {lock_path} ({holder}); nothing was changed. '
              'Try again when it is done.') from None
        time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({'pid': os.getpid(), 'what': what, 'since': time.time()}).encode(),
              0)
    yield
  finally:
    os.close(fd)  # Closing the descriptor releases the flock.


def _read_holder(lock_path: str) -> str:
  try:
    with open(lock_path, encoding='utf-8') as f:
      holder = json.load(f)
    return (f'pid {holder.get("pid")}: {holder.get("what")}, since '
            f'{time.strftime("%H:%M:%S", time.localtime(holder.get("since", 0)))}')
  except (OSError, ValueError):
    return 'holder unknown'
