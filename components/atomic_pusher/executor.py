"""Executor of AtomicPusher: TF Serving never sees a half-written model version, and every version
carries its warm-up requests.

TFX's Pusher copies the model straight into `<base>/<version>/` (saved_model.pb last), so a
model server polling the directory can find a version whose variables are still being copied.
Here the model is copied to a hidden temporary directory (`.tmp-<version>-<random>`, which TF
Serving ignores because the name is not an integer), its warm-up file is written there, and it is
renamed to `<version>` when complete: a rename is atomic on a local or POSIX file system, so a
reader sees nothing or the whole version, warm-up file included.
A model whose files are identical to an already pushed version is not pushed again: the
PushedModel records that existing version instead (a re-run with nothing changed must not add a
version to the server). The warm-up file is not part of that comparison: it is made from data at
push time, not by training.
"""
import hashlib
import os
import time
import uuid
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.infra_validator import request_builder
from tfx.components.pusher import executor as pusher_executor
from tfx.dsl.io import fileio
from tfx.proto import infra_validator_pb2
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs
from tfx.utils import io_utils
from tfx.utils import proto_utils

from components.atomic_pusher import spec
from serving import warmup

TEMPORARY_PREFIX = '.tmp-'
_WARMUP_FILE = os.path.join(warmup.ASSETS_EXTRA, warmup.WARMUP_FILE)


def model_digest(model_dir: str) -> str:
  """sha256 over every file of a SavedModel directory (relative paths and contents), its warm-up
  requests left out."""
  digest = hashlib.sha256()
  for root, _, files in sorted(fileio.walk(model_dir)):
    for name in sorted(files):
      path = os.path.join(root, name)
      relative = os.path.relpath(path, model_dir)
      if relative == _WARMUP_FILE:
        continue
      digest.update(relative.encode())
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


def write_warmup_requests(model: types.Artifact, examples: types.Artifact, version_dir: str,
                          model_name: str, count: int, split: str) -> int:
  """TF Serving's warm-up file in `version_dir`: `count` examples of the `split` split (a shuffled
  batch, as the builder reads them) as requests to the model's `serving_default` signature (a
  Predict, Classify or Regress request per example, as its method says), built by TFX's
  InfraValidator request builder: the requests its `make_warmup` writes. Returns how many were
  written."""
  requests = request_builder.build_requests(
      model_name=model_name, model=model, examples=examples,
      request_spec=infra_validator_pb2.RequestSpec(
          tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(),
          split_name=split, num_examples=count))
  warmup.write_warmup_file(version_dir, [warmup.prediction_log(r) for r in requests])
  return len(requests)


def push_atomically(model_dir: str, base_directory: str, version: int, prepare=None) -> str:
  """Copies `model_dir` to `<base>/<version>` through a temporary name, calling
  `prepare(temporary directory)` (the warm-up file) before the rename; returns the final path.

  If `<version>` is taken (two pushes in one second), the next free integer is used.
  """
  fileio.makedirs(base_directory)
  while fileio.exists(os.path.join(base_directory, str(version))):
    version += 1
  temporary = os.path.join(base_directory, f'{TEMPORARY_PREFIX}{version}-{uuid.uuid4().hex[:8]}')
  try:
    io_utils.copy_dir(model_dir, temporary)
    if prepare is not None:
      prepare(temporary)
    final = os.path.join(base_directory, str(version))
    fileio.rename(temporary, final)
  finally:
    if fileio.exists(temporary):
      fileio.rmtree(temporary)
  return final


class Executor(pusher_executor.Executor):
  """Pusher executor with atomic, idempotent pushes to a file-system destination."""

  @staticmethod
  def _warmup_writer(input_dict, exec_properties, model_path: str, base_directory: str):
    """What writes the warm-up file into a version being pushed: None without `examples`, or
    when the model has its own (an InfraValidator `make_warmup` model): copied as it is."""
    examples = input_dict.get(spec.EXAMPLES_KEY)
    if not examples or fileio.exists(warmup.warmup_file(model_path)):
      return None
    model = artifact_utils.get_single_instance(input_dict[standard_component_specs.MODEL_KEY])
    count = exec_properties.get(spec.WARMUP_REQUESTS_KEY) or spec.DEFAULT_WARMUP_REQUESTS
    split = exec_properties.get(spec.WARMUP_SPLIT_KEY) or spec.DEFAULT_WARMUP_SPLIT

    def write(version_dir: str):
      written = write_warmup_requests(model, artifact_utils.get_single_instance(examples),
                                      version_dir, os.path.basename(base_directory.rstrip('/')),
                                      count, split)
      logging.info('Wrote %d warm-up requests (split %s) into the version.', written, split)

    return write

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
      serving_path = push_atomically(model_path, base_directory, int(time.time()),
                                     self._warmup_writer(input_dict, exec_properties,
                                                         model_path, base_directory))
      logging.info('Model pushed to %s.', serving_path)
    io_utils.copy_dir(model_path, model_push.uri)
    self._MarkPushed(model_push, pushed_destination=serving_path,
                     pushed_version=os.path.basename(serving_path))
