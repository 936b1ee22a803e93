"""The ``mtssl_motion`` TFDS dataset, end to end on
synthetic videos the test writes: a manual folder with train/ and
validation/ videos -> ``download_and_prepare(manual_dir=...)`` ->
``tfds.load``; every example equals the package's motion pipeline run
directly on the video and overlaps the known moving square; the training
source and the train command's ``--data=tfds`` (in-process) read it. (The
TFRecord path is covered by tests/test_data_sources.py and test_motion.py.)"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mtssl_tf import motion
from mtssl_tf import options
from mtssl_tf.data import mtssl_motion
from mtssl_tf.data.sources import make_source
from mtssl_tf.training.trainer import Trainer
from test_motion import synthetic_video  # the test helper of the masks
import fork_server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 96
FRAMES = 12
CONFIG = mtssl_motion.MtsslMotion.BUILDER_CONFIGS[0]


def _videos(root):
  """train/a.avi (square moving under a pan), train/still.avi (no motion),
  validation/b.avi; returns the true square masks per video."""
  truths = {}
  os.makedirs(os.path.join(root, "train"))
  os.makedirs(os.path.join(root, "validation"))
  for rel, kwargs in [
      ("train/a.avi", dict(seed=0)),
      ("validation/b.avi", dict(seed=1, pan=(0, 2), obj_velocity=(1, 1)))]:
    video, truth = synthetic_video(size=SIZE, frames=FRAMES, **kwargs)
    motion.write_video(os.path.join(root, rel), video)
    truths[os.path.basename(rel)] = truth
  still, _ = synthetic_video(size=SIZE, frames=1, seed=2)
  motion.write_video(os.path.join(root, "train", "still.avi"),
                     np.repeat(still, 8, axis=0))
  return truths


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  base = tmp_path_factory.mktemp("mtssl_motion")
  manual = str(base / "videos")
  truths = _videos(manual)
  data_dir = str(base / "tfds")
  builder = tfds.builder("mtssl_motion", data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual))
  return manual, data_dir, truths


def _direct(path):
  """The package's motion pipeline run directly on the video file: the
  decoded frames and {target index: FrameMask}."""
  config = motion.MotionMaskConfig(**CONFIG.mask)
  frames = list(motion.iter_video_frames(path, config.max_side))
  items = {m.index: m for m in motion.iter_motion_masks(frames, config,
                                                         CONFIG.every)}
  return np.stack(frames).astype(int), items


def test_builder_version_splits_and_features(prepared):
  _, data_dir, _ = prepared
  builder = tfds.builder("mtssl_motion", data_dir=data_dir)
  assert str(builder.info.version) == "1.0.0"
  assert set(builder.info.splits) == {"train", "validation"}
  assert set(builder.info.features) == {
      "frame", "mask", "video_id", "frame_index", "moving_fraction"}
  assert builder.info.supervised_keys == ("frame", "mask")
  for split in ("train", "validation"):
    assert builder.info.splits[split].num_examples >= 2


def test_tfds_load_matches_the_motion_pipeline(prepared):
  manual, data_dir, truths = prepared
  for split, video in (("train", "a.avi"), ("validation", "b.avi")):
    ds = tfds.load("mtssl_motion", split=split, data_dir=data_dir)
    examples = list(tfds.as_numpy(ds))
    # The static video contributed nothing; ids are split-relative names.
    assert {e["video_id"].decode() for e in examples} == {video}
    indices = sorted(int(e["frame_index"]) for e in examples)
    assert all(i % CONFIG.every == 0 for i in indices)
    frames, items = _direct(os.path.join(manual, split, video))
    for e in examples:
      index = int(e["frame_index"])
      direct = items[index]
      assert direct.status == "moving"
      assert e["frame"].shape == (SIZE, SIZE, 3)
      assert e["mask"].shape == (SIZE, SIZE, 1)
      np.testing.assert_array_equal(e["mask"][..., 0], direct.mask)
      # JPEG is lossy (and the synthetic texture is all high frequencies):
      # the stored frame is near its video frame and nearer to it than to
      # any other frame of the video.
      errors = np.abs(frames - e["frame"].astype(int)).mean(axis=(1, 2, 3))
      assert errors[index] < 12 and int(np.argmin(errors)) == index, errors
      assert e["moving_fraction"] == pytest.approx(direct.fraction)
      # Independent of the pipeline: the mask finds the moving square.
      assert motion.mask_iou(e["mask"][..., 0], truths[video][index]) > 0.5


def test_training_source_reads_frames_masks_and_ids(prepared):
  _, data_dir, _ = prepared
  source = make_source("tfds_motion", data_dir=data_dir, split="train")
  examples = list(source.dataset.as_numpy_iterator())
  raw = list(tfds.as_numpy(tfds.load("mtssl_motion", split="train",
                                     data_dir=data_dir)))
  assert len(examples) == len(raw)
  by_index = {int(e["frame_index"]): e for e in raw}
  for example in examples:
    assert example["image"].shape == (SIZE, SIZE, 3)
    assert example["mask"].shape == (SIZE, SIZE)
    assert set(np.unique(example["mask"])) <= {0, 1}
  ids = {int(e["id"]) for e in examples}
  # The id is the TFRecord path's: a hash of "<video>#<frame index>".
  expected = {int(tf.strings.to_hash_bucket_fast(f"a.avi#{i}", 2**63 - 1))
              for i in by_index}
  assert ids == expected
  with pytest.raises(FileNotFoundError,
                     match="python -m mtssl_tf.data.mtssl_motion "
                     "--manual_dir="):
    make_source("tfds_motion", data_dir=os.path.join(data_dir, "empty"))


def test_manual_folder_errors_name_the_problem(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    mtssl_motion.videos_by_split(str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match="no video .* split train"):
    mtssl_motion.videos_by_split(str(tmp_path))
  (tmp_path / "validation").mkdir()
  (tmp_path / "validation" / "x.mp4").write_bytes(b"")
  (tmp_path / "loose.avi").write_bytes(b"")
  with pytest.raises(ValueError, match="videos outside them .*loose.avi"):
    mtssl_motion.videos_by_split(str(tmp_path))
  os.remove(tmp_path / "loose.avi")
  flat = tmp_path / "flat"
  (flat / "sub").mkdir(parents=True)
  (flat / "sub" / "y.MP4").write_bytes(b"")
  assert mtssl_motion.videos_by_split(str(flat)) == {
      "train": (str(flat), [str(flat / "sub" / "y.MP4")])}


def test_prepare_command_on_a_flat_folder(tmp_path):
  """``python -m mtssl_tf.data.mtssl_motion`` as a user runs it (the module
  is then ``__main__``), on videos directly in the folder."""
  video, _ = synthetic_video(size=64, frames=7, seed=3)
  (tmp_path / "videos").mkdir()
  motion.write_video(str(tmp_path / "videos" / "c.avi"), video)
  data_dir = str(tmp_path / "tfds")
  command = ["-m", "mtssl_tf.data.mtssl_motion"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  out = fork_server.run(command + [f"--manual_dir={tmp_path / 'videos'}",
                                   f"--data_dir={data_dir}"],
                        cwd=REPO, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  builder = tfds.builder("mtssl_motion", data_dir=data_dir)
  assert set(builder.info.splits) == {"train"}  # no split folders
  n = builder.info.splits["train"].num_examples
  assert n >= 1 and f"train: {n} frames with motion" in out.stdout
  assert mtssl_motion.main([f"--manual_dir={tmp_path / 'none'}"]) == 2


@pytest.mark.slow
def test_train_cli_trains_motion_segmentation_from_tfds(prepared, tmp_path,
                                                        mirrored):
  # The train command's arguments through its library parser
  # (mtssl_tf.options, which tests/test_train_cli.py checks agrees with the
  # absl flags) and the Trainer, in-process on one CPU replica as the command
  # runs here: a subprocess would spend ~10 s importing TensorFlow again.
  _, data_dir, _ = prepared
  run_dir = str(tmp_path / "run")
  args = ["--flagfile=configs/smoke.cfg", "--tasks=motion_segmentation",
          "--data=tfds", "--offline_packages=", "--tfds_name=mtssl_motion",
          f"--data_dir={data_dir}", "--steps=3", "--log_every=1",
          "--checkpoint_every=3", f"--run_dir={run_dir}", "--noplots"]
  parsed = options.parse_args(args, root=REPO, warn=lambda s: None)
  lines = []
  Trainer(parsed.config, strategy=mirrored(("/cpu:0",)),
          log=lines.append).train(flags_text=parsed.text)
  assert any("TFDS mtssl_motion[train]" in l for l in lines), lines
  with open(os.path.join(run_dir, "history.jsonl")) as f:
    history = [json.loads(line) for line in f]
  losses = [h["loss"] for h in history if h["task"] == "motion_segmentation"]
  assert len(losses) == 3 and np.all(np.isfinite(losses))
  config = json.load(open(os.path.join(run_dir, "config.json")))
  assert config["data"]["source"] == "tfds"
  assert config["data"]["motion_tfds_name"] == "mtssl_motion"
