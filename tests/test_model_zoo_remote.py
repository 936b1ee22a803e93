"""Zoo weights by URL: fetched with
``keras.utils.get_file`` from a loopback HTTP server on 127.0.0.1 that the
tests start and stop, sha256-checked, cached in a folder under ``tmp_path``
(``MTSSL_TF_CACHE_DIR``; never the user's cache) and loaded again from the
cache with the server stopped; wrong, truncated and cut-off downloads are
refused with nothing cached; ``register`` adds a ``.keras`` file (URL or
path) as a preset; ``MultiTaskModel.from_preset`` / ``Trunk.from_preset``
run the same checks as ``model_zoo.load``."""
import dataclasses
import hashlib
import http.server
import json
import os
import shutil
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import mtssl_tf
from mtssl_tf import model_zoo
from mtssl_tf.model_zoo.__main__ import main as zoo_main
from tools.zoo.zoo_cli import main as tools_main

SIZE = 32


class _Server:
  """A loopback HTTP server of fixed files, counting GET requests.

  ``files`` maps a path to ``(body, announced_length)``; an announced length
  above ``len(body)`` makes the server close the connection early (a cut-off
  transfer).
  """

  def __init__(self):
    self.files = {}
    self.requests = []
    owner = self

    class Handler(http.server.BaseHTTPRequestHandler):
      timeout = 10  # bounded: a stuck client cannot hold the test

      def do_GET(self):  # noqa: N802 (http.server's name)
        owner.requests.append(self.path)
        if self.path not in owner.files:
          self.send_error(404)
          return
        body, length = owner.files[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.thread = threading.Thread(target=self.httpd.serve_forever,
                                   kwargs={"poll_interval": 0.05},
                                   daemon=True)
    self.thread.start()
    self.running = True

  def url(self, path):
    return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

  def add(self, path, body, length=None):
    self.files[path] = (body, len(body) if length is None else length)
    return self.url(path)

  def stop(self):
    if self.running:
      self.httpd.shutdown()
      self.httpd.server_close()
      self.thread.join(timeout=10)
      self.running = False


@pytest.fixture
def server():
  srv = _Server()
  yield srv
  srv.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch):
  folder = tmp_path / "cache"
  monkeypatch.setenv(model_zoo.download.CACHE_ENV, str(folder))
  return folder


def _sha(data):
  return hashlib.sha256(data).hexdigest()


def _cached(folder):
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def _same_weights(a, b):
  assert len(a.weights) == len(b.weights)
  for x, y in zip(a.weights, b.weights):
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def _rp_bytes():
  with open(model_zoo.weights_path("rp"), "rb") as f:
    return f.read()


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
  monkeypatch.delenv(model_zoo.download.CACHE_ENV, raising=False)
  monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
  assert model_zoo.cache_dir() == str(tmp_path / "kh" / "models" /
                                      "mtssl_tf")
  monkeypatch.delenv("KERAS_HOME")
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  assert model_zoo.cache_dir() == str(tmp_path / "home" / ".keras" /
                                      "models" / "mtssl_tf")
  monkeypatch.setenv(model_zoo.download.CACHE_ENV, str(tmp_path / "c"))
  assert model_zoo.cache_dir() == str(tmp_path / "c")


def test_load_by_url_is_checked_cached_and_reused_offline(server, cache):
  data = _rp_bytes()
  url = server.add("/zoo/rp.weights.h5", data)
  model = model_zoo.load("rp", weights=url, sha256=_sha(data))
  _same_weights(model, model_zoo.load("rp"))  # the package's own file
  assert server.requests == ["/zoo/rp.weights.h5"]
  assert _cached(cache) == [f"rp-{_sha(data)[:12]}.weights.h5"]
  server.stop()
  again = model_zoo.load("rp", weights=url, sha256=_sha(data))
  _same_weights(again, model)
  assert server.requests == ["/zoo/rp.weights.h5"]  # no second request
  with pytest.raises(ValueError, match="needs sha256="):
    model_zoo.load("rp", weights=url)
  with pytest.raises(ValueError, match="sha256= applies to weights="):
    model_zoo.load("rp", sha256=_sha(data))


def test_registry_entry_with_weights_url(server, cache, tmp_path,
                                         monkeypatch):
  data = _rp_bytes()
  url = server.add("/rp.weights.h5", data)
  folder = tmp_path / "zoo"
  folder.mkdir()  # the metadata ships, the weights file does not
  shutil.copy(model_zoo.metadata_path("rp"), folder)
  entry = dataclasses.replace(model_zoo.get_preset("rp"), weights_url=url,
                              weights_sha256=_sha(data))
  monkeypatch.setitem(model_zoo.PRESETS, "rp", entry)
  model = mtssl_tf.MultiTaskModel.from_preset("rp", weights_dir=str(folder))
  _same_weights(model, model_zoo.load("rp"))
  assert len(server.requests) == 1 and len(_cached(cache)) == 1
  # A registry hash that disagrees with the metadata is refused.
  bad = dataclasses.replace(entry, weights_sha256="0" * 64)
  monkeypatch.setitem(model_zoo.PRESETS, "rp", bad)
  with pytest.raises(model_zoo.WeightsIntegrityError,
                     match=f"{'0' * 64}.*{_sha(data)}"):
    model_zoo.load("rp", weights_dir=str(folder))
  with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
    dataclasses.replace(entry, weights_sha256="abc")


@pytest.mark.parametrize("damage", ["flipped_byte", "truncated"])
def test_wrong_or_truncated_download_is_refused_and_not_cached(
    server, cache, damage):
  data = _rp_bytes()
  if damage == "flipped_byte":
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 1
    bad = bytes(bad)
  else:  # the server announces and sends only the first half
    bad = data[:len(data) // 2]
  url = server.add("/rp.weights.h5", bad)
  with pytest.raises(model_zoo.WeightsIntegrityError) as info:
    model_zoo.load("rp", weights=url, sha256=_sha(data))
  message = str(info.value)
  assert _sha(data) in message and _sha(bad) in message and url in message
  assert _cached(cache) == []


def test_cut_off_transfer_is_refused_and_not_cached(server, cache):
  data = _rp_bytes()
  url = server.add("/rp.weights.h5", data[:1000], length=len(data))
  with pytest.raises(model_zoo.WeightsDownloadError,
                     match=f"truncated.*got only 1000 out of {len(data)} "
                     f"bytes.*{_sha(data)}"):
    model_zoo.load("rp", weights=url, sha256=_sha(data))
  assert _cached(cache) == []
  with pytest.raises(model_zoo.WeightsDownloadError, match="404"):
    model_zoo.load("rp", weights=server.url("/missing.weights.h5"),
                   sha256=_sha(data))


def _tiny_multitask():
  keras.utils.set_random_seed(0)
  return mtssl_tf.MultiTaskModel(
      trunk={"depth": 14, "width": 0.25},
      tasks={"relative_position": {
          "patch_size": 16, "gap": 4, "jitter": 2, "rescale_pixels": None,
          "embedding_units": 16, "hidden_units": [16]}},
      name="mtssl")


def test_register_url_and_path_then_from_preset(server, cache, tmp_path,
                                               capsys):
  zoo = str(tmp_path / "zoo")
  model = _tiny_multitask()
  model.save(str(tmp_path / "tiny.keras"))
  data = (tmp_path / "tiny.keras").read_bytes()
  url = server.add("/authors/tiny.keras", data)
  assert tools_main(["register", "tiny_mt", f"--weights={url}",
                   f"--sha256={_sha(data)}", f"--weights_dir={zoo}"]) == 0
  entry = json.load(open(os.path.join(zoo, "tiny_mt.json")))
  assert (entry["kind"], entry["sha256"], entry["weights_url"]) == (
      "multitask", _sha(data), url)
  assert entry["params"] == model.count_params()
  # Without --sha256 the hash of what was downloaded is recorded (and the
  # user told to compare it with the publisher's).
  capsys.readouterr()
  assert tools_main(["register", "tiny_tofu", f"--weights={url}",
                   f"--weights_dir={zoo}"]) == 0
  assert "compare it with the publisher's" in capsys.readouterr().out
  assert json.load(open(os.path.join(zoo, "tiny_tofu.json")))["sha256"] == (
      _sha(data))
  os.remove(os.path.join(zoo, "tiny_tofu.json"))
  # A trunk-only .keras (what convert_slim writes), registered by path.
  keras.utils.set_random_seed(1)
  trunk = mtssl_tf.Trunk(depth=14, width=0.25)
  trunk.save(str(tmp_path / "converted.keras"))
  assert tools_main(["register", "authors_trunk",
                   f"--weights={tmp_path / 'converted.keras'}",
                   f"--weights_dir={zoo}"]) == 0
  assert sorted(os.listdir(zoo)) == ["authors_trunk.json",
                                     "authors_trunk.keras", "tiny_mt.json"]
  assert model_zoo.list_registered(zoo) == ["authors_trunk", "tiny_mt"]
  capsys.readouterr()
  assert zoo_main(["list", f"--weights_dir={zoo}"]) == 0
  out = capsys.readouterr().out
  assert "tiny_mt" in out and "authors_trunk" in out

  # register, given the hash, fetched the file into the cache; without
  # the hash it fetched it into a temporary folder, removed afterwards.
  assert server.requests == ["/authors/tiny.keras"] * 2
  assert _cached(cache) == [f"tiny_mt-{_sha(data)[:12]}.keras"]
  shutil.rmtree(cache)  # so that the first load has to fetch it
  images = tf.constant(np.random.default_rng(0).uniform(0, 255,
                                                        (2, SIZE, SIZE, 3)),
                       tf.float32)
  loaded = mtssl_tf.MultiTaskModel.from_preset("tiny_mt", weights_dir=zoo)
  np.testing.assert_allclose(loaded.features(images).numpy(),
                             model.features(images).numpy(), atol=1e-5)
  assert server.requests == ["/authors/tiny.keras"] * 3
  server.stop()  # from now on only the cache can answer
  again = mtssl_tf.Trunk.from_preset("tiny_mt", weights_dir=zoo)
  _same_weights(again, model.trunk)
  got = mtssl_tf.Trunk.from_preset("authors_trunk", weights_dir=zoo)
  _same_weights(got, trunk)
  with pytest.raises(ValueError, match="load_trunk\\('authors_trunk'\\)"):
    mtssl_tf.MultiTaskModel.from_preset("authors_trunk", weights_dir=zoo)
  fresh = model_zoo.load("tiny_mt", weights=False, weights_dir=zoo)
  assert fresh.count_params() == model.count_params()

  # A registered local file that changed is refused, naming both hashes.
  path = os.path.join(zoo, "authors_trunk.keras")
  with open(path, "ab") as f:
    f.write(b"x")
  with pytest.raises(model_zoo.WeightsIntegrityError) as info:
    mtssl_tf.Trunk.from_preset("authors_trunk", weights_dir=zoo)
  assert _sha(open(path, "rb").read()) in str(info.value)
  assert entry["sha256"] != _sha(open(path, "rb").read())


def test_register_refuses_bad_input(tmp_path, capsys):
  zoo = str(tmp_path / "zoo")
  trunk_path = str(tmp_path / "t.keras")
  mtssl_tf.Trunk(depth=14, width=0.25).save(trunk_path)
  cases = [
      (["register", "rp", f"--weights={trunk_path}"], "built-in preset"),
      (["register", "Bad-Name", f"--weights={trunk_path}"], "lowercase"),
      (["register", "x", "--weights=/no/such.keras"], "does not exist"),
      (["register", "x", "--weights=x.weights.h5"], "needs a .keras file"),
      (["register", "x", f"--weights={trunk_path}", "--sha256=" + "a" * 64],
       "a" * 64),
  ]
  for argv, message in cases:
    assert tools_main(argv + [f"--weights_dir={zoo}"]) == 2, argv
    assert message in capsys.readouterr().err, argv
  assert not os.path.exists(zoo) or os.listdir(zoo) == []


def test_from_preset_runs_the_same_checks_as_load(tmp_path):
  _same_weights(mtssl_tf.MultiTaskModel.from_preset("rp"),
                model_zoo.load("rp"))
  _same_weights(mtssl_tf.Trunk.from_preset("rp"), model_zoo.load("rp").trunk)
  for filename in ("rp.weights.h5", "rp.json"):
    shutil.copy(os.path.join(model_zoo.CHECKOUT_ZOO_DIR, filename), tmp_path)
  path = tmp_path / "rp.weights.h5"
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 1
  path.write_bytes(bytes(data))
  for cls in (mtssl_tf.MultiTaskModel, mtssl_tf.Trunk):
    with pytest.raises(model_zoo.WeightsIntegrityError,
                       match=_sha(bytes(data))):
      cls.from_preset("rp", weights_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown model-zoo preset"):
      cls.from_preset("rp_jigsaw")
