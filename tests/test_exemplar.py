"""Exemplar task: augmentations, ids, head, loss (1 vs 2 replicas), errors;
the generic checks (registry, eager vs tf.data, loss contract, .keras round
trip, overfit) are in test_task_contract.py."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.ops import losses
from mtssl_tf.tasks.exemplar import (Exemplar, ExemplarHead, example_id,
                                     similarity_transforms, warp_views)

S = 32  # view size used by the tests
K = 4   # views per image


def _task(**kwargs):
  params = dict(num_views=K, crop_size=S, embedding_dim=16)
  params.update(kwargs)
  return Exemplar(**params)


def _colour_image(h=48, w=64, seed=0):
  """A smooth, saturated image: random colours on a coarse grid, upsampled."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
  return tf.image.resize(coarse[None], [h, w])[0].numpy()


_NO_JITTER = dict(scale_range=(1.0, 1.0), max_rotation_degrees=0.0,
                  max_translation=0.0, brightness_jitter=0.0,
                  contrast_jitter=0.0, saturation_jitter=0.0, hue_jitter=0.0,
                  grey_prob=0.0)


def _is_grey(views):
  return np.all(np.abs(views - views[..., :1]) < 1e-3, axis=(-3, -2, -1))


# -- config -------------------------------------------------

def test_paper_defaults():
  defaults = Exemplar().get_config()
  assert defaults["num_views"] == 8 and defaults["embedding_dim"] == 1000
  assert defaults["margin"] == 0.5 and defaults["grey_prob"] == 0.66
  assert defaults["scale_range"] == [0.7, 1.4]
  assert defaults["max_rotation_degrees"] == 20.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_views=1), "num_views"), (dict(crop_size=8), "crop_size"),
    (dict(embedding_dim=0), "embedding_dim"), (dict(margin=0.0), "margin"),
    (dict(scale_range=(1.4, 0.7)), "scale_range"),
    (dict(grey_prob=1.5), "grey_prob"), (dict(hue_jitter=0.7), "hue_jitter"),
    (dict(region_fraction=0.0), "region_fraction"),
    (dict(contrast_jitter=-0.1), "contrast_jitter"),
])
def test_bad_constructor_args(kwargs, match):
  with pytest.raises(ValueError, match=match):
    Exemplar(**kwargs)


# -- geometry ------------------------------------------------------------

def test_warp_identity_crop_matches_numpy_slice():
  img = _colour_image(40, 50)
  x0, y0 = 7, 5
  center = [[x0 + (S - 1) / 2, y0 + (S - 1) / 2]]
  t = similarity_transforms(tf.constant(center), [1.0], [0.0], S)
  view = warp_views(tf.constant(img), t, S)[0].numpy()
  np.testing.assert_allclose(view, img[y0:y0 + S, x0:x0 + S], atol=1e-3)


def test_warp_step_two_subsamples():
  img = _colour_image(80, 80)
  x0, y0 = 3, 10
  # Output pixel i samples input x0 + 2 i: centre = x0 + 2 (S - 1) / 2.
  center = [[x0 + (S - 1), y0 + (S - 1)]]
  t = similarity_transforms(tf.constant(center, tf.float32), [2.0], [0.0], S)
  view = warp_views(tf.constant(img), t, S)[0].numpy()
  np.testing.assert_allclose(view, img[y0:y0 + 2 * S:2, x0:x0 + 2 * S:2],
                             atol=1e-3)


def test_warp_quarter_turn_is_rot90():
  img = _colour_image(S, S)
  c = (S - 1) / 2
  t = similarity_transforms(tf.constant([[c, c]]), [1.0], [np.pi / 2], S)
  view = warp_views(tf.constant(img), t, S)[0].numpy()
  np.testing.assert_allclose(view, np.rot90(img), atol=1e-2)


