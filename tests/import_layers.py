"""The import rule of ARCHITECTURE.md as a plain function: every import of every project module
(module level and inside functions, read with `ast`), mapped to its layer; an import of a package
in a higher layer is a violation, and so is any import cycle across files.

Used by tests/test_architecture.py on the repository and on a planted synthetic tree.
"""
import ast
import os
from typing import Dict, Iterable, List, Sequence, Set, Tuple

# Bottom up: a module may import its own layer and the layers below, never a layer above.
LAYERS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('foundation', ('core', 'models')),
    ('metadata', ('metadata',)),
    ('components', ('components', 'serving', 'traffic')),
    ('registry', ('registry',)),
    ('pipelines', ('pipeline',)),
    ('interfaces', ('loopline', 'notebooks')),
)


def module_files(root: str, packages: Iterable[str]) -> Dict[str, str]:
  """{dotted module name: file} of every .py under the packages."""
  found = {}
  for package in packages:
    for directory, _, files in os.walk(os.path.join(root, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(directory, name)
          module = os.path.relpath(path, root)[:-3].replace(os.sep, '.')
          found[module[:-len('.__init__')] if module.endswith('.__init__') else module] = path
  return found


def _imported_names(module: str, path: str) -> Set[str]:
  tree = ast.parse(open(path).read(), path)
  package = module if path.endswith('__init__.py') else module.rpartition('.')[0]
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split('.')[:len(package.split('.')) - (node.level - 1)]
        source = '.'.join(base + ([node.module] if node.module else []))
      else:
        source = node.module
      names.update(f'{source}.{alias.name}' for alias in node.names)
  return names


def import_graph(root: str, packages: Iterable[str]) -> Dict[str, Set[str]]:
  """{module: project modules it imports}. `from p import m` counts as importing p.m when that
  is a module, else p; imports of a module's own parent packages are not edges."""
  modules = module_files(root, packages)
  graph = {}
  for module, path in modules.items():
    targets = set()
    for name in _imported_names(module, path):
      while name and name not in modules:
        name = name.rpartition('.')[0]
      if name and name != module and not module.startswith(name + '.'):
        targets.add(name)
    graph[module] = targets
  return graph


def layer_of(module: str, layers=LAYERS) -> int:
  top = module.split('.')[0]
  for index, (_, packages) in enumerate(layers):
    if top in packages:
      return index
  raise ValueError(f'module {module!r} is in no layer: add its package to LAYERS')


def upward_imports(graph: Dict[str, Set[str]], layers=LAYERS) -> List[str]:
  """'a.b (layer x) imports c.d (layer y, above)' for every import of a higher layer."""
  found = []
  for module, targets in sorted(graph.items()):
    for target in sorted(targets):
      if layer_of(target, layers) > layer_of(module, layers):
        found.append(f'{module} ({layers[layer_of(module, layers)][0]}) imports {target} '
                     f'({layers[layer_of(target, layers)][0]}, a higher layer)')
  return found


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
  """Every set of modules that import each other in a circle (Tarjan's strongly connected
  components of more than one module, or a module importing itself)."""
  index, low, on_stack, stack, cycles = {}, {}, set(), [], []

  def visit(module):
    index[module] = low[module] = len(index)
    stack.append(module)
    on_stack.add(module)
    for target in graph.get(module, ()):
      if target not in index:
        visit(target)
        low[module] = min(low[module], low[target])
      elif target in on_stack:
        low[module] = min(low[module], index[target])
    if low[module] == index[module]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == module:
          break
      if len(component) > 1 or module in graph.get(module, ()):
        cycles.append(sorted(component))

  for module in sorted(graph):
    if module not in index:
      visit(module)
  return cycles


def check(root: str, layers: Sequence = LAYERS) -> List[str]:
  """Every violation of the layering under `root`: upward imports, then cycles."""
  graph = import_graph(root, [p for _, packages in layers for p in packages])
  return upward_imports(graph, layers) + [
      'import cycle: ' + ' <-> '.join(cycle) for cycle in import_cycles(graph)]
