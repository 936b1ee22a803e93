"""Source shared by the drivers that fork one child per command or page from
an interpreter that has imported TensorFlow once (test_docs_examples,
test_model_zoo_install): ``WAIT_OR_KILL`` defines ``wait_or_kill(pid,
limit)``, which waits for a child and kills one that neither finishes nor
fails in ``limit`` seconds (a lock held at fork time, say), so the test
fails instead of hanging."""
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
