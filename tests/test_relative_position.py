"""Tests of the relative-position task (mtssl_tf/tasks/relative_position.py)
that are specific to it; the generic checks (registry and config, eager vs
tf.data, loss contract, .keras round trip, overfit) are in
test_task_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import harness
from mtssl_tf.tasks.relative_position import (RelativePosition,
                                              RelativePositionHead)

P, GAP, JITTER = 16, 8, 3
NEED = 3 * P + 2 * GAP + 2 * JITTER  # 70
STRIDE = P + GAP

# Reference layout, written out independently of the module:
# positions 1 2 3 / 4 _ 5 / 6 7 8 with label = position - 1.
LAYOUT = np.array([[0, 1, 2],
                   [3, -1, 4],
                   [5, 6, 7]])


def small_task(**kw):
  params = dict(patch_size=P, gap=GAP, jitter=JITTER, rescale_pixels=None,
                downsample_prob=0.0, color_mode="none", embedding_units=8,
                hidden_units=[8])
  params.update(kw)
  return RelativePosition(**params)


def coordinate_image(h, w):
  """Channel 0 holds each pixel's row, channel 1 its column."""
  rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  return np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.float32)


def random_image(h, w, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(
      np.uint8)


def seeds(n, start=0):
  return np.stack([np.arange(start, start + n), np.full(n, 7)], 1).astype(
      np.int64)


def run_dataset(task, image, seed_array):
  """preprocess inside tf.data, over the image with an unknown static shape."""
  image = np.asarray(image)
  spec = tf.TensorSpec([None, None, image.shape[-1]],
                       tf.as_dtype(image.dtype))
  images = tf.data.Dataset.from_generator(
      lambda: iter([image] * len(seed_array)), output_signature=spec)
  ds = tf.data.Dataset.zip(
      images, tf.data.Dataset.from_tensor_slices(seed_array))
  ds = ds.map(lambda im, s: task.preprocess({"image": im}, s))
  xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
  return np.stack(xs), np.array(ys)


# --- geometry ---------------------------------------------------------------


@pytest.mark.parametrize("size", [(NEED, NEED), (97, 131)])
def test_labels_match_the_real_offset(size):
  task = small_task()
  xs, ys = run_dataset(task, coordinate_image(*size), seeds(300))
  assert xs.shape == (300, 2, P, P, 3) and xs.dtype == np.float32
  assert ys.dtype == np.int32
  deviations = []
  for x, y in zip(xs, ys):
    tops = x[:, 0, 0, :2]  # (row, col) of each patch's top-left pixel
    for patch, (r, c) in zip(x, tops):
      # Each patch is a contiguous crop of the image.
      np.testing.assert_array_equal(patch[:, 0, 0], r + np.arange(P))
      np.testing.assert_array_equal(patch[0, :, 1], c + np.arange(P))
    offset = tops[1] - tops[0]
    # |deviation| <= 2 * JITTER < STRIDE / 2, so the nearest multiple of the
    # cell stride is the grid step between the two patches.
    direction = np.rint(offset / STRIDE).astype(int)
    assert np.all(np.abs(direction) <= 1) and np.any(direction != 0), offset
    assert LAYOUT[direction[0] + 1, direction[1] + 1] == y, (offset, y)
    deviation = offset - direction * STRIDE
    assert np.all(np.abs(deviation) <= 2 * JITTER), (offset, y)
    deviations.append(deviation)
  deviations = np.array(deviations)
  # Jitter is used in both directions and up to its full range.
  assert deviations.min() <= -JITTER and deviations.max() >= JITTER


def test_exact_min_size_pins_the_grid_origin():
  # In an image exactly as large as the grid needs, the grid origin is fixed
  # at (jitter, jitter), so the centre moves only by its own jitter.
  xs, _ = run_dataset(small_task(), coordinate_image(NEED, NEED), seeds(200))
  centre_tops = xs[:, 0, 0, 0, :2]
  assert centre_tops.min() == JITTER + STRIDE - JITTER
  assert centre_tops.max() == JITTER + STRIDE + JITTER


def test_label_distribution_covers_all_classes():
  _, ys = run_dataset(small_task(), random_image(80, 80), seeds(800))
  counts = np.bincount(ys, minlength=8)
  assert len(counts) == 8
  assert counts.min() > 60 and counts.max() < 140, counts


# --- determinism --------------------------------------------------------------


def test_eager_equals_tf_data_with_every_random_option():
  # The generic check (tests/harness.py) with colour dropping, downsampling,
  # rescaling and noise on: every random choice follows the seed.
  task = small_task(color_mode="drop", downsample_prob=0.5,
                    rescale_pixels=(6000, 12000), noise_std=0.05)
  image = random_image(75, 90)
  harness.check_data_op_eager_vs_tf_data(
      task, examples=[{"image": image}] * 6, seeds=seeds(6, start=11))


# --- colour handling ------------------------------------------------------------


def test_color_dropping_keeps_one_channel_and_noise_elsewhere():
  noise_std = 0.1
  drop = small_task(color_mode="drop", noise_std=noise_std)
  plain = small_task(color_mode="none")
  image = random_image(90, 90, seed=3)
  seed_array = seeds(30)
  dropped, ys_d = run_dataset(drop, image, seed_array)
  source, ys_s = run_dataset(plain, image, seed_array)
  np.testing.assert_array_equal(ys_d, ys_s)  # same geometry for a seed
  mean = np.array([123.68, 116.779, 103.939])
  kept_channels = []
  for d_pair, s_pair in zip(dropped, source):
    kept_pair = []
    for d, s in zip(d_pair, s_pair):
      equal = [np.array_equal(d[..., c], s[..., c]) for c in range(3)]
      assert sum(equal) == 1, equal
      kept = equal.index(True)
      kept_pair.append(kept)
      kept_std = s[..., kept].std()
      for c in range(3):
        if c == kept:
          continue
        noise = d[..., c]
        assert abs(noise.mean() - mean[c]) < 0.3 * noise_std * kept_std + 0.5
        np.testing.assert_allclose(noise.std(), noise_std * kept_std,
                                   rtol=0.25)
    kept_channels.append(kept_pair)
  kept_channels = np.array(kept_channels)
  assert set(kept_channels.ravel()) == {0, 1, 2}
  # The two patches of a pair choose their channel independently.
  assert np.any(kept_channels[:, 0] != kept_channels[:, 1])


def test_harmonized_gives_three_equal_channels():
  from mtssl_tf.ops.color import rgb_to_harmonized
  harm = small_task(color_mode="harmonize")
  plain = small_task(color_mode="none")
  image = random_image(80, 80, seed=5)
  for s in seeds(3):
    x, _ = harm.preprocess({"image": image}, tf.constant(s))
    src, _ = plain.preprocess({"image": image}, tf.constant(s))
    x = x.numpy()
    np.testing.assert_array_equal(x[..., 0], x[..., 1])
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    np.testing.assert_allclose(x, rgb_to_harmonized(src).numpy(), atol=1e-3)
    assert x.min() >= 0.0 and x.max() <= 255.0


# --- downsample-upsample ----------------------------------------------------------


def test_downsample_keeps_shape_and_removes_detail():
  image = random_image(80, 80, seed=2)
  always = small_task(downsample_prob=1.0)
  never = small_task(downsample_prob=0.0)
  for s in seeds(4):
    x, y = always.preprocess({"image": image}, tf.constant(s))
    ref, ref_y = never.preprocess({"image": image}, tf.constant(s))
    assert x.shape == (2, P, P, 3) and int(y) == int(ref_y)
    x, ref = x.numpy(), ref.numpy()
    for patch, source in zip(x, ref):
      assert not np.allclose(patch, source)
      # Resampling is a low-pass filter: on a noise image the total
      # variation drops.
      tv = np.abs(np.diff(patch, axis=0)).sum() + np.abs(
          np.diff(patch, axis=1)).sum()
      tv_src = np.abs(np.diff(source, axis=0)).sum() + np.abs(
          np.diff(source, axis=1)).sum()
      assert tv < 0.9 * tv_src
    assert x.min() >= 0.0 and x.max() <= 255.0


def test_downsample_preserves_a_constant_image():
  x, _ = small_task(downsample_prob=1.0).preprocess(
      {"image": np.full((80, 80, 3), 77, np.uint8)}, tf.constant([1, 2]))
  np.testing.assert_allclose(x.numpy(), 77.0, atol=1e-3)


def test_downsample_probability_is_respected():
  task = small_task(downsample_prob=0.33)
  never = small_task(downsample_prob=0.0)
  image = random_image(80, 80, seed=4)
  seed_array = seeds(300)
  xs, _ = run_dataset(task, image, seed_array)
  refs, _ = run_dataset(never, image, seed_array)
  changed = np.array([[not np.array_equal(a, b) for a, b in zip(x, r)]
                      for x, r in zip(xs, refs)])
  assert 0.25 < changed.mean() < 0.41, changed.mean()


def test_downsample_range_is_clamped_for_small_patches():
  assert RelativePosition().downsample_range == (10, 95)
  assert RelativePosition(patch_size=16).downsample_range == (10, 15)
  assert RelativePosition(patch_size=8).downsample_range == (7, 7)


# --- rescale -----------------------------------------------------------------------


def test_rescale_area_and_aspect_ratio():
  task = small_task(rescale_pixels=(20000, 30000))
  image = tf.zeros([100, 150, 3])
  areas = []
  for s in seeds(10):
    out = task.rescale_image(image, tf.constant(s))
    h, w = out.shape[0], out.shape[1]
    areas.append(h * w)
    assert 20000 * 0.98 <= h * w <= 30000 * 1.02
    assert abs(w / h - 1.5) < 0.02
  assert len(set(areas)) > 1  # the area is drawn, not fixed


def test_rescale_enlarges_until_the_grid_fits():
  # A 40x400 strip at 6000 pixels would be about 24 px tall: too small.
  task = small_task(rescale_pixels=(6000, 6000))
  out = task.rescale_image(tf.zeros([40, 400, 3]), tf.constant([0, 1]))
  assert out.shape[0] == NEED
  assert abs(out.shape[1] / out.shape[0] - 10.0) < 0.2
  x, _ = task.preprocess({"image": np.zeros((40, 400, 3), np.uint8)},
                         tf.constant([0, 1]))
  assert x.shape == (2, P, P, 3)


def test_paper_defaults():
  task = RelativePosition()
  assert (task.patch_size, task.gap, task.jitter) == (96, 48, 7)
  assert task.min_image_size == 398
  assert task.rescale_pixels == (150000, 450000)
  assert task.color_mode == "drop" and task.downsample_prob == 0.33
  x, y = task.preprocess({"image": random_image(300, 400)},
                         tf.constant([3, 4]))
  assert x.shape == (2, 96, 96, 3) and 0 <= int(y) < 8


# --- bad input ------------------------------------------------------------------------


def test_too_small_image_names_the_sizes():
  with pytest.raises(ValueError, match=r"50x69.*70x70"):
    small_task().preprocess({"image": np.zeros((50, 69, 3), np.uint8)},
                            tf.constant([1, 2]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="smaller"):
    run_dataset(small_task(), np.zeros((NEED, NEED - 1, 3), np.uint8),
                seeds(1))


def test_rgba_and_grey_are_accepted():
  task = small_task()
  rgb = random_image(80, 80, seed=8)
  rgba = np.concatenate([rgb, np.full((80, 80, 1), 9, np.uint8)], -1)
  seed = tf.constant([5, 6])
  x_rgb, y_rgb = task.preprocess({"image": rgb}, seed)
  x_rgba, y_rgba = task.preprocess({"image": rgba}, seed)
  np.testing.assert_array_equal(x_rgb.numpy(), x_rgba.numpy())
  assert int(y_rgb) == int(y_rgba)
  grey = rgb[..., 0]
  for image in (grey, grey[..., None]):
    x, _ = task.preprocess({"image": image}, seed)
    np.testing.assert_array_equal(x.numpy()[..., 1], x.numpy()[..., 0])
    np.testing.assert_array_equal(x.numpy()[..., 0], x_rgb.numpy()[..., 0])


def test_bad_dtype_rank_and_options():
  task = small_task()
  with pytest.raises(TypeError, match="int32"):
    task.preprocess({"image": np.zeros((80, 80, 3), np.int32)},
                    tf.constant([1, 2]))
  with pytest.raises(ValueError, match="one image"):
    task.preprocess({"image": np.zeros((2, 80, 80, 3), np.uint8)},
                    tf.constant([1, 2]))
  with pytest.raises(ValueError, match="'drop', 'harmonize', 'none'"):
    RelativePosition(color_mode="grey")
  with pytest.raises(ValueError, match="downsample_prob"):
    RelativePosition(downsample_prob=1.5)
  with pytest.raises(ValueError, match="rescale_pixels"):
    RelativePosition(rescale_pixels=(10, 5))


# --- task interface: batching, head, loss ----------------------------------------------


def test_trunk_images_order():
  inputs = np.random.default_rng(0).normal(size=(3, 2, 4, 4, 3)).astype(
      np.float32)
  out = small_task().trunk_images(tf.constant(inputs)).numpy()
  assert out.shape == (6, 4, 4, 3)
  for i in range(3):
    np.testing.assert_array_equal(out[2 * i], inputs[i, 0])
    np.testing.assert_array_equal(out[2 * i + 1], inputs[i, 1])
  with pytest.raises(ValueError, match=r"\[B, 2, P, P, 3\]"):
    small_task().trunk_images(tf.zeros([3, 4, 4, 3]))


def numpy_head(head, features):
  """Independent NumPy forward pass of RelativePositionHead."""
  relu = lambda v: np.maximum(v, 0)
  kernel, bias = [w.numpy() for w in head.embedding.weights]
  pooled = features.mean(axis=(1, 2))
  embedded = relu(pooled @ kernel + bias)
  x = np.concatenate([embedded[0::2], embedded[1::2]], axis=1)
  for layer in head.hidden:
    kernel, bias = [w.numpy() for w in layer.weights]
    x = relu(x @ kernel + bias)
  kernel, bias = [w.numpy() for w in head.logits.weights]
  return x @ kernel + bias


def test_head_matches_numpy_reference():
  head = RelativePositionHead(embedding_units=6, hidden_units=[5, 4])
  features = np.random.default_rng(1).normal(size=(6, 2, 3, 7)).astype(
      np.float32)
  out = head(tf.constant(features)).numpy()
  assert out.shape == (3, 8)
  np.testing.assert_allclose(out, numpy_head(head, features), rtol=1e-5,
                             atol=1e-5)
  # Order matters: swapping centre and neighbour changes the logits.
  swapped = features.reshape(3, 2, 2, 3, 7)[:, ::-1].reshape(6, 2, 3, 7)
  assert not np.allclose(head(tf.constant(swapped)).numpy(), out)
  with pytest.raises(ValueError, match="even number"):
    head(tf.zeros([3, 2, 3, 7]))


def _randomize_batch_norms(head, rng):
  for layer in [head.norm_in, head.norm_embedding] + head.norm_hidden:
    if layer is not None:
      layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32)
                         if i in (0, 3) else
                         rng.normal(size=w.shape).astype(np.float32)
                         for i, w in enumerate(layer.get_weights())])


