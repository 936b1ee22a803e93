"""The package's layering, checked mechanically on the source (``ast``).

ops/utils -> layers/models -> tasks -> data/motion -> training -> evaluation
-> serving/zoo/reporting/cli -> entry points. A module may import its own
layer and the layers below it, never one above; no library module imports an
entry point (``python -m mtssl_tf.X``) or absl flags; entry points are thin.

Nothing is imported: every module under mtssl_tf/ is parsed, and every
``import`` statement in it (module level or inside a function: a lazy
import is still a dependency) is resolved to the package's modules.
"""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mtssl_tf"

# The `python -m mtssl_tf.X` modules: argument parsing and one call into the
# library. Listed once here; every rule below reads this set.
ENTRY_POINTS = frozenset({
    "mtssl_tf.colorization_prior",
    "mtssl_tf.convert_slim",
    "mtssl_tf.demo_summary",
    "mtssl_tf.data.mtssl_motion",
    "mtssl_tf.evaluate",
    "mtssl_tf.export",
    "mtssl_tf.fetch_data",
    "mtssl_tf.make_motion_masks",
    "mtssl_tf.model_zoo.__main__",
    "mtssl_tf.train",
})
MAX_ENTRY_POINT_LINES = 100

# Layers, lowest first. A module's layer is that of the longest prefix that
# names it; a module may import modules of its own layer or a lower one.
LAYERS: Tuple[Tuple[str, ...], ...] = (
    # 0: tensor ops, small utilities and resources; no package imports.
    ("mtssl_tf.ops", "mtssl_tf.utils", "mtssl_tf.resources"),
    # 1: Keras layers and the trunk (and converting weights into it).
    ("mtssl_tf.layers", "mtssl_tf.models"),
    # 2: the tasks, and what is composed of them: the multi-task model, the
    # run configuration (it validates task names), the package's facade.
    ("mtssl_tf.tasks", "mtssl_tf.models.multitask", "mtssl_tf.models.build",
     "mtssl_tf.config", "mtssl_tf.options", "mtssl_tf"),
    # 3: data sources, pipelines and the motion-mask labels.
    ("mtssl_tf.data", "mtssl_tf.motion"),
    # 4: the trainer.
    ("mtssl_tf.training",),
    # 5: downstream evaluations.
    ("mtssl_tf.evaluation",),
    # 6: exports, the zoo, reports, command-line helpers.
    ("mtssl_tf.serving", "mtssl_tf.model_zoo", "mtssl_tf.reporting",
     "mtssl_tf.cli"),
)

# Known exceptions, each (importer, imported) with its reason. An entry that
# no longer matches anything fails test_allow_lists_are_current.
UPWARD_ALLOWED = {
    # Convenience classmethods Trunk.from_pretrained and
    # MultiTaskModel.from_pretrained delegate to the zoo (lazy imports).
    ("mtssl_tf.models.trunk", "mtssl_tf.model_zoo"),
    ("mtssl_tf.models.multitask", "mtssl_tf.model_zoo"),
}
ENTRY_POINT_IMPORT_ALLOWED = set()
# Modules that may import absl.flags besides mtssl_tf.cli and entry points.
# The library's parser: absl on a private FlagValues (never FLAGS).
ABSL_FLAGS_ALLOWED = {"mtssl_tf.options"}
# Entry points allowed over MAX_ENTRY_POINT_LINES (none).
LONG_ENTRY_POINTS_ALLOWED = set()


def module_files(root: str = REPO) -> Dict[str, str]:
  """Dotted module name -> file path, for every .py under mtssl_tf/."""
  files = {}
  for dirpath, dirnames, names in os.walk(os.path.join(root, PACKAGE)):
    dirnames[:] = [d for d in dirnames if d != "__pycache__"]
    for name in names:
      if not name.endswith(".py"):
        continue
      path = os.path.join(dirpath, name)
      dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
      if dotted.endswith(".__init__"):
        dotted = dotted[:-len(".__init__")]
      files[dotted] = path
  return files


