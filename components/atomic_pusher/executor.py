"""Executor of AtomicPusher: TF Serving never sees a half-written model version.

TFX's Pusher copies the model straight into `<base>/<version>/` (saved_model.pb last), so a
model server polling the directory can find a version whose variables are still being copied.
Here the model is copied to a hidden temporary directory (`.tmp-<version>-<random>`, which TF
Serving ignores because the name is not an integer) and renamed to `<version>` when complete: a
rename is atomic on a local or POSIX file system, so a reader sees nothing or the whole version.
A model whose files are identical to an already pushed version is not pushed again: the
PushedModel records that existing version instead (a re-run with nothing changed must not add a
version to the server).
"""
import hashlib
import os
import time
import uuid
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

TEMPORARY_PREFIX = '.tmp-'


def model_digest(model_dir: str) -> str:
  """sha256 over every file of a SavedModel directory (relative paths and contents)."""
  digest = hashlib.sha256()
  for root, _, files in sorted(fileio.walk(model_dir)):
    for name in sorted(files):
      path = os.path.join(root, name)
      digest.update(os.path.relpath(path, model_dir).encode())
      with fileio.open(path, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def list_versions(base_directory: str) -> List[int]:
  """Integer version directories under the base directory, oldest first."""
  if not fileio.isdir(base_directory):
    return []
  return sorted(int(name.rstrip('/')) for name in fileio.listdir(base_directory)
                if name.rstrip('/').isdigit())


def find_identical_version(model_dir: str, base_directory: str) -> Optional[int]:
  """The pushed version whose files equal `model_dir`'s, if there is one."""
  wanted = model_digest(model_dir)
  for version in reversed(list_versions(base_directory)):
    if model_digest(os.path.join(base_directory, str(version))) == wanted:
      return version
  return None


def push_atomically(model_dir: str, base_directory: str, version: int) -> str:
  """Copies `model_dir` to `<base>/<version>` through a temporary name; returns the final path.

  If `<version>` is taken (two pushes in one second), the next free integer is used.
  """
  fileio.makedirs(base_directory)
  while fileio.exists(os.path.join(base_directory, str(version))):
    version += 1
  temporary = os.path.join(base_directory, f'{TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex[:8]}')
  try:
    io_utils.copy_dir(model_dir, temporary)
    final = os.path.join(base_directory, str(version))
    fileio.rename(temporary, final)
  finally:
    if fileio.exists(temporary):
      fileio.rmtree(temporary)
  return final


class Executor(pusher_executor.Executor):
  """Pusher executor with atomic, idempotent pushes to a file-system destination."""

  def Do(self, input_dict: Dict[str, List[types.Artifact]],
         output_dict: Dict[str, List[types.Artifact]], exec_properties: Dict[str, Any]) -> None:
    self._log_startup(input_dict, output_dict, exec_properties)
    model_push = artifact_utils.get_single_instance(
        output_dict[standard_component_specs.PUSHED_MODEL_KEY])
    if not self.CheckBlessing(input_dict):
      self._MarkNotPushed(model_push)
      return
    model_path = self.GetModelPath(input_dict)
    destination = pusher_pb2.PushDestination()
    proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                              destination)
    if destination.WhichOneof('destination') != 'filesystem':
      raise ValueError('AtomicPusher pushes to a file system only; got '
                       f'{destination.WhichOneof("destination")!r}')
    base_directory = destination.filesystem.base_directory
    version = find_identical_version(model_path, base_directory)
    if version is not None:
      serving_path = os.path.join(base_directory, str(version))
      logging.info('Model already served as version %d (%s); not pushed again.', version,
                   serving_path)
    else:
      serving_path = push_atomically(model_path, base_directory, int(time.time()))
      logging.info('Model pushed to %s.', serving_path)
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path,
                     pushed_version=os.path.basename(serving_path))
