"""Tests of the colorization task, its head, prior and prior command that
are specific to it; the generic checks (registry, eager vs tf.data, loss
contract, .keras round trip, overfit) are in test_task_contract.py."""
import json
import warnings

import numpy as np
import pytest
import tensorflow as tf
from skimage import color as skcolor
from skimage import data as skdata

import harness
from mtssl_tf import colorization_prior as prior_cli
from mtssl_tf.tasks import colorization_bins as prior_lib
from mtssl_tf.ops import color
from mtssl_tf.tasks import colorization as col

BINS = prior_lib.load_ab_bins_313()


# -- NumPy references ---------------------------------------------------------

def np_soft_encode(ab, bins, k, sigma):
  flat = ab.reshape(-1, 2).astype(np.float64)
  out = np.zeros((len(flat), len(bins)))
  for i, v in enumerate(flat):
    d2 = ((bins - v) ** 2).sum(-1)
    nearest = np.argsort(d2)[:k]
    g = np.exp(-d2[nearest] / (2 * sigma ** 2))
    out[i, nearest] = g / g.sum()
  return out.reshape(ab.shape[:-1] + (len(bins),))


def np_weights(prior, gamma):
  prior = prior / prior.sum()
  w = 1.0 / ((1 - gamma) * prior + gamma / len(prior))
  return w / (prior * w).sum()


def np_block_mean(x, factor):
  b, h, w, c = x.shape
  return x.reshape(b, h // factor, factor, w // factor, factor, c).mean((2, 4))


def np_loss(targets, logits, bins, k, sigma, weights, grey_mask, threshold):
  factor = targets.shape[1] // logits.shape[1]
  ab = np_block_mean(targets.astype(np.float64), factor)
  z = np_soft_encode(ab, bins, k, sigma)
  logits = logits.astype(np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
      -1, keepdims=True)) - logits.max(-1, keepdims=True)
  ce = -(z * logp).sum(-1)
  nearest = np.argmin(((ab[..., None, :] - bins) ** 2).sum(-1), axis=-1)
  if grey_mask == "image":
    mask = np.any(np.abs(targets) > threshold, axis=(1, 2, 3))
    mask = np.broadcast_to(mask[:, None, None], ce.shape)
  elif grey_mask == "pixel":
    mask = np.any(np.abs(ab) > threshold, axis=-1)
  else:
    mask = np.ones(ce.shape, bool)
  return (ce * weights[nearest] * mask).mean((1, 2))


# -- soft encoding, weights, prior ------------------------------------------