def test_without_jitter_views_are_the_seed_region():
  # Image as large as a view and region_fraction 1: the region is the image.
  img = _colour_image(S, S)
  task = _task(region_fraction=1.0, **_NO_JITTER)
  views, _ = task.preprocess({"image": img}, tf.constant([3, 4]))
  for view in views.numpy():
    np.testing.assert_allclose(view, img, atol=1e-2)


def test_always_grey_views_are_the_luma():
  img = _colour_image(S, S)
  params = dict(_NO_JITTER, grey_prob=1.0)
  views, _ = _task(region_fraction=1.0, **params).preprocess(
      {"image": img}, tf.constant([0, 1]))
  luma = img @ np.array([0.2989, 0.5870, 0.1140], np.float32)
  for view in views.numpy():
    np.testing.assert_allclose(view, np.repeat(luma[..., None], 3, -1),
                               atol=1e-2)


# -- augmentation output -------------------------------------------------

def test_views_shape_dtype_range_and_diversity():
  task = _task()
  views, image_id = task.preprocess({"image": _colour_image()},
                                    tf.constant([5, 6]))
  assert views.shape == (K, S, S, 3) and views.dtype == tf.float32
  assert image_id.shape == () and image_id.dtype == tf.int64
  v = views.numpy()
  assert v.min() >= 0.0 and v.max() <= 255.0
  for i in range(K):
    for j in range(i + 1, K):
      assert np.abs(v[i] - v[j]).mean() > 1.0, (i, j)


def test_grey_fraction_close_to_paper_value():
  task = _task(num_views=8, crop_size=16)
  img = tf.constant(_colour_image(24, 24))
  seeds = tf.random.stateless_uniform([80, 2], seed=[1, 2], maxval=2**30,
                                      dtype=tf.int64)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: task.preprocess({"image": img}, s)[0]).batch(80)
  views = next(iter(ds)).numpy().reshape(-1, 16, 16, 3)
  frac = _is_grey(views).mean()
  # 640 views: the standard error of the fraction is about 0.019.
  assert abs(frac - 0.66) < 0.07, frac


def test_ids_from_field_or_seed():
  seed = tf.constant([1, 2])
  assert int(example_id({"id": tf.constant(42)}, seed)) == 42
  a = example_id({"id": tf.constant("n01440764_10026.JPEG")}, seed)
  b = example_id({"id": tf.constant("n01440764_10027.JPEG")}, seed)
  assert a.dtype == tf.int64 and int(a) != int(b)
  assert int(a) == int(example_id({"id": "n01440764_10026.JPEG"}, [9, 9]))
  from_seed = {int(example_id({}, tf.constant(s))) for s in
               ([0, 0], [0, 1], [1, 0], [123, 456])}
  assert len(from_seed) == 4
  assert int(example_id({}, [0, 1])) == int(example_id({}, [0, 1]))
  task = _task(id_key="file_name")
  _, got = task.preprocess({"image": _colour_image(), "file_name": "x.jpg"},
                           seed)
  assert int(got) == int(example_id({"id": "x.jpg"}, seed))


# -- input rules ---------------------------------------------------------

def test_grey_rgba_uint8_inputs_follow_the_documented_conversions():
  task = _task()
  seed = tf.constant([4, 2])
  rgb = np.round(_colour_image()).astype(np.uint8)
  ref, _ = task.preprocess({"image": rgb.astype(np.float32)}, seed)
  from_uint8, _ = task.preprocess({"image": rgb}, seed)
  np.testing.assert_array_equal(from_uint8.numpy(), ref.numpy())
  rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 7, np.uint8)], -1)
  from_rgba, _ = task.preprocess({"image": rgba}, seed)
  np.testing.assert_array_equal(from_rgba.numpy(), ref.numpy())
  grey = rgb[..., 0]
  from_grey, _ = task.preprocess({"image": grey}, seed)
  assert from_grey.shape == (K, S, S, 3)
  assert np.all(_is_grey(from_grey.numpy()))