def numpy_head_variant(head, features):
  """NumPy forward pass (inference mode) of every head option."""
  relu = lambda v: np.maximum(v, 0)

  def bn(layer, x):
    gamma, beta, mean, var = [w.numpy() for w in layer.weights]
    return (x - mean) / np.sqrt(var + layer.epsilon) * gamma + beta

  def dense(layer, norm, x):
    weights = [w.numpy() for w in layer.weights]
    y = x @ weights[0] + (weights[1] if len(weights) > 1 else 0.0)
    return relu(bn(norm, y) if norm is not None else y)

  if head.input_norm:
    features = relu(bn(head.norm_in, features))
  if head.pooling == "flatten":
    pooled = features.reshape(features.shape[0], -1)
  else:
    pooled = features.mean(axis=(1, 2))
  x = dense(head.embedding, head.norm_embedding, pooled)
  x = np.concatenate([x[0::2], x[1::2]], axis=1)
  for i, layer in enumerate(head.hidden):
    x = dense(layer, head.norm_hidden[i] if head.fc_norm else None, x)
  kernel, bias = [w.numpy() for w in head.logits.weights]
  return x @ kernel + bias


@pytest.mark.parametrize("pooling,input_norm,fc_norm", [
    ("flatten", False, False), ("mean", True, False), ("mean", False, True),
    ("flatten", True, True)])
