"""What the input pipelines refuse, and why: counts, named files, a guard.

A training source can hold files that cannot be used: unreadable or
truncated files, images too small for a task, grey photos for
colorization. The pipelines of :mod:`mtssl_tf.data.sources` and
:mod:`mtssl_tf.data.pipeline` give every example a status (one of the
codes below) and hand it to a :class:`SkipCounter`, which

* counts reads and refusals by kind (``read``, ``corrupt``, ``undersized``,
  ``failed``, ``unusable``);
* when the source is a known list of files (an image folder, the offline
  set), remembers each refused file and its reason, so that a run can name
  every bad file once (:meth:`SkipCounter.refused`) and count files rather
  than reads, and so that a file that cannot be decoded is not read again;
* stops a pipeline that cannot yield a usable example: when every file of
  the list has been refused, or when more reads than a bound (a whole pass
  over the source and the shuffle buffer, see :meth:`SkipCounter.set_limit`)
  went by without one, the next refusal fails with an error that starts
  with :data:`NO_USABLE_DATA`. Without the guard, a ``repeat()`` over a
  source whose every example is filtered out spins forever.

Everything is ``tf.Variable`` s updated inside ``tf.data`` (no
``py_function``), so parallel stages stay in C++ and a counter can be
checkpointed with the run.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

# Status of one example on its way through the pipeline.
OK = 0
CORRUPT = 1      # the decoder failed, or the file could not be read
UNDERSIZED = 2   # shorter side below what the source or the task needs
FAILED = 3       # the task's preprocessing raised an error
EMPTY = 4        # a file of 0 bytes
NOT_IMAGE = 5    # not JPEG, PNG, GIF, BMP or WebP
TRUNCATED = 6    # a JPEG without its end marker
TOO_LARGE = 7    # more pixels than MAX_IMAGE_PIXELS
UNUSABLE = 8     # decoded and trained on, but the task learns nothing from it

REASONS: Dict[int, str] = {
    CORRUPT: "could not be read or decoded",
    UNDERSIZED: "too small",
    FAILED: "the task's preprocessing failed on it",
    EMPTY: "empty file",
    NOT_IMAGE: "not a JPEG, PNG, GIF, BMP or WebP image",
    TRUNCATED: "truncated (the JPEG has no end marker)",
    TOO_LARGE: "too large to decode",
    UNUSABLE: "unusable for the task",
}

# Which counter field each status adds to.
_FIELD_OF = {CORRUPT: "corrupt", EMPTY: "corrupt", NOT_IMAGE: "corrupt",
             TRUNCATED: "corrupt", TOO_LARGE: "corrupt",
             UNDERSIZED: "undersized", FAILED: "failed",
             UNUSABLE: "unusable"}
# A file refused for one of these is refused on every read: it is not read
# again, and it counts towards "every file refused".
DECODE_REASONS = (CORRUPT, EMPTY, NOT_IMAGE, TRUNCATED, TOO_LARGE)
_PERMANENT = DECODE_REASONS + (UNDERSIZED, UNUSABLE)

NO_USABLE_DATA = "no usable training example"
_NO_LIMIT = np.iinfo(np.int64).max


class NoUsableDataError(RuntimeError):
  """A task's input cannot yield a usable example: the run stops before
  any step, and the message names the source and why its files were
  refused."""


class SkipCounter(tf.Module):
  """Counts the examples a pipeline reads and refuses, and why.

  The counts are ``tf.Variable`` s that the filters of the ``tf.data``
  pipeline add to. ``read`` and the per-kind counts count every pass (a
  corrupt file read in each epoch would count in each epoch; with a file
  list, see :meth:`track`, it is read once). Being a ``tf.Module``, a
  counter can be put in a ``tf.train.Checkpoint`` so that counts and the
  refused files survive a restart.

  Attributes (Python ints, read at log time):
    read: examples the source read (decoded or not).
    corrupt: skipped: the file is empty, not an image, truncated, too large
      or could not be decoded.
    undersized: skipped because they are smaller than needed.
    failed: skipped because the task's preprocessing raised an error.
    unusable: trained on, but the task learns nothing from them (e.g. grey
      images for colorization).
  """

  _FIELDS = ("read", "corrupt", "undersized", "failed", "unusable")

  def __init__(self, name: str = "skip_counter"):
    super().__init__(name=name)
    # init_scope: the counter may be made inside a tf.function or strategy
    # scope; the variables must live outside any function graph.
    with tf.init_scope():
      self._vars = {
          field: tf.Variable(0, dtype=tf.int64, trainable=False, name=field)
          for field in self._FIELDS}
      # Reads since the last usable example, and the bound on them.
      self._since_usable = tf.Variable(0, dtype=tf.int64, trainable=False,
                                       name="since_usable")
      # 1 once a usable example has gone to training (see deliver).
      self._usable_seen = tf.Variable(0, dtype=tf.int64, trainable=False,
                                      name="usable_seen")
    self.names: List[str] = []
    self.item_kind = "files"
    self.what = "the source"
    self.reason_text: Dict[int, str] = dict(REASONS)
    # Kept out of checkpoints (a plain holder is not tracked): the file
    # list may change between a run and its resumption, and the bound
    # follows the list. The run folder's refused_files.tsv keeps a resumed
    # run from naming a file twice.
    self._local = _Untracked()
    with tf.init_scope():
      self._local.limit = tf.Variable(_NO_LIMIT, dtype=tf.int64,
                                      trainable=False, name="limit")
    self._readable = 0

  # -- counts -----------------------------------------------------------------
  def _count(self, field: str) -> int:
    return int(self._vars[field].numpy())

  read = property(lambda self: self._count("read"))
  corrupt = property(lambda self: self._count("corrupt"))
  undersized = property(lambda self: self._count("undersized"))
  failed = property(lambda self: self._count("failed"))
  unusable = property(lambda self: self._count("unusable"))

  @property
  def skipped(self) -> int:
    return self.corrupt + self.undersized + self.failed

  def as_dict(self) -> Dict[str, int]:
    return {field: int(v.numpy()) for field, v in self._vars.items()}

  def reset(self) -> None:
    for v in self._vars.values():
      v.assign(0)
    self._since_usable.assign(0)
    self._usable_seen.assign(0)
    if self._by_item is not None:
      self._by_item.assign(tf.zeros_like(self._by_item))
      self._num_refused.assign(0)

  def summary(self) -> str:
    """A log line, e.g. "skipped 2 files: 1 not an image, 1 too small (of
    9 files)" with a file list, "skipped 3 corrupt images (of 120 read)"
    without one."""
    refused = self.refused()
    if self._by_item is not None:
      if not refused:
        return f"refused no {self.item_kind} (of {self._readable})"
      by_reason: Dict[str, int] = {}
      for _, code in refused:
        text = self.reason_text.get(code, REASONS.get(code, str(code)))
        by_reason[text] = by_reason.get(text, 0) + 1
      parts = ", ".join(f"{n} {text}" for text, n in by_reason.items())
      return (f"refused {len(refused)} {self.item_kind}: {parts} (of "
              f"{self._readable} {self.item_kind})")
    counts = self.as_dict()
    parts = [f"{counts[k]} {k}"
             for k in ("corrupt", "undersized", "failed", "unusable")
             if counts[k]]
    if not parts:
      return f"skipped no images (of {counts['read']} read)"
    return f"skipped {', '.join(parts)} images (of {counts['read']} read)"

  # -- files ------------------------------------------------------------------
  def track(self, names: Sequence[str], readable: Optional[int] = None,
            item_kind: str = "files", what: str = "the source") -> None:
    """Remembers refusals by example id: ``names[id]`` is the file (or
    image) an example with that ``id`` came from.

    Args:
      names: one name per id (the whole list: a shard keeps global ids).
      readable: how many of them this pipeline reads (its shard); when all
        of those are refused, no example can ever be usable.
      item_kind: what an item is called in messages ("files", "images").
      what: what the source is, for messages ("image folder /data").
    """
    self.names = [str(n) for n in names]
    self.item_kind = item_kind
    self.what = what
    self._readable = len(self.names) if readable is None else int(readable)
    with tf.init_scope():
      self._local.by_item = tf.Variable(
          tf.zeros([len(self.names)], tf.int32), trainable=False,
          name="refused_by_item")
      self._local.num_refused = tf.Variable(0, dtype=tf.int64,
                                            trainable=False,
                                            name="num_refused")

  @property
  def _by_item(self) -> Optional[tf.Variable]:
    return self._local.by_item

  @property
  def _num_refused(self) -> Optional[tf.Variable]:
    return self._local.num_refused

  @property
  def _limit(self) -> tf.Variable:
    return self._local.limit

  @property
  def tracks_items(self) -> bool:
    return self._by_item is not None

  def refused(self) -> List[Tuple[str, int]]:
    """``(name, status code)`` of every refused item, in list order."""
    if self._by_item is None:
      return []
    codes = self._by_item.numpy()
    return [(self.names[i], int(codes[i])) for i in np.flatnonzero(codes)]

  def describe(self, code: int) -> str:
    return self.reason_text.get(code, REASONS.get(code, f"status {code}"))

  def known_bad(self, item: tf.Tensor) -> tf.Tensor:
    """True when ``item`` was refused at decoding (it would be again: skip
    reading it)."""
    if self._by_item is None:
      return tf.constant(False)
    code = tf.gather(self._by_item, item)
    return tf.reduce_any(tf.equal(code, list(DECODE_REASONS)))

  # -- the guard --------------------------------------------------------------
  def exhausted(self) -> bool:
    """True when the guard has found that no usable example can come."""
    if int(self._since_usable.numpy()) > int(self._limit.numpy()):
      return True
    return bool(self._by_item is not None and self._readable
                and int(self._num_refused.numpy()) >= self._readable)

  def set_limit(self, limit: int) -> None:
    """Reads without a usable example after which the pipeline fails."""
    with tf.init_scope():
      self._limit.assign(int(limit))

  def _record(self, status: tf.Tensor, item: Optional[tf.Tensor]
              ) -> tf.Tensor:
    """Remembers a refusal of ``item``; returns the number of items refused
    for good (an int64 tensor; 0 without a file list)."""
    if self._by_item is None or item is None:
      return tf.constant(0, tf.int64)
    item = tf.cast(item, tf.int64)
    in_range = tf.logical_and(item >= 0,
                              item < tf.cast(tf.size(self._by_item), tf.int64))
    index = tf.where(in_range, item, 0)
    before = tf.gather(self._by_item, index)
    permanent = tf.reduce_any(tf.equal(status, list(_PERMANENT)))
    was_permanent = tf.reduce_any(tf.equal(before, list(_PERMANENT)))
    # A permanent reason replaces a passing one (a crop that failed once).
    write = tf.logical_and(in_range, tf.logical_and(
        tf.logical_not(was_permanent),
        tf.logical_or(tf.equal(before, OK), permanent)))

    def update():
      self._by_item.scatter_update(
          tf.IndexedSlices(tf.reshape(status, [1]), tf.reshape(index, [1])))
      return tf.convert_to_tensor(self._num_refused.assign_add(
          tf.cast(permanent, tf.int64)))

    return tf.cond(write, update,
                   lambda: tf.convert_to_tensor(self._num_refused))

  def _checks(self, since: tf.Tensor, num_refused: tf.Tensor) -> list:
    """Assertion ops of the guard (see the module docstring)."""
    checks = [tf.debugging.assert_less_equal(
        since, self._limit,
        message=f"{NO_USABLE_DATA} in a whole pass over {self.what}")]
    if self._by_item is not None and self._readable:
      checks.append(tf.debugging.assert_less(
          num_refused, tf.constant(self._readable, tf.int64),
          message=f"{NO_USABLE_DATA}: every one of the {self._readable} "
                  f"{self.item_kind} of {self.what} was refused"))
    return checks

  def keep(self, status: tf.Tensor, count_read: bool = True,
           item: Optional[tf.Tensor] = None, check: bool = False
           ) -> tf.Tensor:
    """Adds one example of ``status`` to the counts; True when it is OK.

    Meant as (part of) a ``Dataset.filter`` predicate.

    Args:
      status: the example's status code (:data:`OK` or a reason).
      count_read: count the example as read.
      item: the example's id, to remember a refusal by file (see
        :meth:`track`).
      check: fail with :data:`NO_USABLE_DATA` when the guard's bound is
        passed (the pipeline's own stages; a source's filters only count).
    """
    status = tf.convert_to_tensor(status, tf.int32)
    refused = tf.not_equal(status, OK)
    updates = []
    for field in ("corrupt", "undersized", "failed"):
      codes = [c for c, f in _FIELD_OF.items() if f == field]
      updates.append(self._vars[field].assign_add(
          tf.cast(tf.reduce_any(tf.equal(status, codes)), tf.int64)))
    if count_read:
      updates.append(self._vars["read"].assign_add(1))
    since = tf.convert_to_tensor(
        self._since_usable.assign_add(tf.cast(refused, tf.int64)))
    num_refused = tf.cond(refused, lambda: self._record(status, item),
                          lambda: tf.constant(0, tf.int64))
    updates += [since, num_refused]
    if check:
      updates += self._checks(since, num_refused)
    with tf.control_dependencies(updates):
      return tf.equal(status, OK)

  def deliver(self, usable: tf.Tensor, item: Optional[tf.Tensor] = None
              ) -> tf.Tensor:
    """The last stage, a filter predicate: whether an example goes to
    training.

    A usable example resets the guard. One the task learns nothing from
    counts as ``unusable`` (and is remembered by file); it trains as any
    other once the stream has delivered a usable example, and is held back
    before that, so that a source with no usable example at all stops
    before the first step instead of training on nothing for a while.
    """
    usable = tf.convert_to_tensor(usable, tf.bool)

    def reset():
      with tf.control_dependencies([self._usable_seen.assign(1)]):
        return (tf.convert_to_tensor(self._since_usable.assign(0)),
                tf.constant(0, tf.int64))

    def unusable():
      count = self._vars["unusable"].assign_add(1)
      with tf.control_dependencies([count]):
        num_refused = self._record(tf.constant(UNUSABLE, tf.int32), item)
        return (tf.convert_to_tensor(self._since_usable.assign_add(1)),
                num_refused)

    since, num_refused = tf.cond(usable, reset, unusable)
    with tf.control_dependencies(self._checks(since, num_refused)):
      return tf.logical_or(usable, tf.equal(self._usable_seen, 1))

  def __repr__(self) -> str:
    return f"SkipCounter({self.as_dict()})"


class _Untracked:
  """A plain holder: variables in it are not part of a checkpoint."""
  by_item: Optional[tf.Variable] = None
  num_refused: Optional[tf.Variable] = None
  limit: Optional[tf.Variable] = None


def first_lines(counter: SkipCounter, limit: int = 10) -> List[str]:
  """Up to ``limit`` lines "  <name>: <reason>" of refused items, and a
  last line with how many more there are."""
  refused = counter.refused()
  lines = [f"  {name}: {counter.describe(code)}"
           for name, code in refused[:limit]]
  if len(refused) > limit:
    lines.append(f"  ... and {len(refused) - limit} more")
  return lines


__all__ = ["CORRUPT", "DECODE_REASONS", "EMPTY", "FAILED", "NOT_IMAGE",
           "NO_USABLE_DATA", "NoUsableDataError", "OK", "REASONS",
           "SkipCounter", "TOO_LARGE", "TRUNCATED", "UNDERSIZED", "UNUSABLE",
           "first_lines"]
