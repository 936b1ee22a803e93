"""The examples in README.md and the user guides under docs/ run.

Every ```python block of a page runs, in order, in one fresh process per
page (the blocks of a page share their names, as a reader pasting them into
one session would), in a temporary working directory; the examples use the
zoo's small CPU-scale presets and tiny trunks, so the whole file takes about
a minute of CPU. A block that cannot run
here (it needs prepared ImageNet, a live TF Serving, a run folder) says so in
its fence's info string: ```python no-run: <why>; the reason is required,
and the block must still parse and name only package modules, functions and
attributes that exist (checked on the installed package without running it).
A block for another Keras backend says which (```python backend=jax): a
page's blocks of one backend run together in a process of their own with
``KERAS_BACKEND`` set, as a reader would run them (the backend's package is
part of the test extra, so a missing one fails).

Every `python -m mtssl_tf.X ...` or `python -m tools.X ...` command in the
other fences (```bash, ```shell, plain ```) has its flags parsed by the real
entry point, which then stops before doing any work: a renamed or removed
flag, a flagfile that is not there, or a value of the wrong type fails here.
`make X` lines must name a Makefile target. Research records
(docs/records/) are not checked: they describe past runs. A failing example,
a misspelt flag and a missing flagfile are fed through the same checks to
show that they are caught.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap

import pytest

import forked_children  # wait_or_kill for the forked children

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.S | re.M)


# The top of RESULTS.md, which `make study` writes: its commands are
# templates (`study_<row>.cfg`), not commands to run.
NOT_USER_PAGES = ("study_preamble.md",)


def user_pages():
  pages = [os.path.join(REPO, "README.md")]
  pages += sorted(p for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
                  if os.path.basename(p) not in NOT_USER_PAGES)
  return pages


def fences(path):
  """(language, info string, body) of each fenced block of a page."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  for m in FENCE.finditer(text):
    info = m.group(1).strip()
    language = info.split()[0] if info else ""
    yield language, info, m.group(2)


def rel(path):
  return os.path.relpath(path, REPO)


# ---------------------------------------------------------------- python


DEFAULT_BACKEND = "tensorflow"


def block_backend(rest):
  """The Keras backend a fence's info string names (``backend=jax``)."""
  m = re.match(r"backend=(\w+)$", rest)
  return m.group(1) if m else DEFAULT_BACKEND


def python_blocks(path, backend=DEFAULT_BACKEND):
  """The page's runnable ```python blocks for ``backend``, and the reasons
  of its ``no-run`` blocks."""
  blocks, skipped = [], []
  for language, info, body in fences(path):
    if language != "python":
      continue
    rest = info[len("python"):].strip()
    if rest.startswith("no-run"):
      skipped.append(rest)
    elif block_backend(rest) == backend:
      blocks.append(body)
  return blocks, skipped


def page_backends(path):
  """The Keras backends other than the default that a page's blocks name."""
  return sorted({block_backend(info[len("python"):].strip())
                 for language, info, _ in fences(path)
                 if language == "python"} - {DEFAULT_BACKEND})


PAGES_WITH_PYTHON = [p for p in user_pages()
                     if any(python_blocks(p)) or page_backends(p)]


# Runs each page's blocks in a child forked from one interpreter that has
# already imported TensorFlow and Keras (one import instead of one per page;
# nothing has run yet, so the child starts TensorFlow's runtime itself). The
# child is a fresh process for the page: its own working directory, names and
# registered tasks.
_PYTHON_DRIVER = forked_children.WAIT_OR_KILL + textwrap.dedent(r"""
    import json, os, sys, tempfile, traceback
    import importlib
    for module in os.environ["DOCS_PRELOAD"].split(","):   # once, before fork
      importlib.import_module(module)
    results = []
    for page, blocks, workdir in json.load(sys.stdin):
      out = tempfile.TemporaryFile()
      pid = os.fork()
      if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(out.fileno(), 2)
        os.chdir(workdir)
        namespace = {"__name__": "__main__"}
        try:
          for i, body in enumerate(blocks):
            print(f"--- block {i + 1} of {len(blocks)}", flush=True)
            exec(compile(body, f"{page}, python block {i + 1}", "exec"),
                 namespace)
        except BaseException:
          traceback.print_exc()
          sys.stdout.flush(); sys.stderr.flush()
          os._exit(1)
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(0)
      status = wait_or_kill(pid, 300)
      out.seek(0)
      text = out.read().decode("utf-8", "replace")
      results.append({"ok": os.waitstatus_to_exitcode(status) == 0,
                      "output": text[-6000:]})
    json.dump(results, sys.stdout)
""")