def test_head_options_match_numpy_reference(pooling, input_norm, fc_norm):
  # Fixed initial weights: the draws would otherwise depend on the tests
  # that ran before.
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(4)
  head = RelativePositionHead(embedding_units=6, hidden_units=[5, 4],
                              pooling=pooling, input_norm=input_norm,
                              fc_norm=fc_norm)
  head.build((None, 2, 3, 7))
  _randomize_batch_norms(head, rng)
  features = rng.normal(size=(6, 2, 3, 7)).astype(np.float32)
  out = head(tf.constant(features), training=False).numpy()
  np.testing.assert_allclose(out, numpy_head_variant(head, features),
                             rtol=1e-4, atol=1e-4)
  if pooling == "flatten":
    # The embedding reads every position: h * w * C inputs, and moving one
    # position's features (same mean) changes the output.
    assert head.embedding.kernel.shape == (2 * 3 * 7, 6)
    # (Compared before the ReLUs: with batch-norm statistics this random,
    # every ReLU of the tiny head can be dead and the output 0 for any
    # input.)
    rolled = np.roll(features, 1, axis=2)
    flat = lambda x: tf.constant(x.reshape(len(x), -1))  # noqa: E731
    assert not np.allclose(head.embedding(flat(rolled)),
                           head.embedding(flat(features)))
  if fc_norm:
    # Batch norm before each ReLU: the dense layers carry no bias.
    assert len(head.embedding.weights) == 1
  config = head.get_config()
  assert (config["pooling"], config["input_norm"], config["fc_norm"]) == (
      pooling, input_norm, fc_norm)


