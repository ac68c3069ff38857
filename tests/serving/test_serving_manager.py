"""Model discovery and version management against real SavedModels on disk."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import push
from serving.config import ModelConfig, load_model_config_file
from serving.errors import Code, ServingError
from serving.manager import ModelManager
from serving.servable import Servable
from serving.versions import VersionPolicy
import serving_test_models as tm

pytestmark = pytest.mark.timeout(120)


def _predict(servable, x=1.0):
  signature = servable.signature('serving_default')
  import numpy as np
  examples = np.array([tm.example(x)], dtype=object)
  return float(signature.run(signature.validate({'examples': examples}))['probabilities'][0][0])


def _states(manager, name='m'):
  return [(s.version, s.state) for s in manager.status(name)]


def test_latest_policy_swaps_to_new_version_and_reports_end(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', base)])
  assert _states(manager) == [(1, 'AVAILABLE')]
  old = manager.resolve('m')
  push(built_models, 'w2', base, 2)
  manager.reconcile()
  assert _states(manager) == [(2, 'AVAILABLE'), (1, 'END')]
  assert _predict(manager.resolve('m')) == 2.0
  assert _predict(old) == 1.0  # An in-flight holder of the old version still gets answers.
  with pytest.raises(ServingError) as info:
    manager.resolve('m', version=1)
  assert info.value.code == Code.NOT_FOUND
  assert info.value.message == 'Servable not found for request: Specific(m, 1)'


def test_all_latest_n_and_specific_policies(built_models, tmp_path):
  base = str(tmp_path / 'm')
  for version, key in ((1, 'w1'), (2, 'w2'), (3, 'w3')):
    push(built_models, key, base, version)
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', base, VersionPolicy('latest', 2))])
  assert manager.available() == {'m': [3, 2]}
  manager.apply_config([ModelConfig('m', base, VersionPolicy('all'))])
  assert manager.available() == {'m': [3, 2, 1]}
  manager.apply_config([ModelConfig('m', base, VersionPolicy('specific', versions=(1,)))])
  assert manager.available() == {'m': [1]}
  assert _states(manager) == [(3, 'END'), (2, 'END'), (1, 'AVAILABLE')]


def test_half_written_and_non_version_directories_are_never_loaded(built_models, tmp_path):
  base = tmp_path / 'm'
  push(built_models, 'w1', str(base), 1)
  shutil.copytree(built_models['w2'], base / '.tmp-5')  # Pusher still copying, hidden name.
  shutil.copytree(built_models['w2'], base / 'v9')
  half = base / '7'
  shutil.copytree(built_models['w2'], half)
  os.remove(half / 'saved_model.pb')  # saved_model.pb comes last: not there yet.
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', str(base))])
  assert _states(manager) == [(1, 'AVAILABLE')]
  shutil.copy(os.path.join(built_models['w2'], 'saved_model.pb'), half / 'saved_model.pb')
  manager.reconcile()
  assert manager.available() == {'m': [7]}


def test_corrupt_version_is_not_served_and_previous_keeps_serving(built_models, tmp_path):
  # The same arrange steps as the next tests (`duplicates` pairs them); each test reads alone.
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', base)])
  tm.corrupt_version(os.path.join(base, '2'))
  manager.reconcile()
  manager.reconcile()  # Not retried while the file is unchanged.
  statuses = {s.version: s for s in manager.status('m')}
  assert statuses[1].state == 'AVAILABLE'
  assert statuses[2].state == 'END' and statuses[2].error_code == Code.UNKNOWN
  assert 'Failed to load servable m version 2' in statuses[2].error_message
  assert manager.resolve('m').version == 1


def test_labels_only_point_at_available_versions(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  push(built_models, 'w2', base, 2)
  manager = ModelManager(Servable)
  specific = VersionPolicy('specific', versions=(1, 2))
  manager.apply_config([ModelConfig('m', base, specific, (('canary', 2), ('stable', 1)))])
  assert manager.resolve('m', label='stable').version == 1
  assert manager.resolve('m', label='canary').version == 2
  with pytest.raises(ServingError) as info:
    manager.apply_config([ModelConfig('m', base, specific, (('stable', 9),))])
  assert info.value.code == Code.FAILED_PRECONDITION
  assert info.value.message == ('Request to assign label to version 9 of model m, which is not '
                                'currently available for inference')
  assert manager.resolve('m', label='stable').version == 1  # Kept its previous value.
  with pytest.raises(ServingError) as info:
    manager.resolve('m', label='canary')  # Removed by the new config.
  assert info.value.code == Code.INVALID_ARGUMENT
  assert info.value.message == 'Unrecognized servable version label: canary'


def test_unknown_model_messages(tmp_path):
  manager = ModelManager(Servable)
  with pytest.raises(ServingError, match=r'Servable not found for request: Latest\(nope\)'):
    manager.resolve('nope')
  with pytest.raises(ServingError, match='Could not find any versions of model nope'):
    manager.status('nope')


def test_empty_base_path_is_not_an_error_and_versions_appear_later(built_models, tmp_path):
  base = tmp_path / 'm'
  base.mkdir()
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', str(base))])
  assert manager.available() == {'m': []}
  push(built_models, 'w1', str(base), 3)
  manager.reconcile()
  assert manager.available() == {'m': [3]}


def test_removing_a_model_from_the_config_unloads_it(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  manager = ModelManager(Servable)
  manager.apply_config([ModelConfig('m', base)])
  manager.apply_config([])
  assert _states(manager) == [(1, 'END')]
  with pytest.raises(ServingError, match='Servable not found'):
    manager.resolve('m')


def test_config_file_is_re_read_on_change(built_models, tmp_path):
  base = str(tmp_path / 'm')
  push(built_models, 'w1', base, 1)
  push(built_models, 'w2', base, 2)
  config_file = tmp_path / 'models.config'

  def write(label_version):
    config_file.write_text(f'model_config_list {{ config {{ name: "m" base_path: "{base}" '
                           'model_version_policy { all {} } '
                           f'version_labels {{ key: "stable" value: {label_version} }} }} }}')

  write(1)
  manager = ModelManager(Servable)
  manager.apply_config(load_model_config_file(str(config_file)))
  manager.watch_config_file(str(config_file), 0.1, None)
  write(2)
  os.utime(config_file, ns=(1, 10**18))  # A distinct mtime even on coarse file systems.
  manager.reload_config_file_if_changed()  # What the polling thread does each period.
  assert manager.resolve('m', label='stable').version == 2
  config_file.write_text('not a config')
  os.utime(config_file, ns=(1, 2 * 10**18))
  manager.reload_config_file_if_changed()  # Bad file: logged, current models kept.
  assert manager.resolve('m', label='stable').version == 2


def test_inputs_reach_the_signature_by_name_whatever_their_declared_order(tmp_path):
  """Signature.run calls the function with its inputs in flat order (names sorted): a signature
  that declares them in another order, with one dtype (a swap would not fail), still gets each
  input under its own name."""

  class Difference(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name='value'),
                                  tf.TensorSpec([None], tf.float32, name='base')])
    def difference(self, value, base):
      return {'delta': value - base}

  module = Difference()
  path = str(tmp_path / '1')
  tf.saved_model.save(module, path, signatures={'serving_default': module.difference})
  signature = Servable('d', 1, path).signature('serving_default')
  inputs = signature.validate({'value': np.array([5.0, 1.0], np.float32),
                               'base': np.array([2.0, 4.0], np.float32)})
  assert signature.run(inputs)['delta'].tolist() == [3.0, -3.0]


def test_a_signature_with_captured_variables_and_tables_answers_as_its_public_call(tmp_path):
  """Signature.run passes the function's captured inputs (resolved once at load) itself: a model
  whose answer needs a variable and a lookup table gets both, and answers as the public call."""

  class Scored(tf.Module):

    def __init__(self):
      super().__init__()
      self.scale = tf.Variable(3.0)
      self.table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(['a', 'b'], [1.0, 2.0]), default_value=0.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='key')])
    def score(self, key):
      return {'score': self.table.lookup(key) * self.scale}

  module = Scored()
  path = str(tmp_path / '1')
  tf.saved_model.save(module, path, signatures={'serving_default': module.score})
  signature = Servable('s', 1, path).signature('serving_default')
  keys = np.array([b'a', b'b', b'z'], dtype=object)
  public = tf.saved_model.load(path).signatures['serving_default'](key=tf.constant(keys))
  answered = signature.run(signature.validate({'key': keys}))['score'].tolist()
  assert answered == [3.0, 6.0, 0.0] == public['score'].numpy().tolist()