@pytest.mark.parametrize("k,sigma", [(5, 5.0), (10, 5.0), (3, 10.0)])
def test_soft_encode_matches_numpy(rng, k, sigma):
  ab = rng.uniform(-100, 100, size=(4, 3, 2)).astype(np.float32)
  ours = col.soft_encode(ab, BINS, k, sigma).numpy()
  ref = np_soft_encode(ab, BINS, k, sigma)
  assert ours.shape == (4, 3, 313)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  np.testing.assert_allclose(ours.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal((ours > 0).sum(-1), k)


def test_soft_encode_one_neighbour_is_nearest_bin_and_far_values(rng):
  ab = rng.uniform(-110, 110, size=(50, 2)).astype(np.float32)
  one_hot = col.soft_encode(ab, BINS, num_neighbors=1).numpy()
  nearest = np.argmin(((ab[:, None] - BINS) ** 2).sum(-1), -1)
  np.testing.assert_array_equal(one_hot.argmax(-1), nearest)
  # Which bin is nonzero is exact; its weight is a one-logit softmax, which
  # Eigen kernels give as 0.99999994 (one float32 ulp below 1).
  np.testing.assert_array_equal(np.count_nonzero(one_hot, axis=-1), 1)
  np.testing.assert_allclose(one_hot.max(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(col.nearest_bin(ab, BINS).numpy(), nearest)
  # Far outside the bins: still a valid distribution, not NaN or all 0.
  far = col.soft_encode(np.array([[300.0, -300.0]], np.float32)).numpy()
  np.testing.assert_allclose(far.sum(), 1.0, atol=1e-5)


def test_rebalancing_weights_match_numpy(rng):
  prior = rng.dirichlet(np.ones(313) * 0.3)
  prior[:20] = 0.0  # bins never seen
  for gamma in (0.5, 0.2, 1.0):
    w = prior_lib.rebalancing_weights(prior, gamma)
    p = prior / prior.sum()
    np.testing.assert_allclose(w, np_weights(prior, gamma), rtol=1e-5)
    np.testing.assert_allclose((p * w).sum(), 1.0, rtol=1e-5)
  # Rarer colours weigh more; uniform prior or gamma=1: no rebalancing.
  w = prior_lib.rebalancing_weights(prior, 0.5)
  assert np.all(np.diff(w[np.argsort(prior)]) <= 1e-6)
  np.testing.assert_allclose(
      prior_lib.rebalancing_weights(np.ones(313), 0.5), 1.0, rtol=1e-6)
  np.testing.assert_allclose(prior_lib.rebalancing_weights(prior, 1.0), 1.0,
                             rtol=1e-6)
  with pytest.raises(ValueError, match="gamma"):
    prior_lib.rebalancing_weights(prior, 1.5)
  with pytest.raises(ValueError, match="non-negative"):
    prior_lib.rebalancing_weights(-prior, 0.5)


def test_smooth_prior_gaussian_spread():
  delta = np.zeros(313)
  centre = int(np.flatnonzero((BINS == [0, 0]).all(1))[0])
  delta[centre] = 1.0
  smoothed = prior_lib.smooth_prior(delta, BINS, sigma=5.0)
  np.testing.assert_allclose(smoothed.sum(), 1.0)
  # Relative mass follows the Gaussian of the distance to the source bin.
  bins = BINS.astype(np.float64)
  d2 = ((bins - bins[centre]) ** 2).sum(-1)
  np.testing.assert_allclose(smoothed / smoothed[centre],
                             np.exp(-d2 / 50.0), rtol=1e-9, atol=1e-300)
  np.testing.assert_allclose(prior_lib.smooth_prior(delta, BINS, 0.0), delta)


def _small_skimage_images():
  # Downsampled so that the NumPy reference stays fast; camera() is grey.
  return [skdata.astronaut()[::8, ::8], skdata.coffee()[::8, ::8],
          skdata.chelsea()[::6, ::6], skdata.camera()[::8, ::8]]


def _reference_counts(images, bins, threshold=5.0):
  counts = np.zeros(len(bins))
  grey = 0
  for image in images:
    ab = color.rgb_to_lab(
        np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
    ).numpy()[..., 1:].reshape(-1, 2)
    if not np.any(np.abs(ab) > threshold):
      grey += 1
      continue
    nearest = np.argmin(((ab[:, None] - bins) ** 2).sum(-1), -1)
    counts += np.bincount(nearest, minlength=len(bins))
  return counts, grey


def test_compute_prior_matches_numpy_reference():
  images = _small_skimage_images()
  counts, grey = _reference_counts(images, BINS)
  assert grey == 1
  kernel = np.exp(-((BINS[:, None] - BINS[None]) ** 2).sum(-1) / 50.0)
  ref = (kernel / kernel.sum(0)) @ (counts / counts.sum())
  hist = prior_lib.ab_histogram(iter(images))
  assert (hist.num_images, hist.num_grey_images) == (4, 1)
  assert hist.num_pixels == counts.sum()
  raw = prior_lib.bin_counts(hist, BINS)
  # Pixels within 0.71 ab units of a bin boundary may move (1-unit cells).
  assert np.abs(raw - counts).sum() <= 0.01 * counts.sum()
  ours = prior_lib.compute_prior(tf.data.Dataset.from_generator(
      lambda: ({"image": im} for im in images[:3]),
      output_signature={"image": tf.TensorSpec([None, None, 3], tf.uint8)}))
  assert np.abs(ours - ref).sum() < 0.01
  # Natural photos: the most likely bin is a low-saturation one.
  assert np.hypot(*BINS[np.argmax(ours)]) <= 20


def test_grey_pixel_mode_and_errors():
  images = _small_skimage_images()[:1]
  all_pixels = prior_lib.ab_histogram(images, grey_mask="none").num_pixels
  colour = prior_lib.ab_histogram(images, grey_mask="pixel")
  ab = color.rgb_to_lab(images[0]).numpy()[..., 1:]
  assert all_pixels == ab.shape[0] * ab.shape[1]
  assert colour.num_pixels == np.any(np.abs(ab) > 5.0, -1).sum()
  grey_only = prior_lib.ab_histogram([skdata.camera()[::16, ::16]])
  with pytest.raises(ValueError, match="no colour pixels"):
    prior_lib.prior_from_histogram(grey_only, BINS)
  with pytest.raises(ValueError, match="grey_mask"):
    prior_lib.ab_histogram(images, grey_mask="some")


def test_derive_bins_matches_numpy():
  images = _small_skimage_images()[:3]
  ab = np.concatenate([color.rgb_to_lab(im).numpy()[..., 1:].reshape(-1, 2)
                       for im in images])
  # The nearest grid point, halves rounded up (as the histogram's 1-unit
  # cells do), in float64: the bins then follow from the same ab values
  # exactly, whatever their last float32 bits on this machine's kernels.
  grid = np.floor(ab.astype(np.float64) / 10.0 + 0.5).astype(int)
  cells, counts = np.unique(grid, axis=0, return_counts=True)
  hist = prior_lib.ab_histogram(images)
  derived = prior_lib.derive_bins(hist)
  np.testing.assert_array_equal(derived, cells * 10)
  np.testing.assert_array_equal(prior_lib.derive_bins(hist, min_count=20),
                                cells[counts >= 20] * 10)


def test_prior_command_on_real_images(tmp_path):
  import skimage.io
  folder = tmp_path / "images"
  folder.mkdir()
  for name in ("astronaut", "coffee", "chelsea", "camera"):
    skimage.io.imsave(str(folder / f"{name}.png"),
                      getattr(skdata, name)()[::4, ::4], check_contrast=False)
  out313 = str(tmp_path / "prior.npz")
  assert prior_cli.main([f"--images={folder}", f"--output={out313}"]) == 0
  bins, prior = prior_lib.load_prior(out313)
  np.testing.assert_array_equal(bins, BINS)
  np.testing.assert_allclose(prior.sum(), 1.0)
  with np.load(out313) as saved:
    assert int(saved["num_images"]) == 4 and int(saved["num_grey_images"]) == 1
    counts = saved["counts"]
  ref_counts, _ = _reference_counts(
      [getattr(skdata, n)()[::4, ::4] for n in ("astronaut", "coffee",
                                                 "chelsea", "camera")], BINS)
  assert np.abs(counts - ref_counts).sum() <= 0.01 * ref_counts.sum()

  out_derived = str(tmp_path / "derived.npz")
  assert prior_cli.main([f"--images={folder}/*.png",
                         f"--output={out_derived}", "--derive_bins"]) == 0
  dbins, dprior = prior_lib.load_prior(out_derived)
  assert 2 <= len(dbins) < 313
  np.testing.assert_array_equal(np.mod(dbins, 10), 0)
  # The task reads the file: bins and prior both come from it.
  task = col.Colorization(crop_size=32, prior=out_derived)
  assert task.num_bins == len(dbins)
  np.testing.assert_allclose(task.prior, dprior)
  assert task.build_head().num_bins == len(dbins)
  with pytest.raises(ValueError, match="other ab bins"):
    col.Colorization(crop_size=32, prior=out_derived, bins=BINS)
  with pytest.raises(SystemExit, match="no images"):
    prior_cli.main([f"--images={tmp_path}/nothing/*.jpg", "--output=x.npz"])


def test_load_prior_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="not found"):
    prior_lib.load_prior(str(tmp_path / "missing.npz"))
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, something=np.zeros(3))
  with pytest.raises(ValueError, match="not a colorization prior"):
    prior_lib.load_prior(bad)
  with pytest.raises(ValueError, match="shape"):
    prior_lib.save_prior(bad, BINS, np.ones(10))


# -- the task's data op -------------------------------------------------------

def _find_offset(big, small):
  """(y, x) where ``small`` sits inside ``big`` (up to float noise)."""
  hits = [(y, x)
          for y in range(big.shape[0] - small.shape[0] + 1)
          for x in range(big.shape[1] - small.shape[1] + 1)
          if np.allclose(big[y:y + small.shape[0], x:x + small.shape[1]],
                         small, atol=1e-2)]
  return hits


def test_preprocess_is_a_crop_of_harmonized_and_ab(rng):
  image = rng.integers(0, 256, size=(40, 48, 3)).astype(np.uint8)
  task = col.Colorization(crop_size=32, flip=False)
  inputs, targets = task.preprocess({"image": image}, tf.constant([3, 4]))
  assert inputs.shape == (32, 32, 3) and targets.shape == (32, 32, 2)
  assert inputs.dtype == tf.float32 and targets.dtype == tf.float32
  inputs, targets = inputs.numpy(), targets.numpy()
  np.testing.assert_array_equal(inputs[..., 0], inputs[..., 2])
  lab = skcolor.rgb2lab(image)
  hits = _find_offset(lab[..., 0] * 2.55, inputs[..., 0])
  assert len(hits) == 1
  y, x = hits[0]
  np.testing.assert_allclose(targets, lab[y:y + 32, x:x + 32, 1:], atol=0.5)


def test_preprocess_flip_and_seeds(rng):
  image = rng.uniform(0, 255, size=(36, 36, 3)).astype(np.float32)
  task = col.Colorization(crop_size=36, flip=True)
  harm = color.rgb_to_harmonized(image).numpy()
  flipped = seen = 0
  for s in range(8):
    inputs, _ = task.preprocess({"image": image}, tf.constant([s, 7]))
    inputs = inputs.numpy()
    if np.allclose(inputs, harm[:, ::-1], atol=1e-3):
      flipped += 1
    else:
      np.testing.assert_allclose(inputs, harm, atol=1e-3)
    seen += 1
  assert 0 < flipped < seen
  big = rng.uniform(0, 255, size=(64, 64, 3)).astype(np.float32)
  a = task.preprocess({"image": big}, tf.constant([1, 2]))[0].numpy()
  b = task.preprocess({"image": big}, tf.constant([1, 2]))[0].numpy()
  c = task.preprocess({"image": big}, tf.constant([2, 2]))[0].numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_preprocess_grey_rgba_and_bad_input(rng):
  task = col.Colorization(crop_size=16, flip=False)
  seed = tf.constant([0, 1])
  grey = rng.integers(0, 256, size=(16, 16)).astype(np.uint8)
  for g in (grey, grey[..., None]):
    inputs, targets = task.preprocess({"image": g}, seed)
    np.testing.assert_allclose(targets.numpy(), 0.0, atol=0.05)
    np.testing.assert_allclose(
        inputs.numpy()[..., 0], skcolor.rgb2lab(
            np.repeat(grey[..., None], 3, -1))[..., 0] * 2.55, atol=1.3)
  rgb = rng.integers(0, 256, size=(16, 16, 3)).astype(np.uint8)
  rgba = np.concatenate([rgb, np.full((16, 16, 1), 7, np.uint8)], -1)
  for x, y in zip(task.preprocess({"image": rgba}, seed),
                  task.preprocess({"image": rgb}, seed)):
    np.testing.assert_array_equal(x.numpy(), y.numpy())
  with pytest.raises(ValueError, match="smaller than colorization"):
    task.preprocess({"image": np.zeros((15, 40, 3), np.uint8)}, seed)
  with pytest.raises(TypeError, match="int32"):
    task.preprocess({"image": np.zeros((16, 16, 3), np.int32)}, seed)
  with pytest.raises(ValueError, match="channels"):
    task.preprocess({"image": np.zeros((16, 16, 2), np.uint8)}, seed)
  with pytest.raises(KeyError, match="image"):
    task.preprocess({"frame": rgb}, seed)
  with pytest.raises(TypeError, match="seed"):
    task.preprocess({"image": rgb}, tf.constant([0.5, 1.0]))
  # Unknown size inside tf.data: the run-time check names the problem.
  ds = tf.data.Dataset.from_generator(
      lambda: iter([np.zeros((10, 20, 3), np.uint8)]),
      output_signature=tf.TensorSpec([None, None, 3], tf.uint8)).map(
          lambda im: task.preprocess({"image": im}, tf.constant([0, 1])))
  with pytest.raises(tf.errors.InvalidArgumentError, match="colorization"):
    next(iter(ds))


# -- head -----------------------------------------------------------------------

def test_head_shapes_and_save_load_keep_the_prior(tmp_path, rng):
  prior = rng.dirichlet(np.ones(313))
  task = col.Colorization(crop_size=32, hidden_channels=8, prior=prior)
  features = rng.normal(size=(2, 2, 3, 16)).astype(np.float32)
  assert tuple(task.build_head()(features).shape) == (2, 2, 3, 313)
  # The generic round trip (tests/harness.py), with a prior that is not the
  # uniform default: the reloaded head holds the same prior and bins.
  _, loaded, _ = harness.check_head_save_load_roundtrip(
      "colorization", tmp_path, params=harness.tiny_params(
          "colorization", prior=prior.tolist()))
  loaded_head = loaded.heads["colorization"]
  assert isinstance(loaded_head, col.ColorizationHead)
  np.testing.assert_allclose(loaded_head.prior, task.prior)
  np.testing.assert_array_equal(loaded_head.bins, BINS)
  json.dumps(loaded_head.get_config())


def test_head_without_hidden_conv_and_custom_bins(rng):
  bins = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
  head = col.ColorizationHead(num_bins=3, hidden_channels=0,
                              ab_bins=bins.tolist())
  out = head(rng.normal(size=(1, 4, 4, 5)).astype(np.float32))
  assert tuple(out.shape) == (1, 4, 4, 3)
  assert len(head.trainable_weights) == 4  # BN gamma/beta, conv kernel/bias
  clone = col.ColorizationHead.from_config(head.get_config())
  np.testing.assert_array_equal(clone.bins, bins)
  with pytest.raises(ValueError, match="num_bins"):
    col.ColorizationHead(num_bins=4, ab_bins=bins.tolist())


# -- loss and metrics -----------------------------------------------------------

@pytest.mark.parametrize("grey_mask", ["image", "pixel", "none"])
def test_loss_matches_numpy(rng, grey_mask):
  prior = rng.dirichlet(np.ones(313) * 0.5)
  task = col.Colorization(crop_size=16, prior=prior, grey_mask=grey_mask,
                          num_neighbors=5, sigma=5.0, gamma=0.5)
  targets = rng.uniform(-60, 60, size=(3, 16, 16, 2)).astype(np.float32)
  targets[1] = rng.uniform(-3, 3, size=(16, 16, 2))   # a grey image
  targets[2, :8, :8] = 1.0                            # a grey quarter
  logits = rng.normal(size=(3, 2, 2, 313)).astype(np.float32) * 3
  ours = task.loss(tf.constant(targets), tf.constant(logits)).numpy()
  ref = np_loss(targets, logits, BINS, 5, 5.0, np_weights(prior, 0.5),
                grey_mask, 5.0)
  assert ours.shape == (3,)
  np.testing.assert_allclose(ours, ref, rtol=1e-4)
  if grey_mask == "image":
    assert ours[1] == 0.0 and ours[0] > 0 and ours[2] > 0
  if grey_mask == "pixel":
    assert ours[1] == 0.0


def test_loss_in_tf_function_and_gradient(rng):
  task = col.Colorization(crop_size=16)
  targets = tf.constant(rng.uniform(-50, 50, size=(2, 16, 16, 2)),
                        tf.float32)
  logits = tf.Variable(rng.normal(size=(2, 1, 1, 313)).astype(np.float32))

  @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2])])
  def step(t):
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(task.loss(t, logits))
    return loss, tape.gradient(loss, logits)

  loss, grad = step(targets)
  np.testing.assert_allclose(loss.numpy(), task.loss(targets, logits).numpy()
                             .sum(), rtol=1e-5)
  # d(CE)/d(logits) = w * (softmax - z): sums to 0 over the bins.
  assert np.all(np.isfinite(grad.numpy()))
  np.testing.assert_allclose(grad.numpy().sum(-1), 0.0, atol=1e-5)
  with pytest.raises(ValueError, match="logits"):
    task.loss(targets, tf.zeros([2, 1, 1, 10]))
  with pytest.raises(ValueError, match="targets"):
    task.loss(tf.zeros([2, 16, 16, 3]), logits)


