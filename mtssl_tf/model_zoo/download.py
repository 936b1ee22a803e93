"""Zoo weights that live elsewhere: fetched by URL, checked by sha256, cached.

The way ``keras.applications`` and keras-hub fetch weights: with
``keras.utils.get_file`` into the Keras cache, the file's sha256 checked, a
cached file reused without the network as long as its hash still matches.

Cache folder, decided at each call (so a test or a job can move it):

1. ``$MTSSL_TF_CACHE_DIR`` when set;
2. else ``$KERAS_HOME/models/mtssl_tf`` when ``KERAS_HOME`` is set;
3. else ``~/.keras/models/mtssl_tf`` (the Keras cache).

A download whose sha256 differs from the expected one (a wrong or replaced
file, a truncated transfer the server reported as complete) is refused with
:class:`WeightsIntegrityError` naming both hashes, and removed; a transfer
that ends before its announced length is refused as truncated. Either way
nothing is left in the cache.

>>> path = fetch("https://example.org/rp.weights.h5", sha256="3b1f...")
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
import urllib.parse
from typing import Optional

CACHE_ENV = "MTSSL_TF_CACHE_DIR"
CACHE_SUBDIR = os.path.join("models", "mtssl_tf")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsIntegrityError(ValueError):
  """A weights file's sha256 differs from the expected one."""


class WeightsDownloadError(IOError):
  """A weights URL could not be fetched (unreachable, HTTP error, cut off)."""


def sha256_file(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def is_url(value: str) -> bool:
  """Whether ``value`` is an http(s), ftp or file URL (else a local path)."""
  return urllib.parse.urlsplit(str(value)).scheme in ("http", "https",
                                                      "ftp", "file")


def check_sha256(sha256: Optional[str], what: str) -> str:
  """``sha256`` as 64 lowercase hex digits; ``ValueError`` naming ``what``."""
  value = (sha256 or "").strip().lower()
  if not _SHA256.match(value):
    raise ValueError(f"{what}: sha256 must be 64 hex digits, got "
                     f"{sha256!r}")
  return value


def cache_dir() -> str:
  """The folder fetched weights are cached in (see the module docstring)."""
  if os.environ.get(CACHE_ENV):
    return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
  # Read at call time: keras.config reads KERAS_HOME once, at import.
  home = os.environ.get("KERAS_HOME") or os.path.join(
      os.path.expanduser("~"), ".keras")
  return os.path.join(home, CACHE_SUBDIR)


def cached_name(url: str, sha256: str, stem: Optional[str] = None) -> str:
  """Cache file name: ``<stem>-<sha256[:12]><extension>``, so two versions
  of one preset never overwrite each other and the extension that
  Keras loaders look at (``.keras``, ``.weights.h5``) is kept."""
  base = os.path.basename(urllib.parse.urlsplit(url).path) or "weights"
  extension = next((e for e in (".weights.h5", ".keras", ".h5")
                    if base.endswith(e)), os.path.splitext(base)[1])
  stem = stem or base[:len(base) - len(extension)] or "weights"
  return f"{stem}-{sha256[:12]}{extension}"


def fetch(url: str, sha256: str, *, stem: Optional[str] = None,
          cache: Optional[str] = None) -> str:
  """The local path of ``url``'s file, downloaded once and sha256-checked.

  Args:
    url: http(s)/ftp/file URL of the weights file.
    sha256: its expected sha256 (hex).
    stem: cache file name stem (default: the URL's file name).
    cache: cache folder (default: :func:`cache_dir`).

  Returns:
    The cached file's path; a cached file with the right hash is returned
    without any network access.

  Raises:
    WeightsIntegrityError: the downloaded bytes hash to something else
      (both hashes are named; the file is removed from the cache).
    WeightsDownloadError: the URL could not be fetched or the transfer was
      cut short (nothing is left in the cache).
  """
  import keras  # pylint: disable=g-import-not-at-top

  sha256 = check_sha256(sha256, url)
  folder = cache or cache_dir()
  fname = cached_name(url, sha256, stem)
  target = os.path.join(folder, fname)
  # get_file silently falls back to /tmp/.keras for a folder it cannot
  # write (a missing one included): create it, and refuse an unwritable one
  # rather than cache somewhere the user did not choose.
  os.makedirs(folder, exist_ok=True)
  if not os.access(folder, os.W_OK):
    raise WeightsDownloadError(
        f"the weights cache {folder} is not writable; set {CACHE_ENV} to a "
        "writable folder")
  try:
    path = keras.utils.get_file(
        fname, origin=url, file_hash=sha256, hash_algorithm="sha256",
        cache_dir=folder, cache_subdir="")
  except ValueError as e:
    # get_file raises ValueError for a hash mismatch and leaves the bad
    # file in place: hash it for the message, then remove it.
    if not os.path.exists(target):
      raise
    actual = sha256_file(target)
    size = os.path.getsize(target)
    os.remove(target)
    raise WeightsIntegrityError(
        f"refusing the weights downloaded from {url}: their sha256 is "
        f"{actual} ({size} bytes) but {sha256} was expected; the file is "
        "truncated, corrupt or was replaced at the source, and was not "
        "cached") from e
  except (Exception, KeyboardInterrupt) as e:  # get_file re-raises as is
    if os.path.exists(target):
      os.remove(target)
    if isinstance(e, KeyboardInterrupt):
      raise
    cause = e.__cause__ or e.__context__ or e
    truncated = isinstance(cause, urllib.error.ContentTooShortError) or (
        "retrieval incomplete" in str(e))
    # get_file removed the partial file before re-raising, so its hash
    # cannot be named; the message says how many bytes arrived.
    what = (f"the transfer was cut short (truncated: {e})" if truncated
            else f"the download failed ({e})")
    raise WeightsDownloadError(
        f"could not fetch weights from {url}: {what}; expected sha256 "
        f"{sha256}; nothing was cached") from e
  return path


__all__ = ["CACHE_ENV", "WeightsDownloadError", "WeightsIntegrityError",
           "cache_dir", "cached_name", "check_sha256", "fetch", "is_url",
           "sha256_file"]
