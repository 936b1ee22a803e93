"""Batch-level losses: the semi-hard triplet loss and its cross-replica form.

The Exemplar task (Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017, after Dosovitskiy et al. 2014 and the triplet version of
Kolesnikov et al. 2019) trains an L2-normalised embedding with the semi-hard
triplet loss of FaceNet (Schroff et al., CVPR 2015). TensorFlow-Addons, which
used to provide it, is end-of-life and breaks under Keras 3, so the loss is
written here and tested against a brute-force NumPy loop.

Definition (the semantics of ``tf.contrib.losses.metric_learning`` /
``tfa.losses.triplet_semihard_loss``):

* ``d(i, j)`` is the pairwise distance between embeddings ``i`` and ``j``:
  the **squared** Euclidean distance by default (``squared=True``), as in the
  ``tf.contrib`` loss that Kolesnikov et al.'s exemplar code called with margin
  0.5; ``squared=False`` gives the plain Euclidean distance (TF-Addons'
  default, ``distance_metric="L2"``).
* Every ordered positive pair ``(a, p)`` (same label, ``a != p``) is one term.
  Its negative ``n`` (a different label) is the **semi-hard** one: the
  smallest ``d(a, n)`` among the negatives with ``d(a, n) > d(a, p)``
  (strictly). If no such negative exists, all negatives are at least as close
  as the positive and the negative **farthest from the anchor** (largest
  ``d(a, n)``, the easiest of those hard negatives) is used instead.
* The term is ``max(d(a, p) - d(a, n) + margin, 0)``; the loss is the mean
  over all positive pairs.
* Two documented edge cases: an anchor that has no negative at all in the
  batch forms no triplet, so its pairs contribute 0 (``tf.contrib`` gave
  ``margin + d(a, p)`` there); a batch without any positive pair has loss 0.

Per-anchor form: ``semi_hard_triplet_loss_per_anchor`` returns, for each
anchor, the mean of its pairs' terms (0 for an anchor without positives).
With ``c_a`` the number of positives of anchor ``a``, the scalar loss is
``sum_a c_a * per_anchor_a / sum_a c_a``; when every anchor has the same
number of positives (Exemplar: the ``K - 1`` other views of its image) it is
simply the mean of the per-anchor losses.

Several replicas: the negatives of the semi-hard rule are batch-level, so each
replica must see the *global* batch (see the DESIGN notes: triplet losses are a
common multi-GPU bug). :func:`cross_replica_triplet_loss_per_anchor` all-gathers
embeddings and labels, then computes the per-anchor losses of this replica's own
anchors only, against the whole global batch. Summed over replicas and divided
by the global number of anchors this equals the 1-replica loss on the same
global batch, value and gradient (``all_gather``'s gradient sums the upstream
gradients of all replicas and returns this replica's slice).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from mtssl_tf.utils.lazy_tf import tf


def pairwise_distances(anchors: tf.Tensor, embeddings: tf.Tensor,
                       squared: bool = True,
                       anchor_offset: Union[int, tf.Tensor] = 0) -> tf.Tensor:
  """Distances between ``anchors`` [A, D] and ``embeddings`` [N, D] -> [A, N].

  ``anchors`` are rows ``anchor_offset .. anchor_offset + A - 1`` of
  ``embeddings``; those self-distances are set to exactly 0 (the expanded
  form ``|x|^2 + |y|^2 - 2 x.y`` leaves rounding noise there).

  Args:
    anchors: [A, D] float tensor.
    embeddings: [N, D] float tensor.
    squared: squared Euclidean distance if True, else Euclidean.
    anchor_offset: index of ``anchors[0]`` in ``embeddings``.
  """
  anchors = tf.convert_to_tensor(anchors)
  embeddings = tf.convert_to_tensor(embeddings)
  sq_a = tf.reduce_sum(tf.square(anchors), axis=1, keepdims=True)
  sq_e = tf.reduce_sum(tf.square(embeddings), axis=1)[tf.newaxis, :]
  d2 = sq_a + sq_e - 2.0 * tf.matmul(anchors, embeddings, transpose_b=True)
  d2 = tf.maximum(d2, 0.0)
  num_a = tf.shape(anchors)[0]
  num_e = tf.shape(embeddings)[0]
  rows = tf.range(num_a) + tf.cast(anchor_offset, tf.int32)
  is_self = tf.equal(rows[:, tf.newaxis], tf.range(num_e)[tf.newaxis, :])
  d2 = tf.where(is_self, tf.zeros_like(d2), d2)
  if squared:
    return d2
  # sqrt has an infinite derivative at 0: feed it a harmless 1 there and mask
  # the result, so that coincident points get a zero (not NaN) gradient.
  is_zero = d2 <= 0.0
  dist = tf.sqrt(tf.where(is_zero, tf.ones_like(d2), d2))
  return tf.where(is_zero, tf.zeros_like(dist), dist)


def semi_hard_triplet_terms(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.5,
    anchor_offset: Union[int, tf.Tensor] = 0,
    num_anchors: Optional[Union[int, tf.Tensor]] = None,
    squared: bool = True) -> Tuple[tf.Tensor, tf.Tensor]:
  """Triplet terms of all (anchor, positive) pairs of the chosen anchors.

  Arguments as in :func:`semi_hard_triplet_loss_per_anchor`; the building
  block of the losses, exposed for metrics (e.g. the fraction of active
  triplets).

  Returns:
    losses: [A, N] float, the term of pair (a, p) (0 where p is no positive).
    positives: [A, N] bool, which p are positives of anchor a.
  """
  embeddings = tf.convert_to_tensor(embeddings)
  if not embeddings.dtype.is_floating:
    raise TypeError(
        f"embeddings must be a float tensor, got {embeddings.dtype.name}.")
  if embeddings.shape.rank != 2:
    raise ValueError(
        f"embeddings must be [N, D], got shape {embeddings.shape}.")
  labels = tf.convert_to_tensor(labels)
  if not labels.dtype.is_integer:
    raise TypeError(
        f"labels must be an integer tensor, got {labels.dtype.name}.")
  if labels.shape.rank != 1:
    raise ValueError(f"labels must be [N], got shape {labels.shape}.")
  if (labels.shape[0] is not None and embeddings.shape[0] is not None
      and labels.shape[0] != embeddings.shape[0]):
    raise ValueError(
        f"labels ({labels.shape[0]}) and embeddings ({embeddings.shape[0]}) "
        "must have the same number of rows.")
  # The mining compares distances; float16 rounding would flip choices.
  embeddings = tf.cast(embeddings, tf.float32)
  labels = tf.cast(labels, tf.int64)
  num = tf.shape(embeddings)[0]
  anchor_offset = tf.cast(anchor_offset, tf.int32)
  if num_anchors is None:
    num_anchors = num - anchor_offset
  anchors = embeddings[anchor_offset:anchor_offset + num_anchors]
  anchor_labels = labels[anchor_offset:anchor_offset + num_anchors]

  dist = pairwise_distances(anchors, embeddings, squared=squared,
                            anchor_offset=anchor_offset)
  same = tf.equal(anchor_labels[:, tf.newaxis], labels[tf.newaxis, :])
  rows = tf.range(tf.shape(anchors)[0]) + anchor_offset
  not_self = tf.not_equal(rows[:, tf.newaxis], tf.range(num)[tf.newaxis, :])
  positives = tf.logical_and(same, not_self)
  negatives = tf.logical_not(same)

  # Sort each anchor's negative distances (non-negatives pushed to +inf, last)
  # and binary-search each positive distance: the first sorted negative
  # strictly beyond d(a, p) is the semi-hard one. This costs O(A N log N)
  # instead of the O(A N^2) mask of the tf.contrib formulation.
  inf = tf.constant(float("inf"), dist.dtype)
  neg_dist = tf.where(negatives, dist, inf)
  order = tf.argsort(neg_dist, axis=1, stable=True)
  sorted_neg = tf.gather(tf.stop_gradient(neg_dist), order, batch_dims=1)
  num_neg = tf.reduce_sum(tf.cast(negatives, tf.int32), axis=1, keepdims=True)
  pos_dist = tf.stop_gradient(dist)
  first_beyond = tf.searchsorted(sorted_neg, pos_dist, side="right")
  # None beyond d(a, p): fall back to the farthest negative.
  choice = tf.where(first_beyond < num_neg, first_beyond,
                    tf.maximum(num_neg - 1, 0))
  neg_index = tf.gather(order, choice, batch_dims=1)
  # Gathering from ``dist`` (not the sorted copy) carries the gradient.
  d_an = tf.gather(dist, neg_index, batch_dims=1)
  terms = tf.maximum(dist - d_an + margin, 0.0)
  valid = tf.logical_and(positives, num_neg > 0)
  losses = tf.where(valid, terms, tf.zeros_like(terms))
  return losses, positives


def semi_hard_triplet_loss_per_anchor(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.5,
    anchor_offset: Union[int, tf.Tensor] = 0,
    num_anchors: Optional[Union[int, tf.Tensor]] = None,
    squared: bool = True, return_num_positives: bool = False):
  """Per-anchor semi-hard triplet loss (see the module docstring).

  Anchors are rows ``anchor_offset .. anchor_offset + num_anchors - 1`` of the
  batch; positives and negatives are mined from the whole batch.

  Args:
    labels: [N] integer labels (equal labels = same pseudo-class).
    embeddings: [N, D] float embeddings (normally L2-normalised).
    margin: the triplet margin.
    anchor_offset: first anchor row.
    num_anchors: number of anchors (default: all rows from ``anchor_offset``).
    squared: squared Euclidean distances if True (default), else Euclidean.
    return_num_positives: also return each anchor's number of positives.

  Returns:
    [A] float32: the mean term over each anchor's positive pairs (0 for an
    anchor without positives); with ``return_num_positives``, a pair
    ``(losses, num_positives)`` where ``num_positives`` is [A] int32.
  """
  losses, positives = semi_hard_triplet_terms(
      labels, embeddings, margin, anchor_offset, num_anchors, squared)
  counts = tf.reduce_sum(tf.cast(positives, tf.int32), axis=1)
  per_anchor = tf.math.divide_no_nan(tf.reduce_sum(losses, axis=1),
                                     tf.cast(counts, losses.dtype))
  if return_num_positives:
    return per_anchor, counts
  return per_anchor


def semi_hard_triplet_loss(labels: tf.Tensor, embeddings: tf.Tensor,
                           margin: float = 0.5,
                           squared: bool = True) -> tf.Tensor:
  """Semi-hard triplet loss of one batch: mean over all positive pairs.

  Args:
    labels: [N] integer labels.
    embeddings: [N, D] float embeddings (normally L2-normalised).
    margin: the triplet margin (the paper's Exemplar uses 0.5).
    squared: squared Euclidean distances if True (default), else Euclidean.

  Returns:
    A float32 scalar (0 when the batch has no positive pair).
  """
  losses, positives = semi_hard_triplet_terms(labels, embeddings, margin, 0,
                                              None, squared)
  total = tf.reduce_sum(tf.cast(positives, losses.dtype))
  return tf.math.divide_no_nan(tf.reduce_sum(losses), total)


def _replica_context():
  """The replica context of a multi-replica ``strategy.run``, else None."""
  if not tf.distribute.has_strategy():
    return None
  ctx = tf.distribute.get_replica_context()
  # None: cross-replica context, where every value is already global.
  if ctx is None or ctx.num_replicas_in_sync == 1:
    return None
  return ctx


def gather_across_replicas(x: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """All-gathers ``x`` along axis 0 across the replicas in sync.

  Inside ``strategy.run`` with several replicas every replica receives the
  concatenation of all replicas' ``x`` in replica-id order; elsewhere (no
  strategy, one replica, cross-replica context) ``x`` is returned unchanged.
  Gradients flow back through the gather: ``all_gather``'s gradient sums the
  upstream gradients of all replicas and hands each replica its own slice.
  Replicas may hold different numbers of rows (not on TPUs).

  Returns:
    ``(gathered, offset)``: the global tensor and the row at which this
    replica's ``x`` starts in it (an int32 scalar; 0 without replicas).
  """
  x = tf.convert_to_tensor(x)
  ctx = _replica_context()
  if ctx is None:
    return x, tf.constant(0, tf.int32)
  sizes = ctx.all_gather(tf.shape(x)[:1], axis=0)
  replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
  offset = tf.reduce_sum(sizes[:replica_id])
  return ctx.all_gather(x, axis=0), offset


def cross_replica_triplet_loss_per_anchor(
    labels: tf.Tensor, embeddings: tf.Tensor, margin: float = 0.5,
    squared: bool = True, return_num_positives: bool = False):
  """Per-anchor loss of this replica's anchors, mined over the global batch.

  Call it inside ``strategy.run``: embeddings and labels are all-gathered, and
  each replica returns the losses of its own local rows only, so summing over
  replicas counts every anchor once. Without a strategy this is
  :func:`semi_hard_triplet_loss_per_anchor` of the local batch. Labels must
  be unique across the *global* batch for distinct pseudo-classes.

  Args:
    labels: [n] local integer labels.
    embeddings: [n, D] local embeddings.
    margin, squared, return_num_positives: as in
      :func:`semi_hard_triplet_loss_per_anchor`.

  Returns:
    [n] float32 per-anchor losses (and [n] positive counts when asked).
  """
  embeddings = tf.convert_to_tensor(embeddings)
  labels = tf.convert_to_tensor(labels)
  num_local = tf.shape(embeddings)[0]
  all_embeddings, offset = gather_across_replicas(embeddings)
  all_labels, _ = gather_across_replicas(labels)
  return semi_hard_triplet_loss_per_anchor(
      all_labels, all_embeddings, margin=margin, anchor_offset=offset,
      num_anchors=num_local, squared=squared,
      return_num_positives=return_num_positives)


__all__ = ["pairwise_distances", "semi_hard_triplet_terms",
           "semi_hard_triplet_loss",
           "semi_hard_triplet_loss_per_anchor", "gather_across_replicas",
           "cross_replica_triplet_loss_per_anchor"]
