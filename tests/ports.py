"""Loopback clusters for tests that start several workers."""
import json
import os
import socket
import tempfile
import time

import fork_server

# What a worker prints when its gRPC server cannot bind its port.
ADDRESS_IN_USE = "Address already in use"


def free_ports(n):
  """``n`` distinct ports on localhost that were free a moment ago."""
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def run_workers(command, n=2, timeout=400, env=None, attempts=3,
                cwd=fork_server.REPO):
  """Runs ``command`` once per worker of a fresh ``n``-worker loopback
  cluster (each with its ``TF_CONFIG``; a process forked by
  tests/fork_server.py), waits for all, asserts that each exited with 0
  (the failing output is shown) and returns their outputs.

  The ports cannot stay bound here until the workers use them (each
  worker's gRPC server binds its own, and TensorFlow's servers refuse
  SO_REUSEPORT), so another process may take one in between: a cluster in
  which a worker failed with "Address already in use" is started again on
  fresh ports, up to ``attempts`` times in all.
  """
  for attempt in range(1, attempts + 1):
    results = _run_cluster(command, n, timeout, env, cwd)
    if attempt < attempts and any(
        code != 0 and ADDRESS_IN_USE in out for code, out in results):
      continue
    for index, (code, out) in enumerate(results):
      assert code == 0, f"worker {index} exited with {code}:\n{out[-3000:]}"
    return [out for _, out in results]


def _run_cluster(command, n, timeout, env, cwd):
  """[(exit code, output)] of each worker. A worker that fails stops the
  others (they would wait for it until ``timeout``); the ones still running
  at ``timeout`` are killed (-9)."""
  cluster = {"worker": [f"localhost:{p}" for p in free_ports(n)]}
  procs = []
  with tempfile.TemporaryDirectory() as folder:
    logs = [os.path.join(folder, f"worker{index}.log") for index in range(n)]
    try:
      for index in range(n):
        tf_config = json.dumps({"cluster": cluster,
                                "task": {"type": "worker", "index": index}})
        procs.append(fork_server.popen(
            command, cwd=cwd, stdout=logs[index],
            env=dict(os.environ, **(env or {}), TF_CONFIG=tf_config,
                     TF_CPP_MIN_LOG_LEVEL="2")))
      deadline = time.monotonic() + timeout
      while time.monotonic() < deadline:
        codes = [proc.poll() for proc in procs]
        if None not in codes or any(codes):  # all done, or one failed
          break
        time.sleep(0.2)
    finally:
      for proc in procs:
        if proc.poll() is None:
          proc.kill()
        proc.wait()
    results = []
    for proc, log in zip(procs, logs):
      with open(log, encoding="utf-8", errors="replace") as f:
        results.append((proc.returncode, f.read()))
  return results
