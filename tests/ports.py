"""Free loopback ports for tests that start several workers."""
import socket


def free_ports(n):
  """``n`` distinct ports on localhost that were free a moment ago."""
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports
