"""Class rebalancing by default (paper-fidelity issue, item 2): Zhang et
al.'s ImageNet prior ships as package data and the paper configs use it;
training without a prior computes one from its own training images with the
prior command's code, caches it in the run folder and logs it."""
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import colorization_prior as prior_cli
from mtssl_tf.tasks import colorization_bins as prior_lib
from mtssl_tf.training.auto_prior import resolve_training_prior
from mtssl_tf import model_zoo
from mtssl_tf.config import DataConfig, OptimizerConfig, TrainConfig
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.tasks.colorization import Colorization

RESOURCES = os.path.join(os.path.dirname(prior_cli.__file__), "resources")
COL = {"crop_size": 32, "hidden_channels": 8}


def _numpy_weights(prior, gamma=0.5):
  """Zhang et al., Eq. 4: w = ((1-gamma) p + gamma/Q)^-1, E_p[w] = 1."""
  p = np.asarray(prior, np.float64)
  w = 1.0 / ((1 - gamma) * p + gamma / p.size)
  return w / np.sum(p * w)


def test_shipped_imagenet_prior_matches_the_313_bins_and_sums_to_one():
  table = np.loadtxt(os.path.join(RESOURCES,
                                  "colorization_prior_imagenet_313.txt"))
  bins = np.load(os.path.join(RESOURCES, "ab_bins_313.npy"))
  assert table.shape == (313, 3)
  np.testing.assert_array_equal(table[:, :2], bins)   # same bins, same order
  assert table[:, 2].sum() == pytest.approx(1.0, abs=1e-12)
  assert np.all(table[:, 2] > 0)
  prior = prior_lib.load_imagenet_prior()
  np.testing.assert_allclose(prior, table[:, 2] / table[:, 2].sum(),
                             rtol=1e-15, atol=0)
  # The README beside the file records the values' hash.
  with open(os.path.join(RESOURCES,
                         "colorization_prior_imagenet_313.README.txt")) as f:
    readme = f.read()
  digest = hashlib.sha256(table[:, 2].astype("<f8").tobytes()).hexdigest()
  assert digest in readme and "richzhang/colorization" in readme


@pytest.mark.parametrize("name", ["rp_col", "rp_col_ex_ms_lasso"])
def test_paper_configs_rebalance_with_the_imagenet_prior(name):
  config = model_zoo.preset_config(name, "paper")
  assert config.task_params["colorization"]["prior"] == "imagenet"
  task = Colorization(**config.task_kwargs("colorization"))
  imagenet = prior_lib.load_imagenet_prior()
  np.testing.assert_array_equal(task.prior, imagenet)
  assert task.gamma == 0.5
  w = task.rebalance_weights
  np.testing.assert_allclose(w, _numpy_weights(imagenet), rtol=1e-6)
  assert np.sum(imagenet * w) == pytest.approx(1.0, abs=1e-6)
  assert w.max() / w.min() > 10   # really rebalanced, not all 1


def test_prior_names_of_the_task():
  assert np.all(Colorization(prior="uniform").rebalance_weights == 1.0)
  with pytest.raises(ValueError, match="resolved by the trainer"):
    Colorization(prior="auto")


def _write_photos(folder, seeds, grey=False):
  """Small smooth colour images (blurred noise around a per-image hue)."""
  os.makedirs(folder, exist_ok=True)
  for seed in seeds:
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, 3)
    noise = rng.normal(0, 60, (12, 16, 3))
    image = np.clip(base + np.kron(noise, np.ones((4, 4, 1))), 0, 255)
    if grey:
      image = np.repeat(image.mean(-1, keepdims=True), 3, -1)
    png = tf.io.encode_png(tf.constant(image.astype(np.uint8)))
    tf.io.write_file(os.path.join(folder, f"img{seed}.png"), png)


def _config(tmp_path, folder, **col):
  return TrainConfig(
      run_dir=str(tmp_path / "run"), tasks=("colorization",),
      task_params={"colorization": dict(COL, **col)},
      trunk=TrunkConfig(depth=14, width=0.25), steps=1, batch_size=2,
      plots=False, data=DataConfig(source="folder", image_folder=folder),
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1))


