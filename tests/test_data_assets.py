"""Tests of the set-up step's OpenCV sample fetch (mtssl_tf/data/assets.py).

No network: the registry is a loopback HTTP server started by the test,
serving a PEP 691 JSON index and a small synthetic source archive laid out
as opencv-python-headless's sdist.
"""
import hashlib
import http.server
import io
import json
import tarfile
import threading

import pytest

from mtssl_tf.data import assets, offline

TOP = f"opencv_python_headless-{assets.OPENCV_VERSION}"


def _archive(members):
  """A .tar.gz (bytes) of ``{path: bytes}``."""
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w:gz") as tar:
    for name, data in members.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


def _sdist_members(drop=()):
  """Every chosen file at its place in the sdist (content = its own path),
  plus files that must not be kept."""
  members = {f"{TOP}/{path}": path.encode()
             for name, path in assets.opencv_samples_members().items()
             if name not in drop}
  members.update({
      f"{TOP}/opencv/samples/data/lena.jpg": b"not chosen",
      f"{TOP}/opencv/samples/data/box.png": b"same stem as box.mp4",
      f"{TOP}/setup.py": b"x"})
  return members


class Registry:
  """A loopback package index: ``<url>/simple/<project>/`` and the files."""

  def __init__(self, archive):
    self.archive = archive
    self.requests = []
    registry = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_GET(self):  # noqa: N802 (http.server's name)
        registry.requests.append((self.path, self.headers.get("Accept")))
        if self.path.startswith("/simple/"):
          files = [{"filename": "other-1.0.tar.gz",
                    "url": "/files/other.tar.gz"}]
          if self.path == f"/simple/{assets.OPENCV_PROJECT}/":
            files.append({"filename": assets.OPENCV_SDIST,
                          "url": f"../../files/{assets.OPENCV_SDIST}"})
          body = json.dumps({"files": files}).encode()
        elif self.path == f"/files/{assets.OPENCV_SDIST}":
          body = registry.archive
        else:
          self.send_error(404)
          return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.thread = threading.Thread(target=self.httpd.serve_forever,
                                   daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def registry():
  server = Registry(_archive(_sdist_members()))
  yield server
  server.close()


def test_fetch_finds_verifies_and_keeps_only_the_chosen_files(registry,
                                                              tmp_path):
  sha = hashlib.sha256(registry.archive).hexdigest()
  dest = assets.fetch_opencv_samples(tmp_path / "samples", sha256=sha,
                                     index=registry.url + "/simple/")
  members = assets.opencv_samples_members()
  # Flat, exactly the chosen files, each with its own bytes from its place
  # in the archive (cup.mp4 and box.mp4 come from the tutorial folders).
  assert sorted(p.name for p in dest.iterdir()) == sorted(members)
  for name, path in members.items():
    assert (dest / name).read_bytes() == path.encode()
  assert (dest / "box.mp4").read_bytes().startswith(b"opencv/samples/cpp/")
  assert (dest / "cup.mp4").read_bytes() == (
      b"opencv/doc/js_tutorials/js_assets/cup.mp4")
  # Found through the JSON simple index, then fetched from its link.
  assert registry.requests[0] == (
      f"/simple/{assets.OPENCV_PROJECT}/",
      "application/vnd.pypi.simple.v1+json")
  assert registry.requests[1][0] == f"/files/{assets.OPENCV_SDIST}"
  # The chosen set is the offline set's: every photo and the five videos.
  assert set(members) == set(offline.OPENCV_SAMPLES_PHOTOS) | {
      f for _, f in offline.OPENCV_SAMPLES_VIDEOS}
  assert len(offline.OPENCV_SAMPLES_VIDEOS) == 5


def test_fetch_refuses_a_wrong_hash_and_names_the_url(registry, tmp_path):
  with pytest.raises(RuntimeError, match=r"SHA-256 [0-9a-f]{64}, expected "
                     f"{'0' * 64}") as error:
    assets.fetch_opencv_samples(tmp_path / "samples", sha256="0" * 64,
                                index=registry.url + "/simple/")
  assert f"{registry.url}/files/{assets.OPENCV_SDIST}" in str(error.value)
  assert not (tmp_path / "samples").exists()


def test_fetch_errors_name_the_registry(registry, tmp_path):
  # An index that does not answer (nothing listens on the closed port).
  closed = Registry(b"")
  closed.close()
  with pytest.raises(RuntimeError, match=f"cannot read the package index "
                     f"{closed.url}/simple/{assets.OPENCV_PROJECT}/"):
    assets.fetch_opencv_samples(tmp_path / "a", index=closed.url + "/simple",
                                timeout=5)
  # An index that does not list the file.
  with pytest.raises(RuntimeError, match="does not list"):
    assets.sdist_url("other", assets.OPENCV_SDIST, registry.url + "/simple/")
  # An archive without one of the chosen files: named; nothing kept.
  registry.archive = _archive(_sdist_members(drop=("cup.mp4",)))
  with pytest.raises(RuntimeError, match="lacks.*cup.mp4"):
    assets.fetch_opencv_samples(
        tmp_path / "b", sha256=hashlib.sha256(registry.archive).hexdigest(),
        index=registry.url + "/simple/")
  assert not (tmp_path / "b").exists()


def test_fetch_all_is_idempotent(tmp_path, monkeypatch):
  monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
  voc = assets.labelme_voc_path()
  for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "xml")):
    (voc / sub).mkdir(parents=True)
    for i in range(3):
      (voc / sub / f"{i}.{ext}").write_bytes(b"x")
  fetched = []

  def fake_fetch(dest, **kwargs):
    del kwargs
    fetched.append(dest)
    dest.mkdir(parents=True)
    for name in assets.opencv_samples_members():
      (dest / name).write_bytes(b"x")
    return dest

  monkeypatch.setattr(assets, "fetch_opencv_samples", fake_fetch)
  monkeypatch.setattr(assets, "fetch_labelme_voc", lambda *a, **k: 1 / 0)
  lines = []
  assert assets.fetch_all(log=lines.append) == tmp_path
  assert fetched == [tmp_path / f"opencv-samples-{assets.OPENCV_VERSION}"]
  assert "is present" in lines[0] and "fetching" in lines[1]
  lines.clear()
  assets.fetch_all(log=lines.append)  # second run: nothing fetched
  assert len(fetched) == 1
  assert all(line.endswith("is present") for line in lines), lines
  # A folder that lost a file is fetched again.
  (fetched[0] / "cup.mp4").unlink()
  monkeypatch.setattr(assets, "fetch_opencv_samples",
                      lambda dest, **k: fetched.append(dest))
  assets.fetch_all(log=lines.append)
  assert len(fetched) == 2
