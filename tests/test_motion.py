"""Motion masks from videos (mtssl_tf.motion) and make_motion_masks."""
import json
import os

import cv2
import numpy as np
import pytest
import tensorflow as tf

from mtssl_tf import make_motion_masks
from mtssl_tf import motion
import fork_server


def _texture(rng, h, w, sigma):
  noise = rng.uniform(0, 255, (h, w, 3)).astype(np.float32)
  noise = cv2.GaussianBlur(noise, (0, 0), sigma)
  noise = (noise - noise.mean()) / (noise.std() + 1e-6) * 50 + 128
  return np.clip(noise, 0, 255).astype(np.uint8)


def synthetic_video(size=96, frames=10, pan=(1, 2), obj_size=32,
                    obj_velocity=(-2, 1), seed=0, with_object=True):
  """A textured square moving over a textured background under a camera pan.

  ``pan`` and ``obj_velocity`` are (dy, dx) pixels per frame: the camera
  window slides over a larger background by ``pan``; the square moves in the
  image by ``obj_velocity``. Returns (uint8 [T, H, W, 3], bool [T, H, W] true
  object masks).
  """
  rng = np.random.default_rng(seed)
  margin = (abs(pan[0]) + abs(pan[1])) * frames + 8
  background = _texture(rng, size + 2 * margin, size + 2 * margin, 1.5)
  square = _texture(rng, obj_size, obj_size, 1.0)
  y0 = (size - obj_size) // 2 - obj_velocity[0] * frames // 2
  x0 = (size - obj_size) // 2 - obj_velocity[1] * frames // 2
  video = np.zeros((frames, size, size, 3), np.uint8)
  truth = np.zeros((frames, size, size), bool)
  for t in range(frames):
    by, bx = margin + pan[0] * t, margin + pan[1] * t
    video[t] = background[by:by + size, bx:bx + size]
    if with_object:
      y, x = y0 + obj_velocity[0] * t, x0 + obj_velocity[1] * t
      video[t, y:y + obj_size, x:x + obj_size] = square
      truth[t, y:y + obj_size, x:x + obj_size] = True
  return video, truth


def _ious(masks, truth):
  return np.array([motion.mask_iou(m, t) for m, t in zip(masks, truth)])


CONFIG = motion.MotionMaskConfig()


# --- Masks on synthetic videos ----------------------------------------------

@pytest.mark.parametrize("pan,velocity", [((1, 2), (-2, 1)),
                                          ((0, 3), (0, 0)),
                                          ((0, 2), (1, 1))])
def test_moving_object_under_camera_pan(pan, velocity):
  video, truth = synthetic_video(pan=pan, obj_velocity=velocity)
  masks = motion.motion_masks(video, CONFIG)
  assert masks.shape == truth.shape and masks.dtype == np.uint8
  assert set(np.unique(masks)) <= {0, 1}
  ious = _ious(masks, truth)
  assert ious.mean() >= 0.7, ious
  # Without the homography the whole panning background would move.
  assert (masks & ~truth).mean() < 0.05


def test_interior_frames_and_video_file(tmp_path):
  video, truth = synthetic_video()
  direct = _ious(motion.motion_masks(video, CONFIG), truth)
  # Frames with all four pairs (forward and backward) are the best ones.
  assert direct[2:-2].min() >= 0.7, direct
  path = motion.write_video(str(tmp_path / "pan.avi"), video)
  decoded = motion.read_video(path)
  assert decoded.shape == video.shape
  from_file = _ious(motion.motion_masks(decoded, CONFIG), truth)
  assert from_file.mean() >= 0.7, from_file
  assert from_file[2:-2].min() >= 0.7, from_file


def test_pure_camera_pan_is_static():
  video, _ = synthetic_video(pan=(2, 1), with_object=False)
  items = list(motion.iter_motion_masks(video, CONFIG))
  assert [i.status for i in items] == ["static"] * len(video)
  assert sum(i.mask.sum() for i in items) == 0


def test_static_video_reported_not_raised(tmp_path):
  frame, _ = synthetic_video(frames=1)
  video = np.repeat(frame, 8, axis=0)
  path = motion.write_video(str(tmp_path / "still.avi"), video)
  report = motion.process_video(path, str(tmp_path / "out"), CONFIG)
  assert report.status == "static"
  assert report.frames_read == 8 and report.frames_static == 8
  assert report.frames_written == 0 and report.output is None
  assert not os.path.exists(tmp_path / "out" / "still.tfrecord")
  assert "static" in report.summary()


