"""Training data sources: TFDS, image folders, motion masks, offline samples.

Doersch & Zisserman (ICCV 2017) train on ImageNet (RP, Col, Ex) and on video
frames with motion masks (MS). :func:`make_source` gives every kind of input
the same shape, a :class:`Source` whose ``dataset`` yields one pass over the
examples as dicts::

    {"image": uint8 [H, W, 3], "id": int64 []}
    # kinds "motion" and "tfds_motion" add "mask": uint8 [H, W]

``id`` is a stable per-example integer, unique within the source; the
exemplar task uses it as the pseudo-class label.

Kinds:
  * ``"tfds"``: any TFDS image dataset already prepared in ``data_dir``
    (``imagenet2012``, ...), read with ``tfds.builder(name,
    data_dir).as_dataset`` (never downloads). Images are decoded here, not by
    TFDS, so that a corrupt record is skipped rather than fatal.
  * ``"folder"``: every .jpg/.jpeg/.png/.bmp/.gif/.webp file under ``path``,
    recursively (first frame of animations).
  * ``"motion"``: the TFRecords of :mod:`mtssl_tf.motion` (``path`` is a
    glob, a list of globs or a folder of ``*.tfrecord`` files).
  * ``"offline"``: the built-in sample set of :mod:`mtssl_tf.data.offline`:
    photos and video frames, split ``"train"`` (default), ``"heldout"``
    or ``"all"`` by whole source.
  * ``"tfds_motion"``: frames and masks of a prepared TFDS motion dataset
    (``name``, default builder :mod:`mtssl_tf.data.mtssl_motion`), with
    ``"mask"`` like ``"motion"``.

Bad input never stops a run: images that fail to decode (corrupt, empty,
truncated, unreadable) and images whose shorter side is below ``min_size``
are dropped inside ``tf.data`` and counted in the source's
:class:`SkipCounter` (``counter.summary()`` is a log line). Grey images become
RGB (channel repeated) and RGBA images drop alpha, the rules of
:func:`mtssl_tf.ops.image.ensure_rgb`. Errors that mean the whole source is
unusable (unknown kind, missing folder, no files, dataset not prepared) are
raised by :func:`make_source`, before training starts.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from mtssl_tf import config as config_lib
from mtssl_tf.data.image_files import (IMAGE_EXTENSIONS, checked_decode,
                                       decode_image, list_image_files)
from mtssl_tf.data.skips import (CORRUPT, EMPTY, FAILED, NOT_IMAGE, OK,
                                 TOO_LARGE, TRUNCATED, UNDERSIZED,
                                 SkipCounter)

# An image op (ops layer); still importable from here, where it is used.
from mtssl_tf.ops.image import limit_image_size

KINDS = ("tfds", "folder", "motion", "offline", "tfds_motion")
# kind "offline": draw every image once a pass ("image"), or every source (a
# photo, or a whole video) equally often ("source").
OFFLINE_BALANCE = config_lib.OFFLINE_BALANCE


@dataclasses.dataclass
class Source:
  """One pass over a source's examples, with its skip counter.

  Attributes:
    dataset: ``tf.data.Dataset`` of ``{"image": uint8 [H, W, 3], "id": int64
      []}`` (plus ``"mask": uint8 [H, W]`` for motion); one pass, not
      repeated, not batched.
    counter: where the pipeline counts skipped examples.
    kind: one of :data:`KINDS`.
    description: what was opened, for the log.
    num_files: number of files or records known up front (``None`` when
      unknown, e.g. TFRecords).
  """

  dataset: tf.data.Dataset
  counter: SkipCounter
  kind: str
  description: str
  num_files: Optional[int] = None


# ---------------------------------------------------------------------------
# Element-wise helpers (all usable inside tf.data).


def _size_status(image: tf.Tensor, min_size: int) -> tf.Tensor:
  shape = tf.shape(image)
  small = tf.minimum(shape[0], shape[1]) < min_size
  return tf.where(small, UNDERSIZED, OK)


def _zeros_like_spec(spec: Any) -> Any:
  """A placeholder value matching ``spec``, unknown dimensions set to 0."""

  def one(s):
    if s.shape.rank is None:  # compatible with any shape
      shape = []
    else:
      shape = [0 if d is None else d for d in s.shape.as_list()]
    if s.dtype == tf.string:
      return tf.fill(shape, "")
    return tf.zeros(shape, s.dtype)

  return tf.nest.map_structure(one, spec)


def try_map(dataset: tf.data.Dataset, fn: Callable[[Any], Any],
            num_parallel_calls: int = tf.data.AUTOTUNE,
            deterministic: Optional[bool] = None,
            error_status: int = CORRUPT,
            with_status: bool = False,
            tag: Optional[Callable[[Any], Any]] = None) -> tf.data.Dataset:
  """``dataset.map(fn)`` where elements on which ``fn`` fails are flagged.

  Yields ``(fn(element), status)``: ``status`` is :data:`OK`, or
  ``error_status`` with a zero placeholder (unknown dimensions 0) when ``fn``
  raised a ``tf.errors.OpError`` (corrupt bytes, failed assertions). Each
  element is tried inside its own one-element dataset with
  ``ignore_errors``, followed by the placeholder; the first element wins.
  This keeps errors visible to a counting filter downstream, which plain
  ``Dataset.ignore_errors`` (silent) cannot.

  ``fn`` takes the element as one argument (a tuple element arrives as a
  tuple). With ``with_status``, ``fn`` returns ``(value, status)`` itself
  (a refusal it found without an error, e.g. a file that is not an image).
  With ``tag``, elements are ``(value, status, tag(element))``: something
  of the input (its id, say) that survives a failure of ``fn``.
  """

  def call(*element):
    # Dataset.map unpacks tuple elements into arguments; fn takes one value.
    out = fn(element[0] if len(element) == 1 else element)
    if with_status:
      value, status = out
      return value, tf.cast(status, tf.int32)
    return out, tf.constant(OK)

  def attempt(*element):
    element = element[0] if len(element) == 1 else element
    single = tf.data.Dataset.from_tensors(element)
    good = single.map(call).ignore_errors()
    placeholder = _zeros_like_spec(good.element_spec[0])
    bad = tf.data.Dataset.from_tensors(
        (placeholder, tf.constant(error_status)))
    out = good.concatenate(bad).take(1)
    if tag is not None:
      tagged = tag(element)
      out = out.map(lambda value, status: (value, status, tagged))
    return out

  if num_parallel_calls is None or num_parallel_calls == tf.data.AUTOTUNE:
    cycle_length = tf.data.AUTOTUNE
  else:
    cycle_length = max(1, int(num_parallel_calls))
  # Each inner dataset holds exactly one element, so with block_length 1 the
  # interleave keeps the input order (when deterministic).
  return dataset.interleave(
      attempt, cycle_length=cycle_length, block_length=1,
      num_parallel_calls=num_parallel_calls, deterministic=deterministic)


def _with_ids(tagged: tf.data.Dataset) -> tf.data.Dataset:
  """``(example, status, id)`` of :func:`try_map` -> ``(example, status)``
  whose ``"id"`` is the input's, also when ``example`` is a failure's
  placeholder (so a refusal is remembered under the right file)."""

  def restore(example, status, item):
    example = dict(example)
    example["id"] = item
    return example, status

  return tagged.map(restore)


def _finish(decoded: tf.data.Dataset, counter: SkipCounter, min_size: int,
            image_size_limit: Optional[int]) -> tf.data.Dataset:
  """(example, status) -> counted, filtered, size-limited examples."""

  def with_size_status(example, status):
    status = tf.where(tf.equal(status, OK),
                      _size_status(example["image"], min_size), status)
    return example, status

  dataset = decoded.map(with_size_status)
  dataset = dataset.filter(
      lambda example, status: counter.keep(status, item=example["id"]))
  dataset = dataset.map(lambda example, status: example)
  if image_size_limit is not None:
    limit = int(image_size_limit)

    def shrink(example):
      example = dict(example)
      example["image"] = limit_image_size(example["image"], limit)
      if "mask" in example:
        example["mask"] = limit_image_size(
            example["mask"][..., tf.newaxis], limit, method="nearest")[..., 0]
      return example

    dataset = dataset.map(shrink, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True)
  return dataset


# ---------------------------------------------------------------------------
# Kinds.


def files_dataset(files: Sequence[str], counter: SkipCounter, *,
                  min_size: int = 1, image_size_limit: Optional[int] = None,
                  shuffle: bool = False, seed: int = 0,
                  num_parallel_calls: int = tf.data.AUTOTUNE,
                  deterministic: Optional[bool] = None,
                  ids: Optional[Sequence[int]] = None) -> tf.data.Dataset:
  """Examples from a list of image files; ``id`` is the index in ``files``
  (or ``ids[i]``: a shard keeps the ids of the whole list, so that ids stay
  unique across input pipelines).

  With ``shuffle`` the (cheap) list of paths is shuffled, with ``seed``,
  anew on every pass, before anything is read. Files are checked before
  they are decoded (:func:`~mtssl_tf.data.image_files.checked_decode`); when
  ``counter`` tracks the list (:meth:`SkipCounter.track`), a file refused
  there is not read again.
  """
  paths = tf.constant([os.fspath(f) for f in files], tf.string)
  dataset = tf.data.Dataset.from_tensor_slices(
      {"path": paths,
       "id": (tf.range(len(files), dtype=tf.int64) if ids is None
              else tf.constant(list(ids), tf.int64))})
  if shuffle:
    dataset = dataset.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)

  if counter.tracks_items:
    # Skipping them changes nothing downstream (they never get past the
    # source) but their decoding errors and reads.
    dataset = dataset.filter(
        lambda element: tf.logical_not(counter.known_bad(element["id"])))

  def load(element):
    # Reading inside the guarded function: a file deleted or unreadable
    # mid-run counts as corrupt instead of stopping the run.
    image, status = checked_decode(tf.io.read_file(element["path"]))
    return {"image": image, "id": element["id"]}, status

  decoded = try_map(dataset, load, num_parallel_calls, deterministic,
                    with_status=True, tag=lambda element: element["id"])
  return _finish(_with_ids(decoded), counter, min_size, image_size_limit)


def _shard_list(items, num_shards: int, shard_index: int, what: str):
  """Every ``num_shards``-th item from ``shard_index``: one input pipeline's
  share of a file list, and the items' indices in the whole list."""
  indices = list(range(len(items)))[shard_index::num_shards]
  if not indices:
    raise ValueError(
        f"{len(items)} {what} cannot be split over {num_shards} input "
        f"pipelines: pipeline {shard_index} would get none")
  return [items[i] for i in indices], indices


