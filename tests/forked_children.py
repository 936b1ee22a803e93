"""Source shared by the drivers that fork one child per command or page from
an interpreter that has imported TensorFlow once (tests/fork_server.py,
test_docs_examples, harness.run_forked_commands): ``WAIT_OR_KILL`` defines
``wait_or_kill(pid, limit)``, which waits for a child and kills one that
neither finishes nor fails in ``limit`` seconds (a lock held at fork time,
say), so the test fails instead of hanging; ``RUN_COMMAND`` defines
``run_command(args)``, which runs a command line in the (forked) process as
``python ARGS`` would and returns its exit status."""
import textwrap

WAIT_OR_KILL = textwrap.dedent(r"""
    import os, signal, time
    def wait_or_kill(pid, limit):
      deadline = time.monotonic() + limit
      while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
          return status
        if time.monotonic() > deadline:
          os.kill(pid, signal.SIGKILL)
          return os.waitpid(pid, 0)[1]
        time.sleep(0.05)
""")

RUN_COMMAND = textwrap.dedent(r"""
    import os, runpy, sys, traceback
    def run_command(args):
      # ["-m", MODULE, *ARGS], ["-c", CODE, *ARGS] or [SCRIPT, *ARGS], with
      # the sys.path a new interpreter would have: sys.path[0] as `python -m`
      # (the working folder), -c ("") or `python SCRIPT` (the script's
      # folder) sets it, and PYTHONPATH's entries (the driver's own sys.path
      # was made from its environment).
      extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
               if p]
      sys.path[1:1] = [p for p in extra if p not in sys.path]
      code = 0
      try:
        if args[0] == "-m":
          sys.path[0] = os.getcwd()
          sys.argv = [args[1]] + args[2:]
          runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[0] == "-c":
          sys.path[0] = ""
          sys.argv = ["-c"] + args[2:]
          exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
        else:
          sys.path[0] = os.path.dirname(os.path.abspath(args[0]))
          sys.argv = list(args)
          runpy.run_path(args[0], run_name="__main__")
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None
                                                       else 1)
        if not isinstance(e.code, (int, type(None))):
          print(e.code, file=sys.stderr)
      except BaseException:
        traceback.print_exc()
        code = 1
      sys.stdout.flush(); sys.stderr.flush()
      return code
""")
