"""Commands of the package (``python -m mtssl_tf.X ...``, a script, ``python
-c CODE``) run as fresh processes forked from one interpreter that has
imported TensorFlow and Keras, instead of new interpreters that import them
again (about 7 s of CPU each on the 2-core CI machine).

Each test process starts one server on first use: ``python -c _SERVER``,
which imports TensorFlow and Keras and nothing else (no TensorFlow runtime
starts before a fork, and the package itself is imported by each child, as
``python -m`` would). A child gets the working folder, environment, command
line and ``sys.path[0]`` that the command would have, its stdin from
/dev/null and its stdout and stderr in files; it exits with the status the
command would exit with. :func:`popen` is a small ``subprocess.Popen`` (pid,
``poll``, ``wait``, ``kill``, ``send_signal``), :func:`run` a small
``subprocess.run`` (``CompletedProcess`` with text output).

A command that needs another Keras backend, or an environment variable
that TensorFlow or Keras read when imported, cannot share the server's
imports; :func:`popen` refuses it (use ``subprocess``).
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List, Optional, Sequence

import forked_children  # wait_or_kill, run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Read by TensorFlow or Keras at import: the server's values hold for every
# child, so a command may not ask for others.
IMPORT_TIME_ENV = ("KERAS_BACKEND", "TF_ENABLE_ONEDNN_OPTS",
                   "TF_CPP_MAX_VLOG_LEVEL")

_SERVER = (forked_children.WAIT_OR_KILL + forked_children.RUN_COMMAND
           + textwrap.dedent(r"""
    import json
    import tensorflow, keras                    # imported once, before forks

    def child(request):
      os.chdir(request["cwd"])
      os.environ.clear()
      os.environ.update(request["env"])
      null = os.open(os.devnull, os.O_RDONLY)
      os.dup2(null, 0)
      for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        out = os.open(path, os.O_WRONLY | os.O_APPEND)
        os.dup2(out, fd)
      os._exit(run_command(request["args"]))

    def reply(value):
      sys.stdout.write(json.dumps(value) + "\n"); sys.stdout.flush()

    for line in sys.stdin:
      request = json.loads(line)
      op = request["op"]
      if op == "start":
        pid = os.fork()
        if pid == 0:
          child(request)
        reply({"pid": pid})
      elif op == "poll":
        done, status = os.waitpid(request["pid"], os.WNOHANG)
        reply({"rc": os.waitstatus_to_exitcode(status) if done else None})
      elif op == "wait":
        status = wait_or_kill(request["pid"], request["timeout"])
        reply({"rc": os.waitstatus_to_exitcode(status)})
"""))

_server: Optional[subprocess.Popen] = None


def stop() -> None:
  """Stops the server, if one was started (conftest.py: at the end of the
  session, so that its children's CPU time is counted in this process's)."""
  global _server
  if _server is not None:
    _stop(_server)
    _server = None


def _stop(server: subprocess.Popen) -> None:
  """Ends the server's loop (end of its input) and reaps it."""
  if server.stdin.closed:
    return
  server.stdin.close()
  try:
    server.wait(timeout=30)
  except subprocess.TimeoutExpired:
    server.kill()
    server.wait()


def _ask(request: Dict) -> Dict:
  global _server
  if _server is None or _server.poll() is not None:
    _server = subprocess.Popen(
        [sys.executable, "-c", _SERVER], cwd=REPO, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    atexit.register(_stop, _server)
  _server.stdin.write(json.dumps(request) + "\n")
  _server.stdin.flush()
  line = _server.stdout.readline()
  if not line:
    raise RuntimeError(f"the fork server exited ({_server.wait()}) on "
                       f"{request['op']}")
  return json.loads(line)


def _command(args: Sequence[str]) -> List[str]:
  """``[sys.executable, ...]`` or ``[...]`` -> the interpreter's arguments."""
  args = [str(a) for a in args]
  return args[1:] if args and args[0] == sys.executable else args


class ForkedProcess:
  """A command running in a child of the server, as ``subprocess.Popen``."""

  def __init__(self, args: Sequence[str], *, cwd: str = REPO,
               env: Optional[Dict[str, str]] = None,
               stdout: str, stderr: Optional[str] = None):
    env = dict(os.environ if env is None else env)
    for name in IMPORT_TIME_ENV:
      if env.get(name) != os.environ.get(name):
        raise ValueError(f"{name}={env.get(name)!r}: read when TensorFlow "
                         "and Keras are imported; run this command with "
                         "subprocess")
    self.args = _command(args)
    for path in {stdout, stderr or stdout}:
      open(path, "a").close()  # the child appends
    self.pid = _ask({"op": "start", "args": self.args, "cwd": str(cwd),
                     "env": env, "stdout": str(stdout),
                     "stderr": str(stderr or stdout)})["pid"]
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None:
      self.returncode = _ask({"op": "poll", "pid": self.pid})["rc"]
    return self.returncode

  def wait(self, timeout: float = 600) -> int:
    """The exit status (negative: the signal); a child still running after
    ``timeout`` seconds is killed."""
    if self.returncode is None:
      self.returncode = _ask({"op": "wait", "pid": self.pid,
                              "timeout": timeout})["rc"]
    return self.returncode

  def send_signal(self, signal_number: int) -> None:
    if self.returncode is None:
      os.kill(self.pid, signal_number)

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


def popen(args: Sequence[str], **kwargs) -> ForkedProcess:
  return ForkedProcess(args, **kwargs)


def run(args: Sequence[str], *, cwd: str = REPO,
        env: Optional[Dict[str, str]] = None, timeout: float = 600,
        combined: bool = False) -> subprocess.CompletedProcess:
  """``subprocess.run(args, cwd=cwd, env=env, capture_output=True,
  text=True, timeout=timeout)`` in a forked child (a child still running at
  ``timeout`` is killed: exit status -9); ``combined``: stderr goes to
  stdout (``stderr=subprocess.STDOUT``)."""
  with tempfile.TemporaryDirectory() as folder:
    out, err = os.path.join(folder, "out"), os.path.join(folder, "err")
    proc = ForkedProcess(args, cwd=cwd, env=env, stdout=out,
                         stderr=out if combined else err)
    code = proc.wait(timeout)
    texts = []
    for path in (out, None if combined else err):
      if path is None:
        texts.append(None)
        continue
      with open(path, encoding="utf-8", errors="replace") as f:
        texts.append(f.read())
    return subprocess.CompletedProcess(proc.args, code, *texts)