def _shard_note(num_shards: int, shard_index: int) -> str:
  return f" (shard {shard_index} of {num_shards})" if num_shards > 1 else ""


def _folder_source(path, counter, num_shards=1, shard_index=0,
                   **kw) -> Source:
  if path is None:
    raise ValueError("kind 'folder' needs path=<folder of images>")
  everything = list_image_files(path)
  files, ids = _shard_list(everything, num_shards, shard_index,
                           "image files")
  counter.track(everything, readable=len(files), item_kind="files",
                what=f"image folder {path}")
  return Source(files_dataset(files, counter, ids=ids, **kw), counter,
                "folder",
                f"{len(files)} image files under {path}"
                + _shard_note(num_shards, shard_index), len(files))


def _offline_source(counter, *, repeats: int = 1, packages=None,
                    split: str = "train", frame_stride: Optional[int] = None,
                    balance: str = "image", min_size: int = 1,
                    image_size_limit: Optional[int] = None,
                    shuffle: bool = False, seed: int = 0,
                    num_parallel_calls: int = tf.data.AUTOTUNE,
                    deterministic: Optional[bool] = None,
                    num_shards: int = 1, shard_index: int = 0) -> Source:
  del num_parallel_calls, deterministic  # nothing is decoded per element
  from mtssl_tf.data import offline  # pylint: disable=g-import-not-at-top
  if repeats < 1:
    raise ValueError(f"repeats must be >= 1, got {repeats}")
  if balance not in OFFLINE_BALANCE:
    raise ValueError(f"balance={balance!r}; allowed: "
                     f"{', '.join(OFFLINE_BALANCE)}")
  stride = offline.DEFAULT_FRAME_STRIDE if frame_stride is None \
      else int(frame_stride)
  photos = offline.offline_images(image_size_limit, packages, split) \
      if _has_photos(packages, split) else []
  frames = offline.offline_frames(image_size_limit, stride, packages, split)
  if not photos and not frames:
    # Names the extra to install (offline_image_files raises it).
    offline.offline_image_files(packages, split)
  # Sharded by index over photos then frames; ids stay global, so exemplar
  # labels stay unique across input pipelines.
  images, ids = _shard_list(
      [image for _, image in photos] + [f.image for f in frames],
      num_shards, shard_index, "offline sample images")
  counter.track([name for name, _ in photos]
                + [f"{f.source} frame {f.index}" for f in frames],
                readable=len(ids), item_kind="images",
                what=f"the offline sample set (split {split})")
  order = np.arange(len(images), dtype=np.int64)
  if balance == "source":
    # ids are the images' indices in the whole list: the shard's sources.
    names = [name for name, _ in photos] + [f.source for f in frames]
    order, per_source, num_sources = _balanced_order(
        [names[i] for i in ids])
  load = _flat_image_loader(images, ids)
  dataset = tf.data.Dataset.from_tensor_slices(order)
  if shuffle:
    dataset = dataset.shuffle(len(order), seed=seed,
                              reshuffle_each_iteration=True)
  if repeats > 1:
    dataset = dataset.repeat(repeats)
  dataset = _finish(dataset.map(load), counter, min_size, None)
  description = (_offline_description(photos, frames, stride, split)
                 + _shard_note(num_shards, shard_index))
  if repeats > 1:
    description += f", repeated {repeats} times"
  if balance == "source":
    description += (f", balanced by source: {per_source} draws of each of "
                    f"{num_sources} photos and videos a pass")
  return Source(dataset, counter, "offline", description, len(order))