def test_only_unreliable_frames_reported(tmp_path):
  video, _ = synthetic_video(frames=6)
  path = motion.write_video(str(tmp_path / "busy.avi"), video)
  # The square covers 11% of the frame: above max_area=5% every moving frame
  # counts as a failed camera model.
  config = motion.MotionMaskConfig(min_area=0.001, max_area=0.05)
  report = motion.process_video(path, str(tmp_path / "out"), config)
  assert report.status == "unreliable"
  assert report.frames_unreliable >= 4 and report.frames_written == 0
  assert not os.path.exists(tmp_path / "out")
  assert "could not be compensated" in report.summary()


def test_single_frame_is_static():
  frame, _ = synthetic_video(frames=1)
  items = list(motion.iter_motion_masks(frame, CONFIG))
  assert len(items) == 1 and items[0].status == "static"


def test_every_and_streaming_match_full():
  video, _ = synthetic_video(frames=9)
  full = motion.motion_masks(video, CONFIG)
  items = list(motion.iter_motion_masks(iter(list(video)), CONFIG, every=3))
  assert [i.index for i in items] == [0, 3, 6]
  for item in items:
    np.testing.assert_array_equal(item.mask, full[item.index])
    np.testing.assert_array_equal(item.frame, video[item.index])


def test_frame_input_rules():
  video, _ = synthetic_video(frames=4)
  grey = video[..., 0]
  assert motion.motion_masks(grey, CONFIG).shape == grey.shape
  rgba = np.concatenate([video, np.full(video.shape[:3] + (1,), 255,
                                        np.uint8)], -1)
  np.testing.assert_array_equal(motion.motion_masks(rgba, CONFIG),
                                motion.motion_masks(video, CONFIG))
  with pytest.raises(TypeError, match="float32"):
    motion.motion_masks(video.astype(np.float32), CONFIG)
  with pytest.raises(ValueError, match="too small"):
    motion.motion_masks(video[:, :8, :8], CONFIG)
  with pytest.raises(ValueError, match="one size"):
    list(motion.iter_motion_masks([video[0], video[1, :80]], CONFIG))
  with pytest.raises(ValueError, match="every"):
    list(motion.iter_motion_masks(video, CONFIG, every=0))


@pytest.mark.parametrize("kwargs,match", [
    ({"offsets": (1, 0)}, "offsets"), ({"offsets": ()}, "offsets"),
    ({"threshold": 0}, "threshold"), ({"min_agreement": 1.5}, "min_agreement"),
    ({"min_area": 0.6, "max_area": 0.5}, "min_area"),
    ({"max_side": 4}, "max_side")])
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    motion.MotionMaskConfig(**kwargs)


# --- The pieces against NumPy references --------------------------------------

def test_homography_flow_matches_formula():
  h = np.array([[1.02, 0.01, 3.0], [-0.02, 0.99, -1.5], [1e-4, 2e-4, 1.0]])
  flow = motion.homography_flow(h, 7, 9)
  for y, x in [(0, 0), (3, 4), (6, 8)]:
    p = h @ np.array([x, y, 1.0])
    np.testing.assert_allclose(flow[y, x], p[:2] / p[2] - [x, y], atol=1e-4)


def test_fit_camera_motion_ignores_outliers(rng):
  true_h = np.array([[1.0, 0.0, 2.5], [0.0, 1.0, -1.0], [0.0, 0.0, 1.0]])
  flow = motion.homography_flow(true_h, 64, 64)
  flow[20:40, 20:40] += rng.uniform(3, 6, (20, 20, 2)).astype(np.float32)
  fitted = motion.fit_camera_motion(flow, grid_step=4)
  np.testing.assert_allclose(fitted / fitted[2, 2], true_h, atol=1e-3)
  moving, valid = motion.moving_pixels(flow, CONFIG)
  np.testing.assert_array_equal(moving[valid], np.pad(
      np.ones((20, 20), bool), (20, 24))[valid])
  # Pixels mapped outside the frame by the camera (x + 2.5 > 63) don't vote.
  assert not valid[:, 62:].any() and valid[1:, :61].all()


def test_clean_mask_removes_specks_and_small_components():
  mask = np.zeros((100, 100), bool)
  mask[10:40, 10:40] = True      # kept
  mask[60, 60] = True            # speck: removed by the opening
  mask[80:84, 80:84] = True      # 16 px < 0.002 * 10000 = 20: dropped
  mask[20, 20] = False           # hole: filled by the closing
  out = motion.clean_mask(mask, CONFIG)
  expected = np.zeros((100, 100), np.uint8)
  expected[10:40, 10:40] = 1
  assert motion.mask_iou(out, expected) > 0.97
  assert out[20, 20] == 1 and out[60, 60] == 0 and out[80:84, 80:84].sum() == 0


