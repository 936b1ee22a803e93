"""Fault injection: image folders holding every kind of bad file.

A folder of training images can hold files that cannot be used. Alone, each
kind either trains (it converts: grey, RGBA, CMYK, 16-bit) or makes the
pipeline stop with one error that names the problem (never a spin); mixed
with good photos, the run trains on the good ones and names each bad file
once, with its reason. The end-to-end runs go through the real entry point
(``python -m mtssl_tf.train``), so what the user's terminal shows is
checked too: no unnamed decoder messages, no traceback.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from mtssl_tf import tasks as tasks_lib
from mtssl_tf.data import skips
from mtssl_tf.data.image_files import MAX_IMAGE_PIXELS, list_image_files
from mtssl_tf.data.pipeline import task_dataset
from mtssl_tf.data.sources import make_source
import harness
import fork_server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A stuck pipeline fails the test instead of hanging the suite.
PULL_TIMEOUT_S = 120


def photo(seed: int, size=(72, 96)) -> np.ndarray:
  """A smooth colour image (a gradient per channel, shifted by seed)."""
  h, w = size
  y, x = np.mgrid[0:h, 0:w]
  channels = [(x * (3 + seed) + y * (5 + c)) % 256 for c in range(3)]
  return np.stack(channels, -1).astype(np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
  return tf.io.encode_png(array).numpy()


def huge_png_header(width: int, height: int) -> bytes:
  """A PNG whose header claims ``width`` x ``height`` (and no pixel data)."""
  def chunk(kind: bytes, data: bytes) -> bytes:
    return (len(data).to_bytes(4, "big") + kind + data
            + zlib.crc32(kind + data).to_bytes(4, "big"))
  ihdr = (width.to_bytes(4, "big") + height.to_bytes(4, "big")
          + bytes([8, 2, 0, 0, 0]))
  return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# kind -> (file name, writer(path), status when refused or None: it trains)
def _write(path, data: bytes):
  with open(path, "wb") as f:
    f.write(data)


def _truncated_jpeg(path):
  data = tf.io.encode_jpeg(photo(1)).numpy()
  _write(path, data[:len(data) // 2])


def _truncated_png(path):
  data = png_bytes(photo(6))
  _write(path, data[:len(data) // 2])


def _garbled_jpeg(path):
  """A JPEG whose scan data is overwritten: libjpeg decodes it, printing
  "Corrupt JPEG data" on stderr (or refuses it)."""
  data = bytearray(tf.io.encode_jpeg(photo(7)).numpy())
  start = len(data) * 3 // 5
  data[start:start + 64] = np.random.default_rng(0).integers(
      0, 256, 64, dtype=np.uint8).tobytes()
  _write(path, bytes(data))


def _cmyk(path):
  Image.new("CMYK", (96, 72), (10, 200, 30, 0)).save(path)


def _sixteen_bit(path):
  image = photo(2).astype(np.uint16) * 257
  _write(path, tf.io.encode_png(tf.constant(image)).numpy())


BAD_KINDS = {
    "truncated": ("cut.jpg", _truncated_jpeg, skips.TRUNCATED),
    "zero_bytes": ("empty.png", lambda p: _write(p, b""), skips.EMPTY),
    "text": ("notes.jpg", lambda p: _write(p, b"just some text\n"),
             skips.NOT_IMAGE),
    "one_pixel": ("dot.png", lambda p: _write(p, png_bytes(photo(3, (1, 1)))),
                  skips.UNDERSIZED),
    "huge": ("huge.png", lambda p: _write(p, huge_png_header(100_000, 100_000)),
             skips.TOO_LARGE),
    "truncated_png": ("half.png", _truncated_png, skips.CORRUPT),
}
CONVERTIBLE_KINDS = {
    "cmyk": ("cmyk.jpg", _cmyk),
    "sixteen_bit": ("deep.png", _sixteen_bit),
    "grey": ("grey.png", lambda p: _write(p, png_bytes(photo(4)[..., :1]))),
    "rgba": ("rgba.png", lambda p: _write(p, png_bytes(np.concatenate(
        [photo(5), np.full((72, 96, 1), 128, np.uint8)], -1)))),
}


def rp_task():
  return tasks_lib.get_task("relative_position",
                            **harness.TASK_PARAMS["relative_position"])


def first_batch(task, folder, timeout=PULL_TIMEOUT_S):
  """One batch of ``task`` from a repeating pipeline over ``folder``, or the
  error that stopped it; fails if the pipeline neither yields nor stops."""
  source = make_source("folder", path=str(folder))
  dataset = task_dataset(task, source, batch_size=2, seed=0,
                         shuffle_buffer=8)
  result = {}

  def pull():
    try:
      result["batch"] = next(iter(dataset))
    except Exception as e:  # pylint: disable=broad-except
      result["error"] = e

  thread = threading.Thread(target=pull, daemon=True)
  thread.start()
  thread.join(timeout)
  assert not thread.is_alive(), (
      f"the pipeline over {folder} neither yielded nor stopped in {timeout} s")
  return result, source.counter


@pytest.mark.parametrize("kind", sorted(BAD_KINDS))
def test_a_folder_of_one_bad_kind_stops_with_the_reason(tmp_path, kind):
  name, write, status = BAD_KINDS[kind]
  write(tmp_path / name)
  result, counter = first_batch(rp_task(), tmp_path)
  assert "batch" not in result
  error = result["error"]
  assert isinstance(error, tf.errors.InvalidArgumentError), error
  assert skips.NO_USABLE_DATA in str(error)
  assert counter.exhausted()
  assert counter.refused() == [(str(tmp_path / name), status)]


@pytest.mark.parametrize("kind", sorted(CONVERTIBLE_KINDS))
def test_a_folder_of_one_convertible_kind_trains(tmp_path, kind):
  name, write = CONVERTIBLE_KINDS[kind]
  write(tmp_path / name)
  result, counter = first_batch(rp_task(), tmp_path)
  assert "error" not in result, result.get("error")
  patches, labels = result["batch"]
  assert patches.shape[0] == 2 and patches.dtype == tf.float32
  assert set(labels.numpy().tolist()) <= set(range(8))
  assert counter.refused() == []


def test_convertible_kinds_decode_to_what_pillow_reads(tmp_path):
  """The reference: Pillow's RGB conversion of the same files (CMYK, 16-bit
  scaled to 8, grey repeated, alpha dropped)."""
  source_files = {}
  for kind, (name, write) in CONVERTIBLE_KINDS.items():
    write(tmp_path / name)
    source_files[str(tmp_path / name)] = kind
  source = make_source("folder", path=str(tmp_path))
  files = list_image_files(str(tmp_path))
  for example in source.dataset:
    path = files[int(example["id"])]
    with Image.open(path) as im:
      if source_files[path] == "sixteen_bit":
        # Pillow reads 16-bit RGB PNGs as 8 bits per channel already.
        want = np.asarray(im.convert("RGB"))
      else:
        want = np.asarray(im.convert("RGB"))
    got = example["image"].numpy()
    assert got.shape == want.shape
    # Integer pixels: at most one level apart (rounding of 16 -> 8 bits).
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, path
  assert source.counter.refused() == []


def test_grey_photos_alone_stop_colorization_but_train_relative_position(
    tmp_path):
  for i in range(3):
    _write(tmp_path / f"grey{i}.png", png_bytes(photo(i)[..., :1]))
  colorization = tasks_lib.get_task("colorization",
                                    **harness.TASK_PARAMS["colorization"])
  result, counter = first_batch(colorization, tmp_path)
  assert skips.NO_USABLE_DATA in str(result.get("error"))
  assert [code for _, code in counter.refused()] == [skips.UNUSABLE] * 3
  assert "grey" in counter.describe(skips.UNUSABLE)
  result, _ = first_batch(rp_task(), tmp_path)
  assert "batch" in result


def test_mixed_folder_trains_on_the_good_files_and_names_each_bad_one(
    tmp_path):
  for i in range(4):
    _write(tmp_path / f"good{i}.png", png_bytes(photo(10 + i)))
  for kind, (name, write, _) in BAD_KINDS.items():
    write(tmp_path / name)
  source = make_source("folder", path=str(tmp_path))
  dataset = task_dataset(rp_task(), source, batch_size=2, seed=0,
                         shuffle_buffer=8)
  for _ in zip(range(12), dataset):  # several passes over 4 good files
    pass
  want = {str(tmp_path / name): status
          for name, _, status in BAD_KINDS.values()}
  assert dict(source.counter.refused()) == want
  # Files, not reads: each bad file once however many passes were read.
  summary = source.counter.summary()
  assert summary.startswith(f"refused {len(want)} files: ")
  assert summary.endswith(f"(of {4 + len(want)} files)")
  # Undecodable files are read once, not once a pass.
  assert source.counter.corrupt == len(want) - 1


def test_symlink_loop_is_listed_once(tmp_path):
  _write(tmp_path / "a.png", png_bytes(photo(0)))
  (tmp_path / "sub").mkdir()
  _write(tmp_path / "sub" / "b.png", png_bytes(photo(1)))
  os.symlink(tmp_path, tmp_path / "sub" / "loop")
  os.symlink(tmp_path / "sub", tmp_path / "again")
  files = list_image_files(str(tmp_path))
  real = sorted({os.path.realpath(f) for f in files})
  assert real == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png")]
  assert len(files) == 2


def test_a_folder_holding_only_a_symlink_loop_says_no_images(tmp_path):
  os.symlink(tmp_path, tmp_path / "loop")
  with pytest.raises(FileNotFoundError, match="no image files .* under"):
    make_source("folder", path=str(tmp_path))


def test_huge_header_bound_is_the_pixel_count():
  from mtssl_tf.data.image_files import header_status
  side = int(MAX_IMAGE_PIXELS ** 0.5)
  ok, _ = header_status(tf.constant(huge_png_header(side, side)))
  big, _ = header_status(tf.constant(huge_png_header(side + 1, side + 1)))
  assert int(ok) == skips.OK and int(big) == skips.TOO_LARGE


# -- the entry point ----------------------------------------------------------

DECODER_NOISE = ("Input file read error", "Premature end of JPEG",
                 "Corrupt JPEG data")


def _train_args(run_dir, folder, *extra):
  return ["--flagfile=configs/smoke.cfg", f"--run_dir={run_dir}",
          "--data=folder", f"--image_folder={folder}",
          # One task: the refusals are named per task, by the same source
          # code whichever task reads the folder.
          "--tasks=relative_position", "--nolasso",
          "--steps=2", "--checkpoint_every=2", "--log_every=1",
          # No shuffle buffer: a resumed run's restored input state then
          # holds only a few prefetched batches.
          "--shuffle_buffer=1", "--nodeterministic", *extra]


def _train(run_dir, folder, *extra, timeout=600):
  args = ["-m", "mtssl_tf.train", *_train_args(run_dir, folder, *extra)]
  return fork_server.run(args, cwd=REPO, timeout=timeout,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def test_run_names_bad_files_once_then_stops_without_losing_its_checkpoint(
    tmp_path):
  folder = tmp_path / "images"
  folder.mkdir()
  for i in range(4):
    _write(folder / f"good{i}.png", png_bytes(photo(20 + i, (96, 128))))
  for name, write, _ in BAD_KINDS.values():
    write(folder / name)
  _garbled_jpeg(folder / "garbled.jpg")
  run_dir = tmp_path / "run"
  out = _train(run_dir, folder)
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout + out.stderr
  for noise in DECODER_NOISE:
    assert noise not in text
  # Each bad file named once in the log, all of them in the file.
  for name, _, _ in BAD_KINDS.values():
    path = str(folder / name)
    assert text.count(f"relative_position: {path}: ") == 1, text
  with open(run_dir / "refused_files.tsv", newline="") as f:
    rows = list(csv.DictReader(f, delimiter="\t"))
  listed = {(r["task"], r["file"]) for r in rows}
  refused = {file for task, file in listed if task == "relative_position"}
  refused.discard(str(folder / "garbled.jpg"))  # refused or decoded: either
  assert refused == {str(folder / name) for name, _, _ in BAD_KINDS.values()}
  checkpoint = run_dir / "checkpoints"
  saved = {p: (checkpoint / p).read_bytes() for p in os.listdir(checkpoint)}
  assert any(p.startswith("ckpt-2") for p in saved)

  # The good photos go; the resumed run trains on what its restored input
  # state had prefetched, then must stop with the error and leave the
  # step-2 checkpoint as it was.
  for name in [f"good{i}.png" for i in range(4)] + ["garbled.jpg"]:
    os.remove(folder / name)
  out = _train(run_dir, folder, "--steps=400", "--checkpoint_every=1000")
  assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  error = out.stderr[out.stderr.index("error: "):]
  assert f"no usable training example for task " in error
  assert str(folder) in error
  assert f"The latest checkpoint, {checkpoint / 'ckpt-2'}, is kept" in error
  for name, _, status in BAD_KINDS.values():
    assert str(folder / name) in error
  assert "truncated" in error and "not a JPEG" in error
  for noise in DECODER_NOISE:
    assert noise not in out.stdout + out.stderr
  assert {p: (checkpoint / p).read_bytes()
          for p in os.listdir(checkpoint)} == saved


def test_missing_folder_is_one_line_without_traceback(tmp_path, monkeypatch,
                                                     capsys):
  # What `python -m mtssl_tf.train ...` runs, in-process on the process's
  # flags (a subprocess spends ~8 s importing TensorFlow to print one
  # line): app.run parses argv with train.parse_flags, then exits with
  # main's return value; main catches the error, so no traceback is shown.
  from absl import flags
  from mtssl_tf import train
  monkeypatch.chdir(REPO)
  flags.FLAGS.unparse_flags()
  try:
    argv = train.parse_flags(["train"] + _train_args(tmp_path / "run",
                                                     tmp_path / "nowhere"))
    assert train.main(argv) == 2
  finally:
    flags.FLAGS.unparse_flags()
  err = capsys.readouterr().err
  errors = [l for l in err.splitlines() if l.startswith("error: ")]
  assert errors == [f"error: image folder {str(tmp_path / 'nowhere')!r} "
                    "does not exist"]
  assert "Traceback" not in err


def test_decoder_messages_are_filtered_and_other_lines_pass(tmp_path):
  """Native writes to file descriptor 2: the decoders' lines are dropped,
  everything else reaches the terminal in order."""
  # The module is loaded from its file, without the package (whose import
  # pulls in TensorFlow, ~6 s): it needs nothing else.
  script = (
      "import importlib.util, os, sys\n"
      "spec = importlib.util.spec_from_file_location('native_stderr', "
      "sys.argv[1])\n"
      "module = importlib.util.module_from_spec(spec)\n"
      "spec.loader.exec_module(module)\n"
      "hidden_decoder_messages = module.hidden_decoder_messages\n"
      "with hidden_decoder_messages() as hidden:\n"
      "  os.write(2, b'kept 1\\n')\n"
      "  os.write(2, b'Corrupt JPEG data: premature end of data segment\\n')\n"
      "  os.write(2, b'libpng warning: iCCP: known incorrect sRGB profile\\n')\n"
      "  print('kept 2', file=sys.stderr)\n"
      "print(hidden.count)\n")
  module = os.path.join(REPO, "mtssl_tf", "utils", "native_stderr.py")
  out = subprocess.run([sys.executable, "-c", script, module], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stderr
  assert out.stderr.splitlines() == ["kept 1", "kept 2"]
  assert out.stdout.strip() == "2"


def test_motion_records_without_any_moving_pixel_stop_the_task(tmp_path):
  """Videos without motion: every frame's mask is empty."""
  from mtssl_tf import motion
  with tf.io.TFRecordWriter(str(tmp_path / "still.tfrecord")) as writer:
    for index in range(3):
      writer.write(motion.encode_example(
          photo(index), np.zeros((72, 96), np.uint8), "png", "still.avi",
          index))
  task = tasks_lib.get_task("motion_segmentation",
                            **harness.TASK_PARAMS["motion_segmentation"])
  source = make_source("motion", path=str(tmp_path))
  assert source.num_files == 3
  dataset = task_dataset(task, source, batch_size=2, seed=0, shuffle_buffer=1)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=skips.NO_USABLE_DATA):
    next(iter(dataset))
  assert source.counter.unusable > 0 and source.counter.exhausted()
  assert "no moving pixel" in source.counter.describe(skips.UNUSABLE)