def _flat_image_loader(images: Sequence[np.ndarray], ids: Sequence[int]
                       ) -> Callable[[tf.Tensor], Any]:
  """``load(index) -> ({"image", "id"}, OK)`` over ``images`` held in one
  flat constant buffer.

  Photos and frames are decoded once (frames cached per process) into one
  flat buffer; the dataset shuffles indices and slices images out of it.
  Shuffling indices rather than images keeps shuffle buffers (and the
  trainer's checkpointed iterator state) small: a few hundred frames are
  tens of MB, and decoding them again on every pass made the input
  pipelines slower than the trainer (benchmarks/train_step.py).
  """
  sizes = np.array([im.size for im in images], np.int64)
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  shapes = np.array([im.shape for im in images], np.int64)
  buffer = tf.constant(np.concatenate([im.reshape(-1) for im in images]))
  offsets, sizes, shapes = (tf.constant(offsets), tf.constant(sizes),
                            tf.constant(shapes))
  ids = tf.constant(ids, tf.int64)

  def load(index):
    flat = buffer[offsets[index]:offsets[index] + sizes[index]]
    image = tf.reshape(flat, shapes[index])
    image.set_shape([None, None, 3])
    return {"image": image, "id": ids[index]}, tf.constant(OK)

  return load


def _offline_description(photos, frames, stride: int, split: str) -> str:
  """What an offline source holds: photos, frames, videos, stride, split."""
  video_names = sorted({f.source for f in frames})
  return (f"{len(photos)} offline photos and {len(frames)} frames of "
          f"{len(video_names)} video{'s' * (len(video_names) != 1)} "
          f"(every {stride}), split {split}")


