"""Semi-hard triplet loss against a brute-force NumPy loop, and its
cross-replica form against the 1-replica loss on the same global batch."""
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf.ops import losses


def _np_distances(emb, squared):
  d = ((emb[:, None, :] - emb[None, :, :]) ** 2).sum(-1)
  return d if squared else np.sqrt(d)


def _np_triplets(labels, emb, margin, squared):
  """Brute force: for each ordered positive pair, the chosen negative.

  Returns a list of (a, p, n or None, term, used_fallback).
  """
  d = _np_distances(np.asarray(emb, np.float64), squared)
  out = []
  n = len(labels)
  for a in range(n):
    negs = [k for k in range(n) if labels[k] != labels[a]]
    for p in range(n):
      if p == a or labels[p] != labels[a]:
        continue
      if not negs:
        out.append((a, p, None, 0.0, False))
        continue
      beyond = [k for k in negs if d[a, k] > d[a, p]]
      fallback = not beyond
      if fallback:
        neg = max(negs, key=lambda k: d[a, k])
      else:
        neg = min(beyond, key=lambda k: d[a, k])
      out.append((a, p, neg, max(d[a, p] - d[a, neg] + margin, 0.0), fallback))
  return out


def np_loss(labels, emb, margin=0.5, squared=True):
  trip = _np_triplets(labels, emb, margin, squared)
  return sum(t[3] for t in trip) / len(trip) if trip else 0.0


def np_per_anchor(labels, emb, margin=0.5, squared=True):
  trip = _np_triplets(labels, emb, margin, squared)
  sums = np.zeros(len(labels))
  counts = np.zeros(len(labels))
  for a, _, _, term, _ in trip:
    sums[a] += term
    counts[a] += 1
  return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0), counts


def np_grad_squared(labels, emb, margin=0.5):
  """Analytic gradient of the squared-distance loss w.r.t. the embeddings."""
  emb = np.asarray(emb, np.float64)
  trip = _np_triplets(labels, emb, margin, True)
  grad = np.zeros_like(emb)
  for a, p, n, term, _ in trip:
    if n is None or term <= 0:
      continue
    # term = |ea - ep|^2 - |ea - en|^2 + margin
    grad[a] += 2 * (emb[a] - emb[p]) - 2 * (emb[a] - emb[n])
    grad[p] += -2 * (emb[a] - emb[p])
    grad[n] += 2 * (emb[a] - emb[n])
  return grad / len(trip)


def _random_batch(seed, n=16, dim=6, classes=5, normalise=True):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, size=n)
  emb = rng.normal(size=(n, dim)).astype(np.float32)
  if normalise:
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
  return labels, emb


# The hand-computed case. 1-d embeddings 0, 1, 3, 1.5; labels 0, 0, 1, 1.
# Squared distances: d01=1, d02=9, d03=2.25, d12=4, d13=0.25, d23=2.25.
# (0,1): negatives {9, 2.25} beyond 1 -> 2.25: 1 - 2.25 + .5 < 0 -> 0
# (1,0): negatives {4, .25} beyond 1 -> 4 -> 0
# (2,3): negatives {9, 4} beyond 2.25 -> 4 -> 0
# (3,2): negatives {2.25, .25}, none strictly beyond 2.25 -> farthest 2.25:
#        2.25 - 2.25 + .5 = .5.   Loss = .5 / 4 = .125.
# Euclidean distances give the same terms (.5 from pair (3,2), 0 elsewhere).
_HAND_LABELS = np.array([0, 0, 1, 1])
_HAND_EMB = np.array([[0.0], [1.0], [3.0], [1.5]], np.float32)


@pytest.mark.parametrize("squared", [True, False])
def test_hand_computed_value(squared):
  loss = losses.semi_hard_triplet_loss(_HAND_LABELS, _HAND_EMB, 0.5, squared)
  np.testing.assert_allclose(loss.numpy(), 0.125, atol=1e-7)
  per_anchor = losses.semi_hard_triplet_loss_per_anchor(
      _HAND_LABELS, _HAND_EMB, 0.5, squared=squared)
  np.testing.assert_allclose(per_anchor.numpy(), [0, 0, 0, 0.5], atol=1e-7)