def _env():
  env = dict(os.environ)
  # tests/ holds the task module of docs/adding_a_task.md's command.
  env["PYTHONPATH"] = os.pathsep.join(
      [REPO, os.path.join(REPO, "tests")]
      + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  env["MPLBACKEND"] = "Agg"
  return env


def _run_pages(jobs, backend):
  """Runs (page, blocks, workdir) jobs under a Keras backend; the results
  by page."""
  env = dict(_env(), KERAS_BACKEND=backend,
             DOCS_PRELOAD=("tensorflow,keras" if backend == "tensorflow"
                           else "keras"))
  proc = subprocess.run([sys.executable, "-c", _PYTHON_DRIVER], cwd=REPO,
                        env=env, input=json.dumps(jobs),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return dict(zip([j[0] for j in jobs], json.loads(proc.stdout)))


@pytest.fixture(scope="module")
def ran_examples(tmp_path_factory):
  """Results by (page, backend)."""
  results = {}
  backends = sorted({DEFAULT_BACKEND}.union(
      *[page_backends(p) for p in PAGES_WITH_PYTHON]))
  for backend in backends:
    jobs = []
    for page in PAGES_WITH_PYTHON:
      blocks, _ = python_blocks(page, backend)
      if blocks:
        workdir = tmp_path_factory.mktemp(
            f"{os.path.basename(page)[:-3]}_{backend}")
        jobs.append((rel(page), blocks, str(workdir)))
    # The check itself: an example that fails must be reported as failed.
    jobs.append((SELF_CHECK,
                 ["import mtssl_tf\nmtssl_tf.Trunk.from_presett"],
                 str(tmp_path_factory.mktemp(f"self_check_{backend}"))))
    for page, result in _run_pages(jobs, backend).items():
      results[page, backend] = result
  return results


SELF_CHECK = "<a renamed function>"


def test_a_failing_example_is_caught(ran_examples):
  checks = [r for (page, _), r in ran_examples.items() if page == SELF_CHECK]
  assert len(checks) == 1 + len(set().union(
      *[page_backends(p) for p in PAGES_WITH_PYTHON]))
  for result in checks:
    assert not result["ok"] and "from_presett" in result["output"]


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=rel)
def test_python_examples_run(page, ran_examples):
  blocks, skipped = python_blocks(page)
  for reason in skipped:
    assert re.match(r"no-run:\s*\S", reason), (
        f"{rel(page)}: a ```python no-run block must say why "
        f"(```python no-run: <reason>), got {reason!r}")
  backends = ([DEFAULT_BACKEND] if blocks else []) + page_backends(page)
  for backend in backends:
    result = ran_examples[rel(page), backend]
    assert result["ok"], (
        f"{rel(page)}: its python examples for the {backend} backend failed "
        f"(blocks run in order, in one namespace; the last '--- block' line "
        f"says which):\n{result['output']}")


def no_run_blocks(path):
  """The page's ```python no-run blocks: ``[(first line number, body)]``."""
  with open(path) as f:
    text = f.read()
  out = []
  for language, info, body in fences(path):
    if language == "python" and info[len("python"):].strip().startswith(
        "no-run"):
      out.append((text[:text.index(body)].count("\n") + 1, body))
  return out


def package_names_missing(source):
  """The ``mtssl_tf`` names that ``source`` imports or reads and that do
  not exist: each ``import mtssl_tf...`` / ``from mtssl_tf... import x``,
  and every attribute chain read from a name so bound (``mtssl_tf.Trunk.
  from_preset``, ``pipeline.training_datasets``), resolved on the installed
  package without running the block."""
  import ast  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  tree = ast.parse(source)
  bound, missing = {}, []

  def module(name):
    try:
      return importlib.import_module(name)
    except ImportError as e:
      missing.append(f"import {name}: {e}")
      return None

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] == "mtssl_tf" and module(alias.name):
          top = alias.asname or alias.name.split(".")[0]
          bound[top] = module(alias.name if alias.asname else "mtssl_tf")
    elif (isinstance(node, ast.ImportFrom) and node.module and
          node.module.split(".")[0] == "mtssl_tf"):
      parent = module(node.module)
      for alias in node.names:
        if parent is None:
          continue
        if hasattr(parent, alias.name):
          bound[alias.asname or alias.name] = getattr(parent, alias.name)
        else:
          sub = module(f"{node.module}.{alias.name}")
          if sub is not None:
            bound[alias.asname or alias.name] = sub
  for node in ast.walk(tree):
    # The outermost attribute read of each chain: a.b.c, not a.b again.
    if not isinstance(node, ast.Attribute):
      continue
    chain, base = [], node
    while isinstance(base, ast.Attribute):
      chain.append(base.attr)
      base = base.value
    if not isinstance(base, ast.Name) or base.id not in bound:
      continue
    obj, path = bound[base.id], base.id
    for attr in reversed(chain):
      if not hasattr(obj, attr):
        missing.append(f"{path}.{attr}")
        break
      obj, path = getattr(obj, attr), f"{path}.{attr}"
  return sorted(set(missing))