def test_bin_accuracy(rng):
  task = col.Colorization(crop_size=8, grey_mask="pixel")
  targets = rng.uniform(-80, 80, size=(2, 8, 8, 2)).astype(np.float32)
  targets[0, :4, :4] = 0.0  # one grey position of the 2x2 map
  ab = np_block_mean(targets, 4)
  truth = np.argmin(((ab[..., None, :] - BINS) ** 2).sum(-1), -1)
  logits = rng.normal(size=(2, 2, 2, 313)).astype(np.float32)
  # Make 3 of the 7 colour positions right.
  for b, y, x in [(0, 0, 1), (1, 0, 0), (1, 1, 1)]:
    logits[b, y, x, truth[b, y, x]] = 100.0
  logits[0, 0, 0, truth[0, 0, 0]] = 100.0  # masked: does not count
  acc = task.metrics(tf.constant(targets), tf.constant(logits))
  np.testing.assert_allclose(acc["bin_accuracy"].numpy(), 3 / 7, rtol=1e-6)


# -- decoding -------------------------------------------------------------------

def test_decode_annealed_mean(rng):
  idx = rng.integers(0, 313, size=(5,))
  one_hot = np.full((5, 313), -50.0, np.float32)
  one_hot[np.arange(5), idx] = 50.0
  np.testing.assert_allclose(col.decode_annealed_mean(one_hot).numpy(),
                             BINS[idx], atol=1e-3)
  logits = rng.normal(size=(3, 4, 313)).astype(np.float32)
  for t in (1.0, 0.38):
    p = np.exp(logits / t - (logits / t).max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        col.decode_annealed_mean(logits, BINS, t).numpy(), p @ BINS,
        atol=1e-3)
  with pytest.raises(ValueError, match="temperature"):
    col.decode_annealed_mean(logits, BINS, 0.0)
  with pytest.raises(ValueError, match="313"):
    col.decode_annealed_mean(logits[..., :10], BINS)


