"""The layers of ARCHITECTURE.md hold: no module imports a package of a higher layer, and no
import circle across files (tests/import_layers.py walks every import with `ast`)."""
import os
import shutil

from tests import import_layers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = [p for _, packages in import_layers.LAYERS for p in packages]


def _copy_packages(target):
  for package in PACKAGES:
    shutil.copytree(os.path.join(REPO, package), os.path.join(target, package),
                    ignore=lambda _, names: [n for n in names if n == '__pycache__' or (
                        not n.endswith('.py') and '.' in n)])


def test_the_project_imports_only_downwards_and_in_no_circle():
  assert import_layers.check(REPO) == []


def test_every_project_package_has_a_layer():
  top_level = {name for name in os.listdir(REPO)
               if os.path.isfile(os.path.join(REPO, name, '__init__.py')) and name != 'tests'}
  assert top_level <= set(PACKAGES), f'packages without a layer: {top_level - set(PACKAGES)}'


def test_a_planted_upward_import_fails_the_check(tmp_path):
  """A function-level import of the pipeline from a component, in a copy of the project."""
  _copy_packages(tmp_path)
  assert import_layers.check(str(tmp_path)) == []
  with open(tmp_path / 'components' / 'drift_detector' / 'policy.py', 'a') as f:
    f.write('\n\ndef _planted():\n  from pipeline import training_pipeline\n'
            '  return training_pipeline\n')
  assert import_layers.check(str(tmp_path)) == [
      'components.drift_detector.policy (components) imports pipeline.training_pipeline '
      '(pipelines, a higher layer)',
      # pipeline.config imports the drift policy: the planted import also closes a circle.
      'import cycle: components.drift_detector.policy <-> pipeline.config <-> '
      'pipeline.training_pipeline']


def test_a_planted_cycle_within_a_layer_fails_the_check(tmp_path):
  """Two modules of one layer importing each other (relative imports too) are a circle."""
  package = tmp_path / 'core'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'a.py').write_text('from . import b\n')
  (package / 'b.py').write_text('def f():\n  from core.a import g\n')
  (package / 'c.py').write_text('import core.a\n')
  assert import_layers.check(str(tmp_path)) == ['import cycle: core.a <-> core.b']


def test_a_module_outside_every_layer_is_reported(tmp_path):
  layers = (('bottom', ('low',)),)
  (tmp_path / 'low').mkdir()
  (tmp_path / 'low' / '__init__.py').write_text('')
  (tmp_path / 'low' / 'x.py').write_text('import high.y\n')
  (tmp_path / 'high').mkdir()
  (tmp_path / 'high' / '__init__.py').write_text('')
  (tmp_path / 'high' / 'y.py').write_text('')
  graph = import_layers.import_graph(str(tmp_path), ['low', 'high'])
  try:
    import_layers.upward_imports(graph, layers)
  except ValueError as e:
    assert 'high.y' in str(e) and 'LAYERS' in str(e)
  else:
    raise AssertionError('a module in no layer must be reported')