def _balanced_order(names: Sequence[str]) -> Tuple[np.ndarray, int, int]:
  """Indices into ``names`` (the source of each image of one input
  pipeline's share) for one pass in which every source (a photo, or a whole
  video) is drawn equally often: as often as the largest has images.
  Returns the indices, that count and the number of sources."""
  by_source: Dict[str, List[int]] = {}
  for index, name in enumerate(names):
    by_source.setdefault(name, []).append(index)
  per_source = max(len(v) for v in by_source.values())
  order = [np.resize(np.asarray(v, np.int64), per_source)
           for _, v in sorted(by_source.items())]
  return np.concatenate(order), per_source, len(by_source)


def _has_photos(packages, split) -> bool:
  from mtssl_tf.data import offline  # pylint: disable=g-import-not-at-top
  try:
    offline.offline_image_files(packages, split)
  except offline.OfflineDataError:
    return False
  return True


def _motion_files(path) -> List[str]:
  from mtssl_tf import motion  # pylint: disable=g-import-not-at-top
  if path is None:
    raise ValueError("kind 'motion' needs path=<TFRecord glob or folder>")
  if isinstance(path, (str, os.PathLike)) and tf.io.gfile.isdir(
      os.fspath(path)):
    pattern = os.path.join(os.fspath(path), "*.tfrecord*")
    if not tf.io.gfile.glob(pattern):
      raise FileNotFoundError(
          "no motion-mask TFRecords (*.tfrecord) in folder "
          f"{os.fspath(path)!r}; "
          "write them with `python -m mtssl_tf.make_motion_masks`")
    path = pattern
  return motion.list_tfrecords(path)