def test_auto_prior_is_the_commands_prior_of_the_training_images(tmp_path):
  folder = str(tmp_path / "photos")
  _write_photos(folder, range(5))
  config = _config(tmp_path, folder)
  lines = []
  resolved = resolve_training_prior(config, log=lines.append)
  prior = np.asarray(resolved.task_params["colorization"]["prior"])
  # The existing command on the same images gives the same prior.
  out = str(tmp_path / "command.npz")
  assert prior_cli.main([f"--images={folder}", f"--output={out}"]) == 0
  bins, want = prior_lib.load_prior(out)
  np.testing.assert_allclose(prior, want, rtol=1e-9, atol=1e-15)
  # Cached in the run folder; the log names the prior and its weights.
  cache = os.path.join(config.run_dir, prior_lib.AUTO_PRIOR_FILE)
  np.testing.assert_allclose(prior_lib.load_prior(cache)[1], want, rtol=1e-9)
  w = _numpy_weights(want)
  assert len(lines) == 1 and "computed from 5 colour training images" in (
      lines[0]) and cache in lines[0]
  assert f"from {w.min():.3g} to {w.max():.3g}" in lines[0]
  # A second run in that folder (a resume) reads the cache, even if the
  # images changed meanwhile.
  _write_photos(folder, range(5, 9))
  again = []
  second = resolve_training_prior(config, log=again.append)
  np.testing.assert_array_equal(
      second.task_params["colorization"]["prior"], prior)
  assert "cached in" in again[0] and "computed from 5" not in again[0]


def test_given_prior_is_used_and_nothing_is_computed(tmp_path):
  config = _config(tmp_path, str(tmp_path / "none"), prior="imagenet")
  lines = []
  assert resolve_training_prior(config, log=lines.append) is config
  assert "ImageNet prior" in lines[0]
  w = _numpy_weights(prior_lib.load_imagenet_prior())
  assert f"from {w.min():.3g} to {w.max():.3g}" in lines[0]
  assert not os.path.exists(config.run_dir)
  uniform = _config(tmp_path, str(tmp_path / "none"), prior="uniform")
  resolve_training_prior(uniform, log=lines.append)
  assert "uniform" in lines[1] and "from 1 to 1" in lines[1]


def test_grey_training_images_ask_for_a_prior(tmp_path):
  folder = str(tmp_path / "grey")
  _write_photos(folder, range(2), grey=True)
  with pytest.raises(ValueError, match="no colour pixel.*colorization.prior"):
    resolve_training_prior(_config(tmp_path, folder),
                                     log=lambda s: None)


def test_trainer_trains_and_records_the_auto_prior(tmp_path, mirrored):
  from mtssl_tf.training.trainer import Trainer
  folder = str(tmp_path / "photos")
  _write_photos(folder, range(3))
  config = _config(tmp_path, folder)
  lines = []
  task = Colorization(**COL)
  image = tf.constant(np.full((40, 40, 3), (200, 40, 40), np.uint8))
  make = lambda i: task.preprocess({"image": image, "id": i},
                                   tf.stack([i, tf.constant(1, tf.int64)]))
  data = {"colorization": tf.data.Dataset.range(100).map(make).batch(2)}
  trainer = Trainer(config, strategy=mirrored(("/cpu:0",)), datasets=data,
                    log=lines.append)
  cached = prior_lib.load_prior(os.path.join(
      config.run_dir, prior_lib.AUTO_PRIOR_FILE))[1]
  head = trainer.model.heads["colorization"]
  np.testing.assert_allclose(head.prior, cached, rtol=1e-9)
  trainer.train()
  with open(os.path.join(config.run_dir, "config.json")) as f:
    written = json.load(f)
  np.testing.assert_allclose(
      written["task_params"]["colorization"]["prior"], cached, rtol=1e-9)
  assert any(l.startswith("colorization prior: computed") for l in lines)
