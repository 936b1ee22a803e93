"""The test suite's own machinery: the order in which `make test` hands out
files (tests/conftest.py) and the fork server that runs the package's
commands as fresh processes (tests/fork_server.py)."""
import os
import re
import signal
import sys

import pytest

import conftest
import fork_server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_longest_files_are_test_files_and_make_test_keeps_their_order():
  names = conftest.LONGEST_FILES
  assert len(set(names)) == len(names)
  missing = [n for n in names
             if not os.path.isfile(os.path.join(REPO, "tests", n))]
  assert not missing, f"LONGEST_FILES names no such file: {missing}"
  with open(os.path.join(REPO, "Makefile")) as f:
    command = re.search(r"^test:.*?\n\t\$\(PY\) -m pytest ([^\n]*)", f.read(),
                        re.S | re.M).group(1).split()
  # Whole files, in collection order (not reordered by their test counts).
  assert "--dist" in command and command[command.index("--dist") + 1] == (
      "loadfile")
  assert "--no-loadscope-reorder" in command


def test_a_command_runs_as_its_own_process_with_its_folder_and_environment(
    tmp_path):
  (tmp_path / "helper_mod.py").write_text("VALUE = 7\n")
  (tmp_path / "script.py").write_text(
      "import os, sys\n"
      "import helper_mod\n"   # from the script's folder, as python SCRIPT
      "print(os.getcwd(), os.environ['SUITE_CHECK'], sys.argv[1:],"
      " helper_mod.VALUE, os.getpid() != int(sys.argv[1]))\n"
      "print('to stderr', file=sys.stderr)\n"
      "sys.exit(3)\n")
  work = tmp_path / "work"
  work.mkdir()
  done = fork_server.run([sys.executable, str(tmp_path / "script.py"),
                          str(os.getpid()), "x"], cwd=str(work),
                         env=dict(os.environ, SUITE_CHECK="yes"))
  assert done.returncode == 3
  assert done.stdout.split() == [str(work), "yes", "['" + str(os.getpid())
                                 + "',", "'x']", "7", "True"]
  assert done.stderr == "to stderr\n"
  # `-m MODULE` with the working folder on sys.path, and a PYTHONPATH entry.
  (tmp_path / "lib").mkdir()
  (tmp_path / "lib" / "on_path.py").write_text("NAME = 'found'\n")
  (work / "mod.py").write_text("import on_path\nprint(on_path.NAME)\n"
                               "raise SystemExit('a message')\n")
  done = fork_server.run(
      ["-m", "mod"], cwd=str(work), combined=True,
      env=dict(os.environ, PYTHONPATH=str(tmp_path / "lib")))
  assert (done.returncode, done.stdout, done.stderr) == (
      1, "found\na message\n", None)


def test_a_killed_child_reports_the_signal_and_a_slow_one_is_killed(tmp_path):
  marker = tmp_path / "started"
  proc = fork_server.popen(
      ["-c", "import sys, time\nopen(sys.argv[1], 'w').close()\n"
       "time.sleep(600)\n", str(marker)], stdout=str(tmp_path / "out"))
  while not marker.exists():
    assert proc.poll() is None
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL
  slow = fork_server.run(["-c", "import time\ntime.sleep(600)\n"], timeout=1)
  assert slow.returncode == -signal.SIGKILL


def test_an_environment_read_at_import_is_refused(tmp_path):
  with pytest.raises(ValueError, match="KERAS_BACKEND='jax': read when "
                     "TensorFlow and Keras are imported"):
    fork_server.popen(["-c", "pass"], stdout=str(tmp_path / "out"),
                      env=dict(os.environ, KERAS_BACKEND="jax"))