NO_RUN_PAGES = [p for p in user_pages() if no_run_blocks(p)]


@pytest.mark.parametrize("page", NO_RUN_PAGES, ids=rel)
def test_no_run_examples_name_what_exists(page):
  """A block that cannot run here (its data or service is missing) still
  parses, and every package name it imports or reads exists: a renamed
  function or module fails here as it would for a reader."""
  for line, body in no_run_blocks(page):
    try:
      missing = package_names_missing(body)
    except SyntaxError as e:
      pytest.fail(f"{rel(page)}:{line}: the no-run block does not parse: {e}")
    assert not missing, (f"{rel(page)}:{line}: the no-run block names what "
                         f"the package does not have: {missing}")


def test_a_renamed_name_in_a_no_run_block_is_caught():
  good = ("import mtssl_tf\nfrom mtssl_tf.data import pipeline\n"
          "t = mtssl_tf.Trunk.from_preset('rp')\n"
          "pipeline.training_datasets\n")
  assert package_names_missing(good) == []
  bad = good.replace("from_preset", "from_presett").replace(
      "training_datasets", "training_dataset")
  assert package_names_missing(bad) == [
      "mtssl_tf.Trunk.from_presett", "pipeline.training_dataset"]
  assert package_names_missing("from mtssl_tf.nope import x\n")[0].startswith(
      "import mtssl_tf.nope")


# ---------------------------------------------------------------- commands


def commands(path):
  """The `python -m mtssl_tf.X`, `python -m tools.X` (maintainer tooling,
  run from the repository root) and `make X` lines of a page's non-python
  fences, continuation lines joined, as token lists."""
  found = []
  for language, _, body in fences(path):
    if language == "python":
      continue
    text = re.sub(r"\\\n\s*", " ", body)
    for line in text.splitlines():
      line = line.strip()
      if line.startswith("$ "):
        line = line[2:]
      for part in re.split(r"\s*&&\s*", line):
        if part.startswith(("python -m mtssl_tf", "python -m tools.",
                            "make ")):
          # "[--flag=value]" is usage notation for an optional flag: the
          # flag inside is checked; "..." stands for more arguments.
          tokens = [re.sub(r"^\[(--[^\]]+)\]$", r"\1", t)
                    for t in shlex.split(part, comments=True) if t != "..."]
          found.append(tokens)
  return found


ALL_COMMANDS = [(rel(p), tuple(c)) for p in user_pages() for c in commands(p)]
MTSSL_COMMANDS = sorted({c for _, c in ALL_COMMANDS if c[0] == "python"})
MAKE_COMMANDS = sorted({c for _, c in ALL_COMMANDS if c[0] == "make"})


