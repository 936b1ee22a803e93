"""Loopback clusters for tests that start several workers."""
import json
import os
import socket
import subprocess
import tempfile
import time

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
                **popen_kwargs):
  """Runs ``command`` once per worker of a fresh ``n``-worker loopback
  cluster (each with its ``TF_CONFIG``), waits for all, asserts that each
  exited with 0 (the failing output is shown) and returns their outputs.

  The ports cannot stay bound here until the workers use them (each
  worker's gRPC server binds its own, and TensorFlow's servers refuse
  SO_REUSEPORT), so another process may take one in between: a cluster in
  which a worker failed with "Address already in use" is started again on
  fresh ports, up to ``attempts`` times in all.
  """
  for attempt in range(1, attempts + 1):
    results = _run_cluster(command, n, timeout, env, popen_kwargs)
    if attempt < attempts and any(
        code != 0 and ADDRESS_IN_USE in out for code, out in results):
      continue
    for index, (code, out) in enumerate(results):
      assert code == 0, f"worker {index} exited with {code}:\n{out[-3000:]}"
    return [out for _, out in results]


def _run_cluster(command, n, timeout, env, popen_kwargs):
  """[(exit code, output)] of each worker. A worker that fails stops the
  others (they would wait for it until ``timeout``); the ones still running
  at ``timeout`` are killed (-9)."""
  cluster = {"worker": [f"localhost:{p}" for p in free_ports(n)]}
  procs, logs = [], []
  try:
    for index in range(n):
      tf_config = json.dumps({"cluster": cluster,
                              "task": {"type": "worker", "index": index}})
      logs.append(tempfile.TemporaryFile("w+"))
      procs.append(subprocess.Popen(
          command, stdout=logs[-1], stderr=subprocess.STDOUT, text=True,
          env=dict(os.environ, **(env or {}), TF_CONFIG=tf_config,
                   TF_CPP_MIN_LOG_LEVEL="2"), **popen_kwargs))
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
    log.seek(0)
    results.append((proc.returncode, log.read()))
    log.close()
  return results