def test_flatten_head_needs_static_spatial_size_and_bad_pooling_is_clear():
  head = RelativePositionHead(embedding_units=6, hidden_units=[5],
                              pooling="flatten")
  with pytest.raises(ValueError, match="spatial size at build time"):
    head.build((None, None, None, 7))
  with pytest.raises(ValueError, match="unknown pooling 'max'"):
    RelativePositionHead(embedding_units=6, hidden_units=[5], pooling="max")
  with pytest.raises(ValueError, match="allowed values: 'mean', 'flatten'"):
    small_task(pooling="sum")


def test_multitask_model_builds_a_flatten_head_from_the_patch_size():
  from mtssl_tf.models.multitask import MultiTaskModel  # pylint: disable=g-import-not-at-top
  model = MultiTaskModel(
      trunk={"depth": 14, "width": 0.25},
      tasks={"relative_position": small_task(
          patch_size=32, pooling="flatten", fc_norm=True,
          input_norm=True).get_config()})
  head = model.heads["relative_position"]
  channels = model.trunk.output_channels
  # Output stride 16 at 32 px: a 2x2 map per patch.
  assert head.embedding.kernel.shape == (2 * 2 * channels, 8)
  inputs = tf.zeros([2, 2, 32, 32, 3])
  assert model(inputs, task="relative_position").shape == (2, 8)