def test_hand_computed_tie_is_not_semi_hard():
  # 1-d embeddings 0, 1, 3, 1.5, -0.5; labels 0, 0, 1, 1, 0; margin 2.
  # Squared distances: d01=1 d02=9 d03=2.25 d04=.25 d12=4 d13=.25 d14=2.25
  # d23=2.25 d24=12.25 d34=4. Terms (d_ap - d_an + 2, negative chosen):
  # (0,1): 1 - 2.25 -> .75    (0,4): .25 - 2.25 -> 0   (1,0): 1 - 4 -> 0
  # (1,4): 2.25 - 4 -> .25    (4,0): .25 - 4 -> 0      (4,1): 2.25 - 4 -> .25
  # (2,3): 2.25 - 4 -> .25
  # (3,2): negative 0 ties at 2.25, which is not strictly beyond d_ap, so the
  #        semi-hard negative is 4 (point -0.5): 2.25 - 4 -> .25 (a tie
  #        taken as semi-hard would give 2).
  # Loss = 1.75 / 8.
  labels = np.array([0, 0, 1, 1, 0])
  emb = np.array([[0.0], [1.0], [3.0], [1.5], [-0.5]], np.float32)
  loss = losses.semi_hard_triplet_loss(labels, emb, margin=2.0)
  np.testing.assert_allclose(loss.numpy(), 1.75 / 8, atol=1e-7)
  per_anchor = losses.semi_hard_triplet_loss_per_anchor(labels, emb, 2.0)
  np.testing.assert_allclose(per_anchor.numpy(),
                             [0.375, 0.125, 0.25, 0.25, 0.125], atol=1e-7)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("squared", [True, False])
@pytest.mark.parametrize("margin", [0.5, 1.3])
def test_matches_brute_force(seed, squared, margin):
  labels, emb = _random_batch(seed, normalise=seed % 2 == 0)
  got = losses.semi_hard_triplet_loss(labels, emb, margin, squared)
  np.testing.assert_allclose(got.numpy(), np_loss(labels, emb, margin,
                                                  squared), rtol=1e-5,
                             atol=1e-6)
  per_anchor, counts = losses.semi_hard_triplet_loss_per_anchor(
      labels, emb, margin, squared=squared, return_num_positives=True)
  want, want_counts = np_per_anchor(labels, emb, margin, squared)
  np.testing.assert_allclose(per_anchor.numpy(), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(counts.numpy(), want_counts)


def test_no_semi_hard_negative_uses_farthest_negative():
  # Positives at distance 2 from each other, negatives in between: every
  # pair falls back to the farthest negative.
  labels = np.array([0, 0, 1, 1])
  emb = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.3], [0.0, -0.5]],
                 np.float32)
  trip = _np_triplets(labels, emb, 0.5, True)
  assert all(t[4] for t in trip if labels[t[0]] == 0)
  np.testing.assert_allclose(
      losses.semi_hard_triplet_loss(labels, emb).numpy(),
      np_loss(labels, emb), rtol=1e-6)
  # Pair (0, 1): d_ap = 4, farthest negative 1.25 -> 4 - 1.25 + .5.
  per_anchor = losses.semi_hard_triplet_loss_per_anchor(labels, emb)
  np.testing.assert_allclose(per_anchor.numpy()[0], 3.25, rtol=1e-6)


def test_random_batches_exercise_both_branches():
  # Guards the brute-force comparison: both the semi-hard choice and the
  # fallback occur in the random batches above.
  fallbacks = [t[4] for s in range(6)
               for t in _np_triplets(*_random_batch(s, normalise=s % 2 == 0),
                                     0.5, True)]
  assert any(fallbacks) and not all(fallbacks)