def test_bad_inputs_raise_clear_errors():
  task = _task()
  seed = tf.constant([0, 0])
  with pytest.raises(ValueError, match="smaller than Exemplar"):
    task.preprocess({"image": np.zeros((S - 1, 64, 3), np.float32)}, seed)
  with pytest.raises(TypeError, match="int32 is not supported"):
    task.preprocess({"image": np.zeros((48, 48, 3), np.int32)}, seed)
  with pytest.raises(ValueError, match="2 channels"):
    task.preprocess({"image": np.zeros((48, 48, 2), np.float32)}, seed)
  with pytest.raises(ValueError, match="one image"):
    task.preprocess({"image": np.zeros((2, 48, 48, 3), np.float32)}, seed)
  with pytest.raises(KeyError, match="image"):
    task.preprocess({"frame": np.zeros((48, 48, 3), np.float32)}, seed)
  with pytest.raises(ValueError, match="seed must have shape"):
    task.preprocess({"image": np.zeros((48, 48, 3), np.float32)}, [1, 2, 3])
  with pytest.raises(TypeError, match="seed must be"):
    task.preprocess({"image": np.zeros((48, 48, 3), np.float32)}, [1.0, 2.0])
  with pytest.raises(TypeError, match="integer or a string"):
    task.preprocess({"image": np.zeros((48, 48, 3), np.float32),
                     "id": 1.5}, seed)


def test_small_image_fails_inside_tf_data():
  task = _task()
  ds = tf.data.Dataset.from_generator(
      lambda: iter([np.zeros((S - 4, 40, 3), np.float32)]),
      output_signature=tf.TensorSpec([None, None, 3], tf.float32))
  ds = ds.map(lambda im: task.preprocess({"image": im}, tf.constant([0, 0])))
  with pytest.raises(tf.errors.InvalidArgumentError, match="height"):
    next(iter(ds))


# -- trunk images, head --------------------------------------------------

def test_trunk_images_order():
  x = np.random.default_rng(0).normal(size=(3, K, S, S, 3)).astype(np.float32)
  out = _task().trunk_images(tf.constant(x)).numpy()
  assert out.shape == (3 * K, S, S, 3)
  np.testing.assert_array_equal(out[2 * K + 1], x[2, 1])
  with pytest.raises(ValueError, match="\\[B, K, S, S, 3\\]"):
    _task().trunk_images(x[0])


def test_head_unit_norm_matches_numpy():
  head = _task().build_head()
  assert isinstance(head, ExemplarHead)
  inputs = keras.Input((2, 2, 8))
  model = keras.Model(inputs, head(inputs))
  features = np.random.default_rng(1).normal(size=(5, 2, 2, 8)).astype(
      np.float32)
  out = model(features).numpy()
  assert out.shape == (5, 16)
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
  # Reference: pool, dense, normalise in NumPy from the layer's weights.
  kernel, bias = [w.numpy() for w in head.dense.weights]
  ref = features.mean(axis=(1, 2)) @ kernel + bias
  ref /= np.linalg.norm(ref, axis=1, keepdims=True)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  assert head.get_config()["embedding_dim"] == 16


# -- loss and metrics ----------------------------------------------------

def _embeddings(b, seed=0, dim=8):
  rng = np.random.default_rng(seed)
  emb = rng.normal(size=(b * K, dim)).astype(np.float32)
  return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_loss_mean_is_the_triplet_loss():
  task = _task()
  ids = np.array([10, 3, 7], np.int64)
  emb = _embeddings(3)
  per_image = task.loss(tf.constant(ids), tf.constant(emb))
  assert per_image.shape == (3,)
  # Views of image b are rows b*K .. b*K + K - 1.
  want = losses.semi_hard_triplet_loss(np.repeat(ids, K), emb, margin=0.5)
  np.testing.assert_allclose(per_image.numpy().mean(), want.numpy(), rtol=1e-6)
  per_anchor = losses.semi_hard_triplet_loss_per_anchor(np.repeat(ids, K), emb)
  np.testing.assert_allclose(per_image.numpy(),
                             per_anchor.numpy().reshape(3, K).mean(1),
                             rtol=1e-6)
  graph_loss = tf.function(task.loss, input_signature=[
      tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, None], tf.float32)])
  np.testing.assert_allclose(graph_loss(ids, emb).numpy(), per_image.numpy(),
                             rtol=1e-6)
  with pytest.raises(ValueError, match="images x num_views"):
    task.loss(tf.constant(ids), tf.constant(emb[:-1]))
  with pytest.raises(ValueError, match="image ids \\[B\\]"):
    task.loss(tf.constant(ids[None]), tf.constant(emb))


