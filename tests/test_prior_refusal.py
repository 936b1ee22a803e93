"""A colorization prior computed from too little data is refused: the auto
prior of a training run and the prior command stop with one error that
names the images, the counts, the minimum and what to do, instead of
logging a "prior" of one pixel and training on."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.config import DataConfig, OptimizerConfig, TrainConfig
from mtssl_tf.data.color_statistics import (PriorSampleError,
                                            min_prior_pixels,
                                            write_prior_file)
from mtssl_tf.models.trunk import TrunkConfig
from mtssl_tf.tasks.colorization_bins import (AUTO_PRIOR_FILE,
                                              MIN_PRIOR_COLOUR_IMAGES,
                                              load_prior)
from mtssl_tf.training.auto_prior import resolve_training_prior
import harness

BINS = 313
MIN_PIXELS = min_prior_pixels(BINS)


def _colour(h, w, seed=0):
  """A saturated colour image: red to blue across, green by the seed."""
  x = np.linspace(0, 1, w)[None, :, None]
  image = np.concatenate([np.broadcast_to(220 * (1 - x), (h, w, 1)),
                          np.full((h, w, 1), 40 + 10 * seed),
                          np.broadcast_to(220 * x, (h, w, 1))], axis=-1)
  return image.astype(np.uint8)


def _grey(h, w, seed=0):
  rng = np.random.default_rng(seed)
  return np.repeat(rng.integers(0, 256, (h, w, 1)), 3, -1).astype(np.uint8)


def _write(folder, name, image):
  os.makedirs(folder, exist_ok=True)
  tf.io.write_file(os.path.join(folder, name),
                   tf.io.encode_png(tf.constant(image)))


def _write_broken(folder):
  """Three files a real folder holds beside its photos: not an image, an
  empty file and a PNG cut in half."""
  with open(os.path.join(folder, "notes.png"), "wb") as f:
    f.write(b"this is not a PNG")
  open(os.path.join(folder, "empty.jpg"), "wb").close()
  whole = tf.io.encode_png(tf.constant(_colour(32, 32))).numpy()
  with open(os.path.join(folder, "cut.png"), "wb") as f:
    f.write(whole[:len(whole) // 2])


def _config(tmp_path, folder):
  return TrainConfig(
      run_dir=str(tmp_path / "run"), tasks=("colorization",),
      task_params={"colorization": harness.tiny_params("colorization")},
      trunk=TrunkConfig(**harness.TRUNK), steps=1, batch_size=2,
      plots=False, data=DataConfig(source="folder", image_folder=folder),
      optimizer=OptimizerConfig(name="sgd", learning_rate=0.1))


def _resolve(tmp_path, folder):
  lines = []
  config = resolve_training_prior(_config(tmp_path, folder),
                                  log=lines.append)
  return config, lines


def test_one_tiny_colour_image_and_broken_files_is_refused(tmp_path):
  folder = str(tmp_path / "photos")
  _write(folder, "pixel.png", _colour(1, 1))
  _write_broken(folder)
  want = (re.escape(folder) + r".*(skipped|refused) 3 .*: 1 image sampled, "
          r"1 of them colour \(0 grey\), 1 colour pixel; a prior needs at "
          rf"least {MIN_PRIOR_COLOUR_IMAGES} colour images and {MIN_PIXELS} "
          r"colour pixels .*--colorization\.prior=imagenet.*add "
          r"colour images")
  with pytest.raises(PriorSampleError, match=want) as info:
    _resolve(tmp_path, folder)
  assert isinstance(info.value, ValueError)
  assert not os.path.exists(tmp_path / "run" / AUTO_PRIOR_FILE)


def test_grey_images_are_refused(tmp_path):
  folder = str(tmp_path / "grey")
  for i in range(4):
    _write(folder, f"g{i}.png", _grey(64, 64, seed=i))
  with pytest.raises(PriorSampleError,
                     match=r"4 images sampled, 0 of them colour \(4 grey\), "
                           r"no colour pixel; .*colorization\.prior"):
    _resolve(tmp_path, folder)


def test_enough_colour_images_give_a_prior(tmp_path):
  folder = str(tmp_path / "photos")
  for i in range(4):
    _write(folder, f"c{i}.png", _colour(40, 48, seed=i))
  _write(folder, "g.png", _grey(40, 48))
  _write_broken(folder)
  config, lines = _resolve(tmp_path, folder)
  prior = np.asarray(config.task_params["colorization"]["prior"])
  assert prior.shape == (BINS,)
  np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-9)
  assert "computed from 4 colour training images of 5 sampled" in lines[0]
  # The files that could not be read are counted in the log line.
  assert re.search(r"(skipped|refused) 3 ", lines[0]), lines[0]
  _, cached = load_prior(str(tmp_path / "run" / AUTO_PRIOR_FILE))
  np.testing.assert_allclose(cached, prior, rtol=1e-12)


def test_colour_images_at_the_minimum_pass_and_one_fewer_is_refused(
    tmp_path):
  n = MIN_PRIOR_COLOUR_IMAGES
  enough = str(tmp_path / "enough")
  fewer = str(tmp_path / "fewer")
  for i in range(n):
    _write(enough, f"c{i}.png", _colour(64, 64, seed=i))
    if i < n - 1:
      _write(fewer, f"c{i}.png", _colour(64, 64, seed=i))
  # The grey images keep the number of images (and of decoded files) the
  # same: only colour images count.
  _write(fewer, "g.png", _grey(64, 64))
  _, lines = _resolve(tmp_path / "a", enough)
  assert f"computed from {n} colour training images of {n} sampled" in (
      lines[0])
  with pytest.raises(PriorSampleError,
                     match=rf"{n} images sampled, {n - 1} of them colour "
                           r"\(1 grey\)"):
    _resolve(tmp_path / "b", fewer)


def test_colour_pixels_at_the_minimum_pass_and_one_fewer_is_refused(
    tmp_path):
  # MIN_PRIOR_COLOUR_IMAGES colour images whose sizes add up to exactly the
  # minimum number of pixels, and the same with one pixel fewer.
  n = MIN_PRIOR_COLOUR_IMAGES
  share = MIN_PIXELS // n

  def shapes(total):
    sizes = [share] * (n - 1) + [total - share * (n - 1)]
    return [(1, s) for s in sizes]   # one row: any pixel count is a shape

  for name, total in (("exact", MIN_PIXELS), ("short", MIN_PIXELS - 1)):
    for i, (h, w) in enumerate(shapes(total)):
      _write(str(tmp_path / name), f"c{i}.png", _colour(h, w, seed=i))
  _, lines = _resolve(tmp_path / "a", str(tmp_path / "exact"))
  assert f"computed from {n} colour training images" in lines[0]
  with pytest.raises(PriorSampleError,
                     match=rf"{n} of them colour \(0 grey\), "
                           rf"{MIN_PIXELS - 1} colour pixels; a prior needs "
                           rf"at least {n} colour images and {MIN_PIXELS}"):
    _resolve(tmp_path / "b", str(tmp_path / "short"))


def test_the_test_suites_offline_set_clears_the_minimum(tmp_path):
  """The tiny runs of the suite (and the zoo's small recipes) compute their
  prior from the pip-installed offline photos: they must stay above the
  minimum, or every such run would be refused."""
  config = harness.train_config(tmp_path / "run", ("colorization",))
  lines = []
  resolved = resolve_training_prior(config, log=lines.append, write=False)
  assert len(resolved.task_params["colorization"]["prior"]) == BINS
  assert "computed from" in lines[0]


def test_prior_command_skips_unreadable_files_and_refuses_too_few(tmp_path):
  folder = str(tmp_path / "photos")
  _write(folder, "pixel.png", _colour(1, 1))
  _write_broken(folder)
  out = str(tmp_path / "prior.npz")
  with pytest.raises(PriorSampleError,
                     match=re.escape(folder) + r" \(4 image files; 3 could "
                           r"not be read or decoded: .*\): 1 image sampled, "
                           r"1 of them colour .*more colour images"):
    write_prior_file(folder, out)
  assert not os.path.exists(out)
  for i in range(MIN_PRIOR_COLOUR_IMAGES):
    _write(folder, f"c{i}.png", _colour(40, 48, seed=i))
  line = write_prior_file(folder, out)
  assert "3 unreadable files skipped" in line
  assert load_prior(out)[1].shape == (BINS,)