def test_loss_and_metrics_against_numpy():
  task = small_task()
  logits = np.random.default_rng(3).normal(size=(5, 8)).astype(np.float32)
  labels = np.array([0, 7, 3, 3, 5], np.int32)
  loss = task.loss(tf.constant(labels), tf.constant(logits)).numpy()
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  np.testing.assert_allclose(loss, -log_probs[np.arange(5), labels],
                             rtol=1e-5)
  assert loss.shape == (5,)
  accuracy = task.metrics(tf.constant(labels), tf.constant(logits))["accuracy"]
  np.testing.assert_allclose(float(accuracy),
                             np.mean(logits.argmax(1) == labels))


# --- image symmetries (augment) -------------------------------------------------


def _symmetries(image):
  """The 8 symmetries of the square applied to ``image`` [H, W, C], written
  with NumPy only: (name, transformed image)."""
  out = []
  for k in range(4):
    turned = np.rot90(image, k, axes=(0, 1))
    out.append((f"rot{90 * k}", turned))
    out.append((f"rot{90 * k}+mirror", turned[:, ::-1]))
  return out


def _find_pair(x, y, candidates):
  """Names of the symmetries in which both patches of ``x`` are exact crops,
  the neighbour one grid step from the centre in the direction of label
  ``y`` (gap 0 and jitter 0, so the step is exactly the patch size)."""
  dr, dc = [(r - 1, c - 1) for r in range(3) for c in range(3)
            if LAYOUT[r, c] == y][0]
  found = []
  for name, img in candidates:
    # The coordinate channels make every P x P crop unique: locate the
    # centre by its top-left pixel.
    hits = np.argwhere((img[..., 0] == x[0, 0, 0, 0])
                       & (img[..., 1] == x[0, 0, 0, 1]))
    for r, c in hits:
      rr, cc = r + dr * P, c + dc * P
      if (r + P <= img.shape[0] and c + P <= img.shape[1]
          and 0 <= rr and 0 <= cc and rr + P <= img.shape[0]
          and cc + P <= img.shape[1]
          and np.array_equal(img[r:r + P, c:c + P], x[0])
          and np.array_equal(img[rr:rr + P, cc:cc + P], x[1])):
        found.append(name)
  return found