def imports_of(source: str, module: str, is_package: bool,
               known: Set[str]) -> Set[str]:
  """The package modules that ``source`` imports (any nesting level).

  ``from a.b import c`` counts as ``a.b.c`` when that is a module, else as
  ``a.b``; relative imports are resolved against ``module``.
  """
  found = set()
  package = module if is_package else module.rpartition(".")[0]
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parts + ([base] if base else []))
      for alias in node.names:
        full = f"{base}.{alias.name}"
        found.add(full if full in known else base)
  return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def import_graph(root: str = REPO) -> Dict[str, Set[str]]:
  files = module_files(root)
  known = set(files)
  graph = {}
  for module, path in files.items():
    with open(path, encoding="utf-8") as f:
      graph[module] = imports_of(f.read(), module,
                                 path.endswith("__init__.py"), known)
  return graph


def absl_flags_users(root: str = REPO) -> Set[str]:
  """Modules with ``from absl import flags``, ``import absl.flags`` or
  ``from absl.flags import ...``."""
  users = set()
  for module, path in module_files(root).items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.Import) and any(
          a.name == "absl.flags" or a.name.startswith("absl.flags.")
          for a in node.names):
        users.add(module)
      elif isinstance(node, ast.ImportFrom) and (
          (node.module == "absl" and any(a.name == "flags"
                                         for a in node.names))
          or (node.module or "").startswith("absl.flags")):
        users.add(module)
  return users


def shared_file_names(root: str = REPO) -> Dict[str, List[str]]:
  """File name -> the modules that share it, for names used more than once
  (``__init__.py`` and ``__main__.py`` aside)."""
  by_name: Dict[str, List[str]] = {}
  for module, path in module_files(root).items():
    name = os.path.basename(path)
    if name not in ("__init__.py", "__main__.py"):
      by_name.setdefault(name, []).append(module)
  return {name: sorted(modules) for name, modules in by_name.items()
          if len(modules) > 1}


def layer_of(module: str) -> Optional[int]:
  """The layer index of ``module`` (longest matching prefix), or None."""
  best, best_len = None, -1
  for index, prefixes in enumerate(LAYERS):
    for prefix in prefixes:
      # The package itself names only its __init__, not every root module.
      inside = prefix != PACKAGE and module.startswith(prefix + ".")
      if (module == prefix or inside) and len(prefix) > best_len:
        best, best_len = index, len(prefix)
  return best


def _matches(module: str, name: str) -> bool:
  return module == name or module.startswith(name + ".")


def _allowed(pair, allowed) -> bool:
  return any(_matches(pair[0], a) and _matches(pair[1], b)
             for a, b in allowed)


def entry_point_imports(graph) -> List[Tuple[str, str]]:
  return sorted((m, dep) for m, deps in graph.items() for dep in deps
                if dep in ENTRY_POINTS and dep != m)


def upward_imports(graph) -> List[Tuple[str, str]]:
  bad = []
  for module, deps in graph.items():
    if module in ENTRY_POINTS:
      continue
    own = layer_of(module)
    for dep in deps:
      if dep in ENTRY_POINTS:
        continue   # test_no_module_imports_an_entry_point's business
      if layer_of(dep) is not None and own is not None and \
          layer_of(dep) > own:
        bad.append((module, dep))
  return sorted(bad)


@pytest.fixture(scope="module")
def graph():
  return import_graph()


def test_every_module_has_a_layer(graph):
  unplaced = sorted(m for m in graph
                    if m not in ENTRY_POINTS and layer_of(m) is None)
  assert not unplaced, (
      f"modules in no layer: {unplaced}; add them (or their package) to "
      "LAYERS in tests/test_layering.py, where they belong")


def test_entry_points_exist(graph):
  missing = sorted(ENTRY_POINTS - set(graph))
  assert not missing, f"ENTRY_POINTS names missing modules: {missing}"


def test_no_module_imports_an_entry_point(graph):
  bad = [p for p in entry_point_imports(graph)
         if not _allowed(p, ENTRY_POINT_IMPORT_ALLOWED)]
  assert not bad, (
      "these modules import an entry point (move what they need into the "
      "library): " + "; ".join(f"{a} imports {b}" for a, b in bad))


def test_the_package_imports_nothing_from_tools():
  # tools/ (zoo builder, study, report) sits beside the package and is not
  # installed: an import of it would fail in a wheel.
  bad = []
  for module, path in module_files().items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""] if isinstance(node, ast.ImportFrom)
               and not node.level else [])
      bad += [(module, n) for n in names
              if n == "tools" or n.startswith("tools.")]
  assert not bad, f"installed modules importing tools/: {bad}"