def test_mask_iou():
  a = np.zeros((4, 4), bool)
  b = a.copy()
  assert motion.mask_iou(a, b) == 1.0
  a[0, :2] = True
  b[0, 1:3] = True
  assert motion.mask_iou(a, b) == pytest.approx(1 / 3)


# --- Reading videos -----------------------------------------------------------

def test_unreadable_and_missing_videos_name_the_file(tmp_path):
  corrupt = tmp_path / "x.mp4"
  corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
  for path, reason in [(corrupt, "cannot open|no frame"),
                       (tmp_path / "missing.mp4", "no such"),
                       (tmp_path, "directory")]:
    with pytest.raises(motion.VideoReadError, match=reason) as info:
      motion.read_video(str(path))
    assert str(path) in str(info.value)
    assert info.value.path == str(path)
  assert isinstance(info.value, IOError)


def test_read_video_resizes_and_limits(tmp_path):
  video, _ = synthetic_video(size=64, frames=6)
  path = motion.write_video(str(tmp_path / "v.avi"), video[:, :, :48])
  frames = motion.read_video(path, max_side=32, max_frames=4)
  assert frames.shape == (4, 64 * 32 // 64, 48 * 32 // 64, 3)
  assert frames.dtype == np.uint8
  # RGB order kept through OpenCV's BGR: a red frame reads back red.
  red = np.zeros((3, 32, 32, 3), np.uint8)
  red[..., 0] = 200
  back = motion.read_video(motion.write_video(str(tmp_path / "r.avi"), red))
  assert back[..., 0].mean() > 150 and back[..., 2].mean() < 50


# --- TFRecords ----------------------------------------------------------------

def _items(n=3, size=40, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    frame = _texture(rng, size, size + 8, 2.0)
    mask = (rng.uniform(size=(size, size + 8)) > 0.7).astype(np.uint8)
    out.append(motion.FrameMask(i * 2, frame, mask, "moving"))
  return out


def test_tfrecord_round_trip_png(tmp_path):
  items = _items()
  path = str(tmp_path / "a.tfrecord")
  assert motion.write_tfrecord(path, items, "png", "clip.mp4") == 3
  assert not os.path.exists(path + ".tmp")
  records = list(motion.motion_dataset(path, with_metadata=True))
  assert len(records) == 3
  for item, rec in zip(items, records):
    assert rec["image"].dtype == tf.uint8 and rec["mask"].dtype == tf.uint8
    np.testing.assert_array_equal(rec["image"].numpy(), item.frame)
    np.testing.assert_array_equal(rec["mask"].numpy(), item.mask)
    assert rec["video"].numpy() == b"clip.mp4"
    assert rec["frame_index"].numpy() == item.index


def test_tfrecord_jpeg_and_glob(tmp_path):
  items = _items(seed=1)
  motion.write_tfrecord(str(tmp_path / "a.tfrecord"), items[:2])
  motion.write_tfrecord(str(tmp_path / "b.tfrecord"), items[2:])
  ds = motion.motion_dataset(str(tmp_path / "*.tfrecord"))
  assert ds.element_spec["image"].shape.as_list() == [None, None, 3]
  assert ds.element_spec["mask"].shape.as_list() == [None, None]
  records = list(ds)
  assert len(records) == 3
  for item, rec in zip(items, records):
    np.testing.assert_array_equal(rec["mask"].numpy(), item.mask)
    # JPEG is lossy: close, not equal.
    err = np.abs(rec["image"].numpy().astype(int) - item.frame).mean()
    assert err < 8


def test_parse_example_eager_equals_tf_data(tmp_path):
  items = _items(n=2, seed=2)
  serialized = [motion.encode_example(i.frame, i.mask * 255, "png")
                for i in items]
  eager = [motion.parse_example(tf.constant(s)) for s in serialized]
  graph = list(tf.data.Dataset.from_tensor_slices(serialized).map(
      motion.parse_example))
  for e, g, item in zip(eager, graph, items):
    np.testing.assert_array_equal(e["image"], g["image"])
    np.testing.assert_array_equal(e["mask"], g["mask"])
    np.testing.assert_array_equal(e["mask"], item.mask)  # 255 -> 1


def test_encode_and_dataset_errors(tmp_path):
  frame = np.zeros((8, 8, 3), np.uint8)
  with pytest.raises(ValueError, match="does not match"):
    motion.encode_example(frame, np.zeros((8, 9)))
  with pytest.raises(ValueError, match="uint8"):
    motion.encode_example(frame.astype(np.float32), np.zeros((8, 8)))
  with pytest.raises(ValueError, match="image_format"):
    motion.encode_example(frame, np.zeros((8, 8)), "gif")
  pattern = str(tmp_path / "none*.tfrecord")
  with pytest.raises(FileNotFoundError, match="none"):
    motion.motion_dataset(pattern)


def test_preview_grid():
  items = _items(n=4, size=16)
  grid = motion.preview_grid(items, columns=3, gap=2)
  assert grid.shape == (16 * 2 + 2, 24 * 3 + 4, 3) and grid.dtype == np.uint8
  # Unmasked pixels of the first tile are the frame itself.
  first = items[0]
  inside = grid[:16, :24]
  far = ~cv2.dilate(first.mask, np.ones((3, 3), np.uint8)).astype(bool)
  np.testing.assert_array_equal(inside[far], first.frame[far])


# --- The command --------------------------------------------------------------

def _write_test_videos(tmp_path):
  moving, _ = synthetic_video(frames=8)
  still = np.repeat(moving[:1], 6, axis=0)
  paths = {
      "moving": motion.write_video(str(tmp_path / "moving.avi"), moving),
      "still": motion.write_video(str(tmp_path / "still.avi"), still),
  }
  corrupt = tmp_path / "broken.mp4"
  corrupt.write_bytes(b"\x00not a video" * 100)
  paths["broken"] = str(corrupt)
  return paths


def test_command_end_to_end(tmp_path):
  paths = _write_test_videos(tmp_path)
  out = tmp_path / "out"
  lines = []
  code = make_motion_masks.main(
      [f"--videos={tmp_path}/*.avi,{paths['broken']}",
       f"--output_dir={out}", "--every=2", "--image_format=png",
       f"--preview={tmp_path}/preview.png", "--preview_frames=2",
       "--preview_scale=0.5"],
      log=lines.append)
  assert code == 0
  text = "\n".join(lines)
  assert "still.avi: static" in text and "nothing written" in text
  assert f"ERROR cannot read video {paths['broken']!r}" in text
  assert sorted(os.listdir(out)) == ["motion_masks_summary.json",
                                     "moving.tfrecord"]
  summary = json.load(open(out / make_motion_masks.SUMMARY_NAME))
  by_name = {os.path.basename(v["path"]): v for v in summary["videos"]}
  assert by_name["moving.avi"]["status"] == "ok"
  assert by_name["moving.avi"]["frames_considered"] == 4   # 0, 2, 4, 6
  assert by_name["still.avi"]["status"] == "static"
  assert by_name["broken.mp4"]["status"] == "error"
  assert summary["settings"]["every"] == 2
  records = list(motion.motion_dataset(str(out / "*.tfrecord"),
                                       with_metadata=True))
  assert len(records) == by_name["moving.avi"]["frames_written"] >= 3
  assert all(r["frame_index"] % 2 == 0 for r in records)
  assert all(0 < r["mask"].numpy().mean() < 0.5 for r in records)
  preview = cv2.imread(str(tmp_path / "preview.png"))
  assert preview.shape == (96 // 2, (96 * 2 + 4) // 2, 3)


def test_command_exit_codes(tmp_path):
  paths = _write_test_videos(tmp_path)
  lines = []
  assert make_motion_masks.main(
      [f"--videos={paths['broken']},{tmp_path}/nothing*.mp4",
       f"--output_dir={tmp_path}/o"], log=lines.append) == 1
  assert any("no file matches this pattern" in l for l in lines)
  assert make_motion_masks.main(
      [f"--videos={paths['still']}", f"--output_dir={tmp_path}/o"],
      log=lines.append) == 0
  assert make_motion_masks.main(["--output_dir=x"]) == 2
  assert make_motion_masks.main(["--videos=a", "--output_dir=x",
                                 "--every=0"]) == 2
  assert make_motion_masks.main(["--videos=a", "--output_dir=x",
                                 "--offsets=1,x"]) == 2


def test_command_runs_as_module(tmp_path):
  paths = _write_test_videos(tmp_path)
  flagfile = tmp_path / "motion.cfg"
  flagfile.write_text(f"--videos={paths['moving']}\n"
                      f"--output_dir={tmp_path}/out\n--max_frames=6\n")
  result = fork_server.run(
      ["-m", "mtssl_tf.make_motion_masks", f"--flagfile={flagfile}"],
      timeout=120, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr
  assert "moving.avi: ok, 6 frames read" in result.stdout
  assert os.path.exists(tmp_path / "out" / "moving.tfrecord")
