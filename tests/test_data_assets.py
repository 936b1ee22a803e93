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

import numpy as np
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

  def __init__(self, archive, contrib_archive=b""):
    self.archive = archive
    self.contrib_archive = contrib_archive
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
          if self.path == f"/simple/{assets.OPENCV_CONTRIB_PROJECT}/":
            files.append({"filename": assets.OPENCV_CONTRIB_SDIST,
                          "url": f"/files/{assets.OPENCV_CONTRIB_SDIST}"})
          body = json.dumps({"files": files}).encode()
        elif self.path == f"/files/{assets.OPENCV_SDIST}":
          body = registry.archive
        elif self.path == f"/files/{assets.OPENCV_CONTRIB_SDIST}":
          body = registry.contrib_archive
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

  def fake_contrib(dest, **kwargs):
    del kwargs
    fetched.append(dest)
    dest.mkdir(parents=True)
    for name in assets.OPENCV_CONTRIB_MEMBERS:
      (dest / name).write_bytes(b"x")
    (dest / assets.RECIPE_FILE).write_text(assets.contrib_recipe())
    return dest

  monkeypatch.setattr(assets, "fetch_opencv_samples", fake_fetch)
  monkeypatch.setattr(assets, "fetch_opencv_contrib", fake_contrib)
  monkeypatch.setattr(assets, "fetch_labelme_voc", lambda *a, **k: 1 / 0)
  lines = []
  assert assets.fetch_all(log=lines.append) == tmp_path
  assert fetched == [
      tmp_path / f"opencv-samples-{assets.OPENCV_VERSION}",
      tmp_path / f"opencv-contrib-samples-{assets.OPENCV_VERSION}"]
  assert "is present" in lines[0] and "fetching" in lines[1]
  assert assets.OPENCV_CONTRIB_SDIST in lines[2]
  lines.clear()
  assets.fetch_all(log=lines.append)  # second run: nothing fetched
  assert len(fetched) == 2
  assert all(line.endswith("is present") for line in lines), lines
  # A folder that lost a file is fetched again.
  (fetched[0] / "cup.mp4").unlink()
  monkeypatch.setattr(assets, "fetch_opencv_samples",
                      lambda dest, **k: fetched.append(dest))
  assets.fetch_all(log=lines.append)
  assert len(fetched) == 3 and fetched[2] == fetched[0]


# --- the contrib archive's photos ---------------------------------------------

CONTRIB_TOP = f"opencv_contrib_python_headless-{assets.OPENCV_VERSION}"


def _png(array):
  import cv2  # pylint: disable=g-import-not-at-top
  ok, data = cv2.imencode(".png", array)
  assert ok
  return data.tobytes()


def _contrib_members(small_figure=False):
  """The contrib sdist's chosen files: the ones to cut or turn as PNGs of
  seeded random pixels (at least 512 x 1616, as ximgproc's figures, or
  too small),
  the others as their own path; plus a file that must not be kept. Returns
  (members, {flat name: source pixels})."""
  rng = np.random.default_rng(0)
  members, pixels = {}, {}
  for name, photo in assets.OPENCV_CONTRIB_MEMBERS.items():
    if photo.transformed:
      # Just larger than the cut (the ximgproc figures: as large as theirs).
      shape = ((300, 400, 3) if small_figure or photo.crop is None
               else (max(photo.crop[1], 512), max(photo.crop[3] + 2, 1616),
                     3))
      pixels[name] = rng.integers(0, 256, shape, np.uint8)
      members[f"{CONTRIB_TOP}/{photo.path}"] = _png(pixels[name])
    else:
      members[f"{CONTRIB_TOP}/{photo.path}"] = photo.path.encode()
  members[f"{CONTRIB_TOP}/opencv_contrib/modules/text/samples/"
          "scenetext_word04.jpg"] = b"not chosen"
  return members, pixels


def test_contrib_photos_are_cut_out_and_turned_upright(tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  members, pixels = _contrib_members()
  registry = Registry(b"", _archive(members))
  try:
    dest = assets.fetch_opencv_contrib(
        tmp_path / "contrib",
        sha256=hashlib.sha256(registry.contrib_archive).hexdigest(),
        index=registry.url + "/simple/")
  finally:
    registry.close()
  assert sorted(p.name for p in dest.iterdir()) == sorted(
      [*assets.OPENCV_CONTRIB_MEMBERS, assets.RECIPE_FILE])
  assert len(assets.OPENCV_CONTRIB_MEMBERS) == 27
  assert registry.requests[0][0] == (
      f"/simple/{assets.OPENCV_CONTRIB_PROJECT}/")
  for name, photo in assets.OPENCV_CONTRIB_MEMBERS.items():
    if not photo.transformed:  # kept byte for byte
      assert (dest / name).read_bytes() == photo.path.encode()
      continue
    assert name.endswith(".png")
    got = cv2.imread(str(dest / name), cv2.IMREAD_UNCHANGED)
    expected = pixels[name]
    if photo.crop is not None:
      top, bottom, left, right = photo.crop
      expected = expected[top:bottom, left:right]
    for _ in range(photo.quarter_turns % 4):  # clockwise, by transposing
      expected = expected.transpose(1, 0, 2)[:, ::-1]
    np.testing.assert_array_equal(got, expected)
  # The ximgproc figures keep the photo panel only: 472 x 510 pixels.
  assert cv2.imread(str(dest / "lighthouse.png")).shape == (472, 510, 3)
  # The folder records its recipe; another recipe's folder is not "present".
  assert (dest / assets.RECIPE_FILE).read_text().strip() == (
      assets.contrib_recipe())
  assert assets.has_contrib_photos(dest)
  (dest / assets.RECIPE_FILE).write_text("an older recipe\n")
  assert not assets.has_contrib_photos(dest)
  changed = dict(assets.OPENCV_CONTRIB_MEMBERS)
  changed["lighthouse.png"] = assets.ArchivePhoto(
      changed["lighthouse.png"].path, (1, 472, 0, 510))
  assert assets.contrib_recipe(changed) != assets.contrib_recipe()


def test_contrib_crop_outside_the_figure_is_named_and_nothing_kept(
    tmp_path):
  members, _ = _contrib_members(small_figure=True)
  archive = tmp_path / "contrib.tar.gz"
  archive.write_bytes(_archive(members))
  with pytest.raises(RuntimeError, match=r"400x300 pixels: the crop "
                     r"\(0, 472, 0, 510\) is not inside it"):
    assets.extract_opencv_contrib(archive, tmp_path / "out")
  assert not (tmp_path / "out").exists()
