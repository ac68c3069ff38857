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


def _examples_artifact(root, splits: dict):
  """An ExampleGen-style Examples artifact: gzipped TFRecords of the given serialized examples
  under Split-<name>/."""
  import tensorflow as tf
  from tfx.types import artifact_utils
  from tfx.types import standard_artifacts
  examples = standard_artifacts.Examples()
  examples.uri = str(root)
  examples.split_names = artifact_utils.encode_split_names(list(splits))
  for name, records in splits.items():
    os.makedirs(os.path.join(examples.uri, f'Split-{name}'))
    path = os.path.join(examples.uri, f'Split-{name}', 'data_tfrecord-00000-of-00001.gz')
    with tf.io.TFRecordWriter(path, options='GZIP') as writer:
      for record in records:
        writer.write(record)
  return examples


def test_warmup_requests_come_from_the_eval_split_and_land_with_the_version(tmp_path):
  """TF Serving's warm-up file, as TFX's InfraValidator builds it, written into the temporary
  directory before the rename: a server never sees the version without it. Loopline's server
  replays it when it loads the version; the model's digest ignores it."""
  import tensorflow as tf
  from tfx.types import standard_artifacts
  from serving import warmup
  from serving.servable import Servable
  from tests.serving import serving_test_models as models
  model = standard_artifacts.Model()
  model.uri = str(tmp_path / 'model')
  model_dir = models.save_predict_model(os.path.join(model.uri, 'Format-Serving'), 2.0)
  eval_examples = [models.example(float(i)) for i in range(5)]
  examples = _examples_artifact(tmp_path / 'examples', {
      'train': [models.example(100.0 + i) for i in range(5)], 'eval': eval_examples})
  base = str(tmp_path / 'serving' / 'm')
  seen = []

  def prepare(directory):
    seen.append((executor.write_warmup_requests(model, examples, directory, 'm', 3, 'eval'),
                 os.listdir(base)))

  final = executor.push_atomically(model_dir, base, 100, prepare)
  (written, listed), = seen
  assert written == 3 and len(listed) == 1 and listed[0].startswith(executor.TEMPORARY_PREFIX)
  logs = warmup.read_warmup_file(warmup.warmup_file(final))
  requests = [entry.predict_log.request for entry in logs]
  assert [(r.model_spec.name, r.model_spec.signature_name, list(r.inputs)) for r in requests] == [
      ('m', 'serving_default', ['examples'])] * 3
  sent = [tf.make_ndarray(r.inputs['examples']).tolist() for r in requests]
  assert all(len(e) == 1 and e[0] in eval_examples for e in sent)  # (a shuffled batch of them)
  assert len({e[0] for e in sent}) == 3
  servable = Servable('m', 100, final)
  assert servable.warmup_requests == 3
  assert servable.signatures['serving_default'].timer.calls == 3
  assert executor.find_identical_version(model_dir, base) == 100