def test_metrics_against_numpy():
  task = _task()
  ids = np.arange(4, dtype=np.int64)
  emb = _embeddings(4, seed=3)
  got = task.metrics(tf.constant(ids), tf.constant(emb))
  labels = np.repeat(ids, K)
  d = ((emb[:, None] - emb[None]) ** 2).sum(-1)
  np.fill_diagonal(d, np.inf)
  np.testing.assert_allclose(
      got["nn_same_image"].numpy(), (labels[d.argmin(1)] == labels).mean())
  terms, pos = losses.semi_hard_triplet_terms(labels, emb)
  want_active = (terms.numpy()[pos.numpy()] > 0).mean()
  np.testing.assert_allclose(got["active_triplets"].numpy(), want_active)
  # Tight, well separated clusters: no active triplet, perfect neighbours.
  centres = np.eye(8, dtype=np.float32)[:4]
  clustered = np.repeat(centres, K, axis=0)
  clustered += 1e-3 * _embeddings(4, seed=4)
  got = task.metrics(tf.constant(ids), tf.constant(clustered))
  assert float(got["active_triplets"]) == 0.0
  assert float(got["nn_same_image"]) == 1.0


def test_two_replica_task_loss_equals_one_replica(two_cpu_devices):
  """Per-example losses summed / global batch: 2 replicas == 1 replica,
  and the gradients of the head's weights agree too."""
  task = _task()
  b = 6
  rng = np.random.default_rng(5)
  ids = rng.permutation(1000)[:b].astype(np.int64)
  features = rng.normal(size=(b * K, 2, 2, 8)).astype(np.float32)

  def step(head, targets, feats):
    with tf.GradientTape() as tape:
      per_example = task.loss(targets, head(feats))
      # Sum / global batch size, as the trainer does.
      loss = tf.reduce_sum(per_example) / b
    return loss, tape.gradient(loss, head.trainable_variables)

  head1 = task.build_head()
  head1(features)
  loss1, grads1 = step(head1, tf.constant(ids), tf.constant(features))

  # A fresh collective key base: strategies made earlier in this process
  # would otherwise clash with this one (see test_triplet_loss.make_strategy).
  tf.distribute.MirroredStrategy._collective_key_base += 1000
  strategy = tf.distribute.MirroredStrategy(two_cpu_devices)
  with strategy.scope():
    head2 = task.build_head()
    head2(features)
    head2.set_weights(head1.get_weights())

  def split(array, per):
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(
            array[ctx.replica_id_in_sync_group * per:
                  (ctx.replica_id_in_sync_group + 1) * per]))

  out = strategy.run(tf.function(lambda t, f: step(head2, t, f)),
                     args=(split(ids, b // 2), split(features, b // 2 * K)))
  loss2 = strategy.reduce(tf.distribute.ReduceOp.SUM, out[0], axis=None)
  np.testing.assert_allclose(loss2.numpy(), loss1.numpy(), atol=1e-6)
  np.testing.assert_allclose(
      loss1.numpy(), losses.semi_hard_triplet_loss(
          np.repeat(ids, K), head1(features)).numpy(), rtol=1e-5)
  for g1, g2 in zip(grads1, out[1]):
    g2 = strategy.reduce(tf.distribute.ReduceOp.SUM, g2, axis=None)
    np.testing.assert_allclose(g2.numpy(), g1.numpy(), atol=1e-6)
  assert max(float(tf.reduce_max(tf.abs(g))) for g in grads1) > 1e-4