# Runs each command's entry point in a child forked from one interpreter
# that has already imported TensorFlow (one import instead of one per
# command). In the child, the entry point's first full parse of absl flags
# or of an argparse parser prints a marker and exits: nothing after it runs.
_DRIVER = forked_children.WAIT_OR_KILL + textwrap.dedent(r"""
    import argparse, io, json, os, runpy, sys, tempfile
    import tensorflow, keras                      # imported once, before fork
    from absl import flags
    MARK = "DOCS-FLAGS-PARSED"
    results = []
    for module, argv in json.load(sys.stdin):
      out = tempfile.TemporaryFile()
      pid = os.fork()
      if pid == 0:
        os.dup2(out.fileno(), 1); os.dup2(out.fileno(), 2)
        orig_call = flags.FlagValues.__call__
        def call(self, argv, known_only=False):
          result = orig_call(self, argv, known_only)
          # The entry point's parse, not the library's on a private
          # FlagValues (mtssl_tf.options: the zoo's presets at import).
          caller = sys._getframe(1).f_globals.get("__name__")
          if not known_only and caller != "mtssl_tf.options":
            print(MARK, flush=True); os._exit(0)
          return result
        flags.FlagValues.__call__ = call
        orig_parse = argparse.ArgumentParser.parse_args
        def parse_args(self, *a, **k):
          orig_parse(self, *a, **k)
          print(MARK, flush=True); os._exit(0)
        argparse.ArgumentParser.parse_args = parse_args
        sys.argv = [module] + argv
        try:
          runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as e:
          os._exit(e.code if isinstance(e.code, int) and e.code else 5)
        except BaseException:
          import traceback; traceback.print_exc(); os._exit(4)
        print("the entry point ended without parsing its flags", flush=True)
        os._exit(6)
      status = wait_or_kill(pid, 300)
      out.seek(0)
      text = out.read().decode("utf-8", "replace")
      ok = os.waitstatus_to_exitcode(status) == 0 and MARK in text
      results.append({"ok": ok, "output": text[-4000:]})
    json.dump(results, sys.stdout)
""")


@pytest.fixture(scope="module")
def parsed_commands():
  # The check itself: a renamed flag and a missing flagfile must fail.
  jobs = [(c[2], list(c[3:])) for c in MTSSL_COMMANDS + BAD_COMMANDS]
  proc = subprocess.run([sys.executable, "-c", _DRIVER], cwd=REPO, env=_env(),
                        input=json.dumps(jobs), capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-5000:]
  return dict(zip(MTSSL_COMMANDS + BAD_COMMANDS, json.loads(proc.stdout)))


BAD_COMMANDS = [
    ("python", "-m", "mtssl_tf.train", "--flagfile=configs/demo.cfg",
     "--stepz=10"),
    ("python", "-m", "mtssl_tf.train", "--flagfile=configs/no_such.cfg"),
    ("python", "-m", "mtssl_tf.evaluate", "--checkpoint=runs/demo",
     "--protocl=paper"),
    ("python", "-m", "mtssl_tf.model_zoo", "export", "rp", "--outptu=x"),
]


@pytest.mark.parametrize("command", BAD_COMMANDS, ids=" ".join)
def test_a_wrong_command_is_caught(command, parsed_commands):
  assert not parsed_commands[command]["ok"], parsed_commands[command]


def test_pages_document_commands():
  assert MTSSL_COMMANDS, "no `python -m mtssl_tf...` command found in the docs"


@pytest.mark.parametrize("command", MTSSL_COMMANDS, ids=" ".join)
def test_documented_command_parses(command, parsed_commands):
  result = parsed_commands[command]
  pages = sorted({p for p, c in ALL_COMMANDS if c == command})
  assert result["ok"], (
      f"`{' '.join(command)}` (in {', '.join(pages)}) does not parse:\n"
      f"{result['output']}")


def makefile_targets():
  with open(os.path.join(REPO, "Makefile"), encoding="utf-8") as f:
    return set(re.findall(r"^([A-Za-z][\w-]*):", f.read(), re.M))


@pytest.mark.parametrize("command", MAKE_COMMANDS, ids=" ".join)
def test_documented_make_target_exists(command):
  targets = [t for t in command[1:] if "=" not in t]
  missing = [t for t in targets if t not in makefile_targets()]
  assert not missing, f"`{' '.join(command)}`: no Makefile target {missing}"


def test_python_block_extraction_honours_no_run(tmp_path):
  page = tmp_path / "page.md"
  page.write_text("```python\nx = 1\n```\n\n"
                  "```python no-run: needs /data\nraise SystemExit(1)\n```\n"
                  "```bash\npython -m mtssl_tf.train --steps=1 \\\n"
                  "    --run_dir=/tmp/x   # a comment\n```\n")
  blocks, skipped = python_blocks(str(page))
  assert blocks == ["x = 1\n"] and skipped == ["no-run: needs /data"]
  assert page_backends(str(page)) == []
  assert commands(str(page)) == [
      ["python", "-m", "mtssl_tf.train", "--steps=1", "--run_dir=/tmp/x"]]
  page.write_text("```python\nx = 1\n```\n```python backend=jax\ny = 2\n```\n")
  assert python_blocks(str(page)) == (["x = 1\n"], [])
  assert python_blocks(str(page), "jax") == (["y = 2\n"], [])
  assert page_backends(str(page)) == ["jax"]