@pytest.mark.parametrize("augment,allowed", [
    ("none", {"rot0"}),
    ("flip", {"rot0", "rot0+mirror"}),
    ("dihedral", None),
])
def test_augment_labels_follow_the_transformed_image(augment, allowed):
  # A non-square coordinate image: every symmetry gives a different picture,
  # and the label must be the neighbour's direction in the picture the grid
  # was placed in.
  task = small_task(gap=0, jitter=0, augment=augment)
  image = coordinate_image(61, 55)
  image[..., 2] = (image[..., 0] * 7 + image[..., 1] * 3) % 251
  candidates = _symmetries(image)
  xs, ys = run_dataset(task, image, seeds(160))
  used = []
  for x, y in zip(xs, ys):
    names = _find_pair(x, y, candidates)
    assert len(names) == 1, (y, names)
    used.append(names[0])
  counts = {n: used.count(n) for n in set(used)}
  if allowed is not None:
    assert set(counts) == allowed, counts
  else:
    # All 8 symmetries, each about 1/8 of the time (160 draws: 20 expected;
    # a binomial count below 6 or above 38 has probability < 1e-4).
    assert len(counts) == 8, counts
    assert min(counts.values()) >= 6 and max(counts.values()) <= 38, counts
  if augment == "flip":
    assert 50 <= counts["rot0+mirror"] <= 110, counts


def test_augment_none_leaves_the_pairs_of_a_seed_unchanged():
  # augment draws from its own random stream: turning it on or off does not
  # move the patches of unaugmented examples.
  image = random_image(80, 80)
  a, ya = run_dataset(small_task(), image, seeds(20))
  b, yb = run_dataset(small_task(augment="none"), image, seeds(20))
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(ya, yb)


def test_unknown_augment_is_clear():
  with pytest.raises(ValueError, match="unknown augment 'rot'.*'dihedral'"):
    small_task(augment="rot")
