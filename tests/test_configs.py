"""The flagfiles in configs/: each option set once along an include chain,
and at most two files deep (a recipe and the base it includes).

Plain text parsing (one ``--name=value`` a line, ``#`` comments), so that a
recipe reads top to bottom: an option that a file sets again after its
include overrides silently (absl: later flags win), and a reader of the
base file is misled about what the recipe runs.
"""
import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "*.cfg")))
MAX_DEPTH = 2  # files in the longest include chain, the recipe counted
# Options that repeat with one entry a line: keyed by the part before the
# value (``--task_batch_size=relative_position=64`` ->
# ``task_batch_size=relative_position``).
KEYED = ("task_batch_size", "eval_param")


def _key(line):
  """The option a ``--name=value`` / ``--flag`` / ``--noflag`` line sets."""
  body = line[2:]
  name, equals, value = body.partition("=")
  if name in KEYED:
    return f"{name}={value.rsplit('=', 1)[0]}"
  if not equals and name.startswith("no"):
    return name[2:]  # --noflag sets flag
  return name


def _resolve(path, including):
  """A nested ``--flagfile=`` path: next to the including file or in a
  folder above it, then from the repository root (as the CLI does)."""
  if os.path.isabs(path):
    return path
  folder = os.path.dirname(os.path.abspath(including))
  while True:
    candidate = os.path.join(folder, path)
    if os.path.isfile(candidate):
      return candidate
    parent = os.path.dirname(folder)
    if parent == folder:
      break
    folder = parent
  return os.path.join(REPO, path)


def parse(path, depth=1, chain=()):
  """``(options, depth)``: each option the file sets, with the file that
  set it, its includes' first; and the files in its longest include chain.

  Raises:
    ValueError: an option set twice (by the file itself or by it and one
      of its includes), an include cycle or a missing include.
  """
  path = os.path.abspath(path)
  if path in chain:
    raise ValueError(f"include cycle: {' -> '.join(chain + (path,))}")
  options, deepest = {}, depth
  with open(path) as f:
    for number, raw in enumerate(f, 1):
      line = raw.strip()
      if not line or line.startswith("#"):
        continue
      if not line.startswith("--"):
        raise ValueError(f"{path}:{number}: not a --name=value line: {line}")
      if line.startswith("--flagfile="):
        nested = _resolve(line.split("=", 1)[1], path)
        if not os.path.isfile(nested):
          raise ValueError(f"{path}:{number}: no such flagfile {nested}")
        found, nested_depth = parse(nested, depth + 1, chain + (path,))
        deepest = max(deepest, nested_depth)
        items = found.items()
      else:
        items = [(_key(line), f"{os.path.basename(path)}:{number}")]
      for key, where in items:
        if key in options:
          raise ValueError(f"{path}: --{key} set twice: {options[key]} and "
                           f"{where}")
        options[key] = where
  return options, deepest


@pytest.mark.parametrize("path", CONFIGS,
                         ids=[os.path.basename(p) for p in CONFIGS])
def test_config_sets_each_option_once_and_is_shallow(path):
  _, depth = parse(path)
  assert depth <= MAX_DEPTH, (
      f"{os.path.basename(path)}: includes {depth} files deep (at most "
      f"{MAX_DEPTH}: a recipe and the base it includes)")


def test_the_recipe_names():
  names = {os.path.basename(p) for p in CONFIGS}
  # One recipe is "demo": the one `make demo` trains.
  assert [n for n in names if n.startswith("demo")] == ["demo.cfg"]
  makefile = open(os.path.join(REPO, "Makefile")).read()
  assert "--flagfile=configs/demo.cfg" in makefile


def test_the_checker_finds_overrides_and_deep_chains(tmp_path):
  (tmp_path / "base.cfg").write_text(
      "# base\n--depth=26\n--relative_position.gap=8\n"
      "--lasso\n")
  (tmp_path / "ok.cfg").write_text(
      "--flagfile=base.cfg\n--relative_position.jitter=3\n"
      "--task_batch_size=relative_position=64\n")
  options, depth = parse(tmp_path / "ok.cfg")
  assert depth == 2 and set(options) == {
      "depth", "relative_position.gap", "lasso",
      "relative_position.jitter",
      "task_batch_size=relative_position"}
  for line, key in (("--depth=50", "depth"),
                    ("--relative_position.gap=0",
                     "relative_position.gap"),
                    ("--nolasso", "lasso")):
    (tmp_path / "bad.cfg").write_text(f"--flagfile=base.cfg\n{line}\n")
    with pytest.raises(ValueError, match=f"--{key} set twice: base.cfg:"):
      parse(tmp_path / "bad.cfg")
  (tmp_path / "twice.cfg").write_text("--steps=1\n--steps=2\n")
  with pytest.raises(ValueError, match="--steps set twice: twice.cfg:1 and "
                     "twice.cfg:2"):
    parse(tmp_path / "twice.cfg")
  (tmp_path / "deep.cfg").write_text("--flagfile=ok.cfg\n")
  assert parse(tmp_path / "deep.cfg")[1] == 3
  (tmp_path / "loop.cfg").write_text("--flagfile=loop.cfg\n")
  with pytest.raises(ValueError, match="include cycle"):
    parse(tmp_path / "loop.cfg")
  # Nested paths from the repository root resolve too (configs/X.cfg).
  (tmp_path / "root.cfg").write_text("--flagfile=configs/paper_common.cfg\n")
  assert parse(tmp_path / "root.cfg")[1] == 2