@pytest.mark.parametrize("seed", range(3))
def test_gradient_matches_analytic(seed):
  labels, emb = _random_batch(seed)
  x = tf.constant(emb)
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = losses.semi_hard_triplet_loss(labels, x)
  grad = tape.gradient(loss, x)
  np.testing.assert_allclose(grad.numpy(), np_grad_squared(labels, emb),
                             atol=1e-5)


def test_weighted_per_anchor_mean_is_the_loss():
  labels, emb = _random_batch(11, n=20, classes=6)
  per_anchor, counts = losses.semi_hard_triplet_loss_per_anchor(
      labels, emb, return_num_positives=True)
  counts = counts.numpy().astype(np.float64)
  assert len(set(counts)) > 1  # unequal counts: the weights matter
  weighted = (per_anchor.numpy() * counts).sum() / counts.sum()
  np.testing.assert_allclose(
      weighted, losses.semi_hard_triplet_loss(labels, emb).numpy(), rtol=1e-5)


def test_anchor_slices_match_full_per_anchor():
  labels, emb = _random_batch(3, n=12)
  full = losses.semi_hard_triplet_loss_per_anchor(labels, emb).numpy()
  parts = [losses.semi_hard_triplet_loss_per_anchor(
      labels, emb, anchor_offset=o, num_anchors=n).numpy()
           for o, n in ((0, 5), (5, 4), (9, 3))]
  np.testing.assert_allclose(np.concatenate(parts), full, rtol=1e-5,
                             atol=1e-7)


def test_degenerate_batches_are_zero_not_nan():
  emb = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  # One label only: no negatives, no triplet.
  assert losses.semi_hard_triplet_loss([1, 1, 1, 1], emb).numpy() == 0.0
  # All labels distinct: no positive pair.
  assert losses.semi_hard_triplet_loss([0, 1, 2, 3], emb).numpy() == 0.0
  # Coincident embeddings with Euclidean distances: finite gradients.
  x = tf.constant(np.repeat(emb[:2], 2, axis=0))
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = losses.semi_hard_triplet_loss([0, 0, 1, 1], x, squared=False)
  assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


def test_pairwise_distances_match_numpy():
  _, emb = _random_batch(5, n=7, normalise=False)
  for squared in (True, False):
    got = losses.pairwise_distances(emb, emb, squared=squared).numpy()
    np.testing.assert_allclose(got, _np_distances(emb, squared), atol=1e-5)
    assert np.all(np.diag(got) == 0)
  part = losses.pairwise_distances(emb[2:5], emb, anchor_offset=2).numpy()
  assert np.all(part[np.arange(3), np.arange(2, 5)] == 0)