def _motion_source(path, counter, *, min_size: int = 1,
                   image_size_limit: Optional[int] = None,
                   shuffle: bool = False, seed: int = 0,
                   num_parallel_calls: int = tf.data.AUTOTUNE,
                   deterministic: Optional[bool] = None,
                   num_shards: int = 1, shard_index: int = 0) -> Source:
  from mtssl_tf import motion  # pylint: disable=g-import-not-at-top
  files = _motion_files(path)
  # Whole files per pipeline when there are enough of them, else records.
  by_file = len(files) >= num_shards
  if by_file:
    files, _ = _shard_list(files, num_shards, shard_index, "motion files")
  file_ds = tf.data.Dataset.from_tensor_slices(files)
  if shuffle:
    file_ds = file_ds.shuffle(len(files), seed=seed,
                              reshuffle_each_iteration=True)
    records = file_ds.interleave(tf.data.TFRecordDataset,
                                 cycle_length=min(len(files), 16),
                                 deterministic=deterministic)
  else:
    records = tf.data.TFRecordDataset(files)
  if not by_file:
    records = records.shard(num_shards, shard_index)

  def load(serialized):
    example = motion.parse_example(serialized, with_metadata=True)
    check = tf.debugging.assert_equal(
        tf.shape(example["image"])[:2], tf.shape(example["mask"]),
        message="motion record: mask and frame differ in size")
    with tf.control_dependencies([check]):
      image = tf.identity(example["image"])
    # A fingerprint of (video name, frame index) is stable under file
    # shuffling and when files are added, and unique unless two videos share
    # a file name (make_motion_masks names records after the video file).
    key = tf.strings.join([example["video"], "#",
                           tf.strings.as_string(example["frame_index"])])
    return {"image": image, "mask": example["mask"], "id": _hash_id(key)}

  decoded = try_map(records, load, num_parallel_calls, deterministic)
  return Source(_finish(decoded, counter, min_size, image_size_limit), counter,
                "motion", f"{len(files)} motion TFRecord files"
                + _shard_note(num_shards, shard_index),
                _count_small(files, num_shards if not by_file else 1))


# Record files up to this size are counted when opened (a fraction of a
# second): the pipeline's guard then knows the length of a pass.
COUNT_RECORDS_BYTES = 64 * 2**20


