"""AtomicPusher's push functions: whole versions only, never twice the same model."""
import os

import pytest

from components.atomic_pusher import executor


def _model(path, content=b'graph'):
  os.makedirs(os.path.join(path, 'variables'), exist_ok=True)
  with open(os.path.join(path, 'saved_model.pb'), 'wb') as f:
    f.write(content)
  with open(os.path.join(path, 'variables', 'variables.index'), 'wb') as f:
    f.write(b'index' + content)
  return str(path)


def test_push_lands_whole_under_the_version_and_leaves_no_temporary(tmp_path):
  model = _model(tmp_path / 'model')
  base = str(tmp_path / 'serving' / 'm')
  final = executor.push_atomically(model, base, 100)
  assert final == os.path.join(base, '100')
  assert sorted(os.listdir(base)) == ['100']
  assert executor.model_digest(final) == executor.model_digest(model)


def test_taken_version_moves_to_the_next_free_one(tmp_path):
  base = str(tmp_path / 'serving')
  executor.push_atomically(_model(tmp_path / 'a', b'a'), base, 100)
  final = executor.push_atomically(_model(tmp_path / 'b', b'b'), base, 100)
  assert final.endswith('101')
  assert executor.list_versions(base) == [100, 101]


def test_identical_model_is_found_and_different_one_is_not(tmp_path):
  base = str(tmp_path / 'serving')
  executor.push_atomically(_model(tmp_path / 'a', b'a'), base, 100)
  assert executor.find_identical_version(_model(tmp_path / 'a2', b'a'), base) == 100
  assert executor.find_identical_version(_model(tmp_path / 'b', b'b'), base) is None


def test_failed_copy_leaves_neither_version_nor_temporary(tmp_path):
  model = _model(tmp_path / 'model')
  os.symlink(str(tmp_path / 'missing'), os.path.join(model, 'variables', 'broken'))
  base = str(tmp_path / 'serving')
  executor.push_atomically(_model(tmp_path / 'old', b'old'), base, 50)
  with pytest.raises(Exception):
    executor.push_atomically(model, base, 100)
  assert os.listdir(base) == ['50']            # the previous version is untouched


def test_non_integer_directories_are_not_versions(tmp_path):
  base = tmp_path / 'serving'
  for name in ('7', '.tmp-8-abc', 'v9', '010'):
    (base / name).mkdir(parents=True)
  assert executor.list_versions(str(base)) == [7, 10]
