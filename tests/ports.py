"""Loopback clusters for tests that start several workers."""
import json
import os
import socket
import subprocess


def free_ports(n):
  """``n`` distinct ports on localhost that were free a moment ago."""
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def run_workers(command, n=2, timeout=400, env=None, **popen_kwargs):
  """Runs ``command`` once per worker of a fresh ``n``-worker loopback
  cluster (each with its ``TF_CONFIG``), waits for all, asserts that each
  exited with 0 (the failing output is shown) and returns their outputs."""
  cluster = {"worker": [f"localhost:{p}" for p in free_ports(n)]}
  procs = []
  for index in range(n):
    tf_config = json.dumps({"cluster": cluster,
                            "task": {"type": "worker", "index": index}})
    procs.append(subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, **(env or {}), TF_CONFIG=tf_config,
                 TF_CPP_MIN_LOG_LEVEL="2"), **popen_kwargs))
  outputs = []
  for proc in procs:
    try:
      outputs.append(proc.communicate(timeout=timeout)[0])
    finally:
      if proc.poll() is None:
        proc.kill()
  for proc, out in zip(procs, outputs):
    assert proc.returncode == 0, out[-3000:]
  return outputs