def _count_small(files: Sequence[str], num_shards: int = 1) -> Optional[int]:
  """Records in ``files`` (per shard), when they are small enough to count."""
  if sum(tf.io.gfile.stat(f).length for f in files) > COUNT_RECORDS_BYTES:
    return None
  count = sum(1 for _ in tf.data.TFRecordDataset(list(files)))
  return max(1, -(-count // num_shards))


def _hash_id(key: tf.Tensor) -> tf.Tensor:
  """A non-negative int64 id from a string key (64-bit fingerprint)."""
  return tf.strings.to_hash_bucket_fast(key, 2**63 - 1)


def _image_feature_key(builder, image_key: Optional[str]) -> str:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  features = builder.info.features
  if image_key is not None:
    if image_key not in features:
      raise ValueError(
          f"TFDS dataset {builder.name!r} has no feature {image_key!r}; "
          f"features: {', '.join(features.keys())}")
    return image_key
  if "image" in features:
    return "image"
  images = [k for k, f in features.items()
            if isinstance(f, tfds.features.Image)]
  if not images:
    raise ValueError(
        f"TFDS dataset {builder.name!r} has no image feature; features: "
        f"{', '.join(features.keys())}")
  return images[0]


def _open_tfds(name, data_dir, split, shuffle, seed, decoders_for,
               num_shards: int = 1, shard_index: int = 0):
  """``(builder, raw dataset, where)`` of a prepared TFDS dataset; clear
  errors for an unknown or unprepared one. ``decoders_for(builder)`` gives
  the features to leave encoded (decoded later, where a corrupt record is
  a counted skip instead of an error that ends the run). With
  ``num_shards`` > 1 only the file shards of input pipeline
  ``shard_index`` are read."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  # The package's own builders register on import.
  from mtssl_tf.data import mtssl_motion_builder  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    # TFDS's message goes on to list every registered dataset: keep line 1.
    first_line = str(e).strip().splitlines()[0]
    raise ValueError(f"unknown TFDS dataset {name!r} ({first_line}); see "
                     "`tfds.list_builders()`") from None
  decoders = decoders_for(builder)
  read_config = tfds.ReadConfig(add_tfds_id=True, shuffle_seed=seed,
                                try_autocache=False)
  if num_shards > 1:
    # TFDS gives each input pipeline its own file shards.
    read_config.input_context = tf.distribute.InputContext(
        num_input_pipelines=num_shards, input_pipeline_id=shard_index)
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
  try:
    raw = builder.as_dataset(
        split=split, shuffle_files=shuffle, read_config=read_config,
        decoders={k: tfds.decode.SkipDecoding() for k in decoders})
  except AssertionError as e:  # TFDS's "could not find data" check.
    how = f"`tfds build {name} --data_dir=<dir>`"
    if name == "imagenet2012":
      how += (" (imagenet2012 needs the ImageNet tar files in "
              "<dir>/downloads/manual/ first)")
    elif name == "mtssl_motion":
      how = ("`python -m mtssl_tf.data.mtssl_motion "
             "--manual_dir=<folder of videos> --data_dir=<dir>`")
    raise FileNotFoundError(
        f"TFDS dataset {name!r} is not prepared in {where}. Prepare it once "
        f"with {how}, then pass data_dir=<dir>. Nothing is downloaded at "
        f"training time. ({e})"
    ) from None
  return builder, raw, where


def _tfds_source(name, data_dir, split, counter, *, image_key=None,
                 min_size: int = 1, image_size_limit: Optional[int] = None,
                 shuffle: bool = False, seed: int = 0,
                 num_parallel_calls: int = tf.data.AUTOTUNE,
                 deterministic: Optional[bool] = None,
                 num_shards: int = 1, shard_index: int = 0) -> Source:
  if not name:
    raise ValueError("kind 'tfds' needs name=<TFDS dataset>, e.g. "
                     "'imagenet2012'")
  keys = []

  def decoders_for(builder):
    keys.append(_image_feature_key(builder, image_key))
    return keys

  _, raw, where = _open_tfds(name, data_dir, split, shuffle, seed,
                             decoders_for, num_shards, shard_index)
  key = keys[0]

  def load(example):
    image, status = checked_decode(example[key])
    return {"image": image, "id": _hash_id(example["tfds_id"])}, status

  decoded = try_map(raw, load, num_parallel_calls, deterministic,
                    with_status=True)
  return Source(_finish(decoded, counter, min_size, image_size_limit), counter,
                "tfds", f"TFDS {name}[{split}] from {where}"
                + _shard_note(num_shards, shard_index), None)


MOTION_TFDS_FEATURES = ("frame", "mask", "video_id", "frame_index")


def _tfds_motion_source(name, data_dir, split, counter, *,
                        min_size: int = 1,
                        image_size_limit: Optional[int] = None,
                        shuffle: bool = False, seed: int = 0,
                        num_parallel_calls: int = tf.data.AUTOTUNE,
                        deterministic: Optional[bool] = None,
                        num_shards: int = 1, shard_index: int = 0) -> Source:
  name = name or "mtssl_motion"

  def decoders_for(builder):
    missing = [k for k in MOTION_TFDS_FEATURES
               if k not in builder.info.features]
    if missing:
      raise ValueError(
          f"TFDS dataset {name!r} is not a motion dataset: it lacks "
          f"{', '.join(missing)} (features: "
          f"{', '.join(builder.info.features.keys())})")
    return ["frame", "mask"]

  _, raw, where = _open_tfds(name, data_dir, split, shuffle, seed,
                             decoders_for, num_shards, shard_index)

  def load(example):
    image = decode_image(example["frame"])
    mask = tf.io.decode_png(example["mask"], channels=1)[..., 0]
    check = tf.debugging.assert_equal(
        tf.shape(image)[:2], tf.shape(mask),
        message="motion example: mask and frame differ in size")
    with tf.control_dependencies([check]):
      image = tf.identity(image)
    # The same id as the TFRecord path's: (video, frame index).
    key = tf.strings.join([example["video_id"], "#",
                           tf.strings.as_string(example["frame_index"])])
    return {"image": image, "mask": mask, "id": _hash_id(key)}

  decoded = try_map(raw, load, num_parallel_calls, deterministic)
  return Source(_finish(decoded, counter, min_size, image_size_limit), counter,
                "tfds_motion", f"TFDS {name}[{split}] from {where}"
                + _shard_note(num_shards, shard_index), None)


def make_source(kind: str, *, data_dir: Optional[str] = None,
                path: Union[str, Sequence[str], None] = None,
                split: str = "train", name: Optional[str] = None,
                image_size_limit: Optional[int] = None, min_size: int = 1,
                shuffle: bool = False, seed: int = 0,
                num_parallel_calls: int = tf.data.AUTOTUNE,
                deterministic: Optional[bool] = None,
                image_key: Optional[str] = None, repeats: int = 1,
                packages: Optional[Sequence[str]] = None,
                frame_stride: Optional[int] = None, balance: str = "image",
                counter: Optional[SkipCounter] = None,
                num_shards: int = 1, shard_index: int = 0) -> Source:
  """Opens a training data source (see the module docstring for the kinds).

  Example:
    >>> source = make_source("folder", path="/data/photos", min_size=64)
    >>> for example in source.dataset.take(1):
    ...   example["image"].shape, example["id"]
    >>> print(source.counter.summary())  # skipped 1 corrupt images (of 9 read)

  Args:
    kind: ``"tfds"``, ``"folder"``, ``"motion"``, ``"offline"`` or
      ``"tfds_motion"``.
    data_dir: TFDS data folder (kinds ``"tfds"``, ``"tfds_motion"``).
    path: image folder (``"folder"``); TFRecord glob, list of globs or folder
      (``"motion"``).
    split: TFDS split (``"train"``, ``"validation"``, ``"train[:1%]"``...);
      kind ``"offline"``: ``"train"``, ``"heldout"`` (whole photos and
      videos kept out of training, see
      :data:`mtssl_tf.data.offline.HELDOUT_SOURCES`) or ``"all"``.
    name: TFDS dataset name, e.g. ``"imagenet2012"`` (``"tfds_motion"``:
      default ``"mtssl_motion"``).
    image_size_limit: downscale images (and masks, nearest) whose shorter
      side exceeds this many pixels, keeping the aspect ratio; bounds the
      memory of shuffle buffers. ``None`` keeps the stored size.
    min_size: images whose shorter side is below this are skipped and
      counted as undersized (checked before ``image_size_limit``).
    shuffle: shuffle files (TFDS, motion) or the file list (folder,
      offline), with ``seed``, anew each pass. Per-example shuffling is the
      pipeline's job (:func:`mtssl_tf.data.pipeline.task_dataset`).
    seed: seed of that shuffling.
    num_parallel_calls: parallelism of decoding.
    deterministic: order guarantee of the parallel decoding (``None``: the
      ``tf.data.Options`` of the final pipeline decide).
    image_key: TFDS feature holding the image (default ``"image"``, else the
      first Image feature).
    repeats: kind ``"offline"`` only: passes over the few photos per pass of
      the source.
    packages: kind ``"offline"`` only: restrict to these packages.
    frame_stride: kind ``"offline"`` only: keep every n-th video frame
      (default :data:`mtssl_tf.data.offline.DEFAULT_FRAME_STRIDE`).
    balance: kind ``"offline"`` only: ``"image"`` draws every photo and
      frame once a pass (a 400-frame video then outweighs a photo 400 to
      1); ``"source"`` draws every source (a photo, or a whole video)
      equally often, as often as the largest has images.
    counter: count skips into this counter (default: a new one).
    num_shards, shard_index: open only this input pipeline's share: every
      ``num_shards``-th file (folder, offline, motion), TFDS file shards
      (``ReadConfig.input_context``), or records (motion with fewer files
      than shards).

  Returns:
    A :class:`Source`.

  Raises:
    ValueError: unknown kind (the message lists the known kinds), a missing
      argument, an unknown TFDS dataset.
    FileNotFoundError: missing folder, no files, TFDS dataset not prepared,
      no offline package installed; the message names the path or dataset.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown data source kind {kind!r}; known kinds: "
                     f"{', '.join(KINDS)}")
  if min_size < 1:
    raise ValueError(f"min_size must be >= 1, got {min_size}")
  if image_size_limit is not None and image_size_limit < 1:
    raise ValueError(f"image_size_limit must be >= 1 or None, got "
                     f"{image_size_limit}")
  if kind != "offline" and (repeats != 1 or packages is not None
                            or frame_stride is not None
                            or balance != "image"):
    raise ValueError("repeats, packages, frame_stride and balance apply to "
                     "kind 'offline' only")
  if not (isinstance(num_shards, int) and num_shards >= 1
          and isinstance(shard_index, int) and 0 <= shard_index < num_shards):
    raise ValueError(f"shard_index={shard_index!r} of num_shards="
                     f"{num_shards!r}: need 0 <= shard_index < num_shards")
  counter = SkipCounter() if counter is None else counter
  common = dict(min_size=min_size, image_size_limit=image_size_limit,
                shuffle=shuffle, seed=seed,
                num_parallel_calls=num_parallel_calls,
                deterministic=deterministic, num_shards=num_shards,
                shard_index=shard_index)
  if kind == "tfds":
    build = functools.partial(_tfds_source, name, data_dir, split, counter,
                              image_key=image_key, **common)
  elif kind == "folder":
    build = functools.partial(_folder_source, path, counter, **common)
  elif kind == "motion":
    build = functools.partial(_motion_source, path, counter, **common)
  elif kind == "tfds_motion":
    build = functools.partial(_tfds_motion_source, name, data_dir, split,
                              counter, **common)
  else:
    build = functools.partial(
        _offline_source, counter, repeats=repeats, packages=packages,
        split=split, frame_stride=frame_stride, balance=balance, **common)
  # The sources' tf.data functions are graph code as written (tf.cond, no
  # Python control flow on tensors): traced without AutoGraph's conversion.
  return tf.autograph.experimental.do_not_convert(build)()


__all__ = ["KINDS", "IMAGE_EXTENSIONS", "OFFLINE_BALANCE", "SkipCounter",
           "Source",
           "decode_image", "files_dataset", "limit_image_size",
           "list_image_files", "make_source", "try_map"]