def test_colorize_gives_the_predicted_colour(rng):
  task = col.Colorization(crop_size=32)
  lightness = rng.uniform(30, 80, size=(2, 32, 32)).astype(np.float32)
  harmonized = color.lightness_to_harmonized(lightness)
  idx = np.array([100, 200])
  logits = np.full((2, 2, 2, 313), -50.0, np.float32)
  logits[0, ..., idx[0]] = 50.0
  logits[1, ..., idx[1]] = 50.0
  rgb = task.colorize(harmonized, logits).numpy()
  assert rgb.shape == (2, 32, 32, 3)
  lab = np.concatenate(
      [lightness[..., None],
       np.broadcast_to(BINS[idx][:, None, None], (2, 32, 32, 2))], -1)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # skimage: values clipped
    ref = 255 * skcolor.lab2rgb(lab.astype(np.float64))
  np.testing.assert_allclose(rgb, ref, atol=0.5)
  single = task.colorize(harmonized[0], logits[0]).numpy()
  np.testing.assert_allclose(single, rgb[0], atol=1e-4)
  with pytest.raises(ValueError, match="batched"):
    task.colorize(harmonized, logits[0])


# -- config ------------------------------------------------------

def test_config_with_a_prior_defaults_and_bad_arguments(rng):
  task = col.Colorization(crop_size=48, num_neighbors=7,
                          prior=rng.dirichlet(np.ones(313)), gamma=0.3)
  config = json.loads(json.dumps(task.get_config()))
  clone = col.Colorization.from_config(config)
  assert clone.get_config() == task.get_config()
  np.testing.assert_allclose(clone.rebalance_weights, task.rebalance_weights)
  assert "<313 values>" in repr(task)
  defaults = col.Colorization()
  assert (defaults.crop_size, defaults.num_neighbors, defaults.sigma,
          defaults.gamma, defaults.temperature) == (224, 5, 5.0, 0.5, 0.38)
  np.testing.assert_allclose(defaults.rebalance_weights, 1.0, rtol=1e-6)
  for bad, message in [
      (dict(grey_mask="x"), r"grey_mask must be one of .*got 'x'"),
      (dict(crop_size=0), "crop_size must be a positive int, got 0"),
      (dict(num_neighbors=0), r"num_neighbors must be in \[1, 313\], got 0"),
      (dict(prior=np.ones(5)), r"prior must have shape \[313\].*got \(5,\)"),
      (dict(target_resize="cubic"),
       "target_resize must be 'area' or 'nearest', got 'cubic'")]:
    with pytest.raises(ValueError, match=message):
      col.Colorization(**bad)