def test_works_in_a_graph_with_unknown_sizes():
  labels, emb = _random_batch(4)
  fn = tf.function(losses.semi_hard_triplet_loss, input_signature=[
      tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, None], tf.float32)])
  np.testing.assert_allclose(fn(labels, emb).numpy(), np_loss(labels, emb),
                             rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
  emb = np.zeros((4, 3), np.float32)
  with pytest.raises(TypeError, match="labels must be an integer"):
    losses.semi_hard_triplet_loss(np.zeros(4, np.float32), emb)
  with pytest.raises(TypeError, match="embeddings must be a float"):
    losses.semi_hard_triplet_loss([0, 0, 1, 1], np.zeros((4, 3), np.int32))
  with pytest.raises(ValueError, match="embeddings must be \\[N, D\\]"):
    losses.semi_hard_triplet_loss([0, 0, 1, 1], np.zeros(4, np.float32))
  with pytest.raises(ValueError, match="labels must be \\[N\\]"):
    losses.semi_hard_triplet_loss([[0, 0, 1, 1]], emb)
  with pytest.raises(ValueError, match="same number of rows"):
    losses.semi_hard_triplet_loss([0, 0, 1], emb)


def test_gather_is_a_no_op_without_strategy():
  x = tf.constant([[1.0], [2.0]])
  gathered, offset = losses.gather_across_replicas(x)
  np.testing.assert_array_equal(gathered.numpy(), x.numpy())
  assert int(offset) == 0


def make_strategy(devices):
  """A MirroredStrategy whose collective keys clash with no other one.

  Every MirroredStrategy numbers its collective group and instance keys from
  the same start, and the runtime caches each instance's shape by key, so a
  second strategy in one process can fail with "Shape mismatch in the
  collective instance". A fresh key base per strategy (the class attribute
  TensorFlow's own tests set) keeps them apart.
  """
  tf.distribute.MirroredStrategy._collective_key_base += 1000
  return tf.distribute.MirroredStrategy(devices)


def _split_values(strategy, array, sizes):
  bounds = np.cumsum([0] + list(sizes))

  def value_fn(ctx):
    r = ctx.replica_id_in_sync_group
    return tf.constant(array[bounds[r]:bounds[r + 1]])

  return strategy.experimental_distribute_values_from_function(value_fn)


def test_gather_offsets_with_uneven_replicas(two_cpu_devices):
  strategy = make_strategy(two_cpu_devices)
  x = np.arange(16, dtype=np.float32).reshape(8, 2)
  out = strategy.run(tf.function(losses.gather_across_replicas),
                     args=(_split_values(strategy, x, (5, 3)),))
  gathered = strategy.experimental_local_results(out[0])
  offsets = strategy.experimental_local_results(out[1])
  assert [int(o) for o in offsets] == [0, 5]
  for g in gathered:
    np.testing.assert_array_equal(g.numpy(), x)


@pytest.mark.parametrize("sizes", [(9, 9), (12, 6)])
def test_two_replicas_equal_one_replica(two_cpu_devices, sizes):
  """Loss and gradients: 2 replicas on a split global batch == 1 replica."""
  rng = np.random.default_rng(7)
  n = sum(sizes)
  labels = np.repeat(np.arange(n // 3), 3)
  x = rng.normal(size=(n, 10)).astype(np.float32)
  w_init = rng.normal(size=(10, 8)).astype(np.float32)

  def step(lab, inputs, w):
    with tf.GradientTape() as tape:
      tape.watch(inputs)
      emb = tf.math.l2_normalize(tf.matmul(inputs, w), axis=1)
      per_anchor = losses.cross_replica_triplet_loss_per_anchor(lab, emb)
      # Sum of own anchors / global anchor count: summed over replicas this
      # is the mean over the global batch.
      loss = tf.reduce_sum(per_anchor) / n
    grad_x, grad_w = tape.gradient(loss, [inputs, w])
    return loss, grad_x, grad_w

  w1 = tf.Variable(w_init)
  loss1, gx1, gw1 = step(tf.constant(labels), tf.constant(x), w1)
  np.testing.assert_allclose(loss1.numpy(), np_loss(
      labels, tf.math.l2_normalize(x @ w_init, axis=1).numpy()), rtol=1e-5)

  strategy = make_strategy(two_cpu_devices)
  with strategy.scope():
    w2 = tf.Variable(w_init)
  out = strategy.run(tf.function(step), args=(
      _split_values(strategy, labels, sizes), _split_values(strategy, x, sizes),
      w2))
  loss2 = strategy.reduce(tf.distribute.ReduceOp.SUM, out[0], axis=None)
  gw2 = strategy.reduce(tf.distribute.ReduceOp.SUM, out[2], axis=None)
  gx2 = np.concatenate([g.numpy()
                        for g in strategy.experimental_local_results(out[1])])
  np.testing.assert_allclose(loss2.numpy(), loss1.numpy(), atol=1e-6)
  np.testing.assert_allclose(gx2, gx1.numpy(), atol=1e-6)
  np.testing.assert_allclose(gw2.numpy(), gw1.numpy(), atol=1e-6)
  assert np.abs(gw1.numpy()).max() > 1e-3  # the gradient is not trivially 0