def test_absl_flags_only_in_cli_and_entry_points():
  bad = sorted(m for m in absl_flags_users()
               if m not in ENTRY_POINTS and m not in ABSL_FLAGS_ALLOWED
               and not _matches(m, "mtssl_tf.cli"))
  assert not bad, (
      f"library modules importing absl.flags: {bad}; flags belong to "
      "mtssl_tf/cli and the entry points")


def test_entry_points_are_thin():
  files = module_files()
  too_long = {}
  for module in sorted(ENTRY_POINTS - LONG_ENTRY_POINTS_ALLOWED):
    with open(files[module], encoding="utf-8") as f:
      lines = len(f.read().splitlines())
    if lines >= MAX_ENTRY_POINT_LINES:
      too_long[module] = lines
  assert not too_long, (
      f"entry points of {MAX_ENTRY_POINT_LINES} lines or more (argument "
      f"parsing and one call into the library only): {too_long}")


def test_no_upward_imports(graph):
  bad = [p for p in upward_imports(graph)
         if not _allowed(p, UPWARD_ALLOWED)]
  assert not bad, (
      "imports against the layering (ops -> layers/models -> tasks -> data "
      "-> training -> evaluation -> serving/zoo/reporting -> entry points): "
      + "; ".join(f"{a} (layer {layer_of(a)}) imports {b} (layer "
                  f"{layer_of(b)})" for a, b in bad))


def test_module_file_names_are_unique():
  # A file name says the module's job; two modules of one name (a
  # traceback's "checkpoints.py", an editor tab's "base.py") leave the
  # reader to guess which package is meant.
  shared = shared_file_names()
  assert not shared, (
      "module file names used more than once under mtssl_tf/ (name each "
      f"after its job): {shared}")


def test_allow_lists_are_current(graph):
  """An exception that matches nothing any more must be deleted."""
  upward = upward_imports(graph)
  stale = [p for p in UPWARD_ALLOWED
           if not any(_allowed(q, {p}) for q in upward)]
  entry = entry_point_imports(graph)
  stale += [p for p in ENTRY_POINT_IMPORT_ALLOWED
            if not any(_allowed(q, {p}) for q in entry)]
  stale += sorted(ABSL_FLAGS_ALLOWED - absl_flags_users())
  assert not stale, (
      f"allow-list entries that no longer apply (delete them from "
      f"tests/test_layering.py): {stale}")


def test_the_checks_see_violations(tmp_path):
  """The checker on a tiny fake package: each kind of violation is found."""
  pkg = tmp_path / PACKAGE
  for folder in ("ops", "tasks", "data"):
    (pkg / folder).mkdir(parents=True)
    (pkg / folder / "__init__.py").write_text("")
  (pkg / "__init__.py").write_text("")
  (pkg / "train.py").write_text("import mtssl_tf.data.reader\n")
  # ops (layer 0) importing a task (layer 2) lazily, by a relative import.
  (pkg / "ops" / "bad.py").write_text(
      "def f():\n  from ..tasks import thing\n")
  (pkg / "tasks" / "thing.py").write_text("")
  (pkg / "data" / "thing.py").write_text("")
  # data importing the train entry point, and absl flags.
  (pkg / "data" / "reader.py").write_text(
      "from mtssl_tf import train\nfrom absl import flags\n")
  graph = import_graph(str(tmp_path))
  assert graph["mtssl_tf.ops.bad"] == {"mtssl_tf.tasks.thing"}
  assert graph["mtssl_tf.train"] == {"mtssl_tf.data.reader"}
  assert upward_imports(graph) == [("mtssl_tf.ops.bad",
                                    "mtssl_tf.tasks.thing")]
  assert entry_point_imports(graph) == [("mtssl_tf.data.reader",
                                         "mtssl_tf.train")]
  assert absl_flags_users(str(tmp_path)) == {"mtssl_tf.data.reader"}
  assert shared_file_names(str(tmp_path)) == {
      "thing.py": ["mtssl_tf.data.thing", "mtssl_tf.tasks.thing"]}
  assert layer_of("mtssl_tf.models.multitask") == 2
  assert layer_of("mtssl_tf.models.trunk") == 1
  assert layer_of("mtssl_tf") == 2 and layer_of("mtssl_tf.new_module") is None
