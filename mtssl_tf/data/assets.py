"""Data files that the set-up step fetches from package registries.

Nothing in this package downloads at run time. A few real files that the
demo protocol and the tests read do not ship inside an installable Python
package, only inside a source archive on PyPI: the set-up step
(``make venv``, or ``python -m mtssl_tf.fetch_data`` after
``pip install mtssl_tf``) fetches them once into the *data home*:

* ``$MTSSL_TF_DATA`` when set, else
* ``<sys.prefix>/share/mtssl_tf`` -- inside the virtual environment, so a
  fresh ``.venv`` comes with its data and ``make clean`` removes both.

Code that needs a file calls one of the functions below, which returns its
path or raises :class:`MissingAssetError` naming the set-up command.

Assets:

* ``labelme-voc-<version>``: three real PASCAL VOC 2012 images with their
  VOC XML boxes, from the ``labelme`` source archive on PyPI
  (``examples/bbox_detection/data_dataset_voc``), fetched with
  ``pip download``. Used by the detection evaluator's demo protocol and its
  overfit test. They are never copied into the repository (their licence is
  not ours).
* ``opencv-samples-<version>``: OpenCV's own sample photos and five short
  videos, from the source archive of the pinned ``opencv-python-headless``
  wheel on PyPI (``opencv/samples/data`` and two tutorial folders), found
  through the registry's simple index, fetched with ``urllib`` and checked
  against a pinned SHA-256. Only the chosen files
  (:func:`opencv_samples_members`) are kept, in one flat folder; the 82 MB
  archive is deleted. Read by the offline sample set
  (:mod:`mtssl_tf.data.offline`, package ``"opencv-samples"``).
* ``opencv-contrib-samples-<version>``: 27 more colour photos from the
  source archive of ``opencv-contrib-python-headless`` of the same version
  (OpenCV's contrib modules' samples and tutorials, and a few of OpenCV's
  own sample folders that ``opencv-samples`` does not read), fetched and
  checked the same way (154 MB archive, deleted). Eight of them are the
  left panel of a tutorial figure (photo | Sobel | edges), one has a flat
  band down one side and one is stored on its side: those are cut out or
  turned upright once, at set-up, and written as PNG
  (:data:`OPENCV_CONTRIB_MEMBERS`); the folder's ``RECIPE`` file records
  the cuts, so that a changed cut is fetched again. Package
  ``"opencv-contrib"`` of the offline set.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from typing import Callable, Dict, Optional, Tuple, Union

ENV_VAR = "MTSSL_TF_DATA"
SETUP_COMMAND = "`make venv` (or `python -m mtssl_tf.fetch_data`)"
LABELME_VERSION = "6.3.1"
_LABELME_VOC_DIR = "examples/bbox_detection/data_dataset_voc/"
# The opencv-python-headless pinned in requirements.txt; its source archive
# carries OpenCV's samples. The hash is PyPI's for that file: a different
# file under the same name is refused.
OPENCV_VERSION = "5.0.0.93"
OPENCV_PROJECT = "opencv-python-headless"
OPENCV_SDIST = f"opencv_python_headless-{OPENCV_VERSION}.tar.gz"
OPENCV_SDIST_SHA256 = (
    "b82f9831daab90b725c7c1ee1b36cb5732c367096ac76d119e64e14eb70d5f3c")
PYPI_SIMPLE = "https://pypi.org/simple/"
# Where the chosen files lie inside the archive (below its top folder):
# OpenCV's sample data, except two clips of the tutorials.
_OPENCV_SAMPLES_DIR = "opencv/samples/data"
_OPENCV_ARCHIVE_DIRS = {
    "cup.mp4": "opencv/doc/js_tutorials/js_assets",
    "box.mp4": ("opencv/samples/cpp/tutorial_code/calib3d/"
                "real_time_pose_estimation/Data"),
}


# OpenCV's contrib source archive (the same OpenCV version as the pinned
# wheel; the wheel itself is not installed: only its sample files are used).
OPENCV_CONTRIB_PROJECT = "opencv-contrib-python-headless"
OPENCV_CONTRIB_SDIST = f"opencv_contrib_python_headless-{OPENCV_VERSION}.tar.gz"
OPENCV_CONTRIB_SDIST_SHA256 = (
    "6a8c34de905f59b038f6ab0475e73fb0a0f345c3582ec3aeaeb1c0912e80cddb")
# Rows 0..471 and columns 0..509 of a 512 x 1616 ximgproc tutorial figure:
# its left panel (the photo) without the "Source" caption at its foot and
# without the white gap to the next panel (column 512 on).
_XIMGPROC_PANEL = (0, 472, 0, 510)
_XIMGPROC = "opencv_contrib/modules/ximgproc/tutorials/images"
_TEXT = "opencv_contrib/modules/text/samples"


@dataclasses.dataclass(frozen=True)
class ArchivePhoto:
  """One photo kept from a source archive.

  Attributes:
    path: below the archive's top folder.
    crop: ``(top, bottom, left, right)`` pixel bounds (end exclusive) to cut
      out, or ``None`` for the whole file.
    quarter_turns: clockwise quarter turns that make it upright.
  """

  path: str
  crop: Optional[Tuple[int, int, int, int]] = None
  quarter_turns: int = 0

  @property
  def transformed(self) -> bool:
    return self.crop is not None or self.quarter_turns % 4 != 0


# flat file name -> where it is in the contrib archive. Colour photos of
# scenes the offline set has nowhere else. Left out on purpose: second views
# (sfm's other three views, the graffiti pair of the Java sample: OpenCV's
# graf1 is already in), images with drawings on them (face landmarks, the
# "Sobel"/"edges" panels, a face swap), montages, grey images (KITTI, the
# dnn results), renders and charts, the super-resolution butterflies and
# reg's home.png (possibly the held-out butterfly and home), the BGR-swapped
# Messi (messi5 is held out) and the cannops puppy's noisy, rotated and
# processed copies, and ximgproc's snowy tree (nearly grey: the offline set
# keeps colour photos only, tests/test_data_sources.py).
OPENCV_CONTRIB_MEMBERS: Dict[str, ArchivePhoto] = {
    **{f"{name}.png": ArchivePhoto(f"{_XIMGPROC}/{n}.jpg", _XIMGPROC_PANEL)
       for n, name in (("01", "red_flowers"), ("02", "pencil_cup"),
                       ("03", "timbered_houses"), ("04", "lighthouse"),
                       ("05", "portrait_a"), ("11", "autumn_forest"))},
    # Two panels start with black rows (30 and 18): cut below them.
    "portrait_b.png": ArchivePhoto(f"{_XIMGPROC}/06.jpg",
                                   (30,) + _XIMGPROC_PANEL[1:]),
    "portrait_c.png": ArchivePhoto(f"{_XIMGPROC}/12.jpg",
                                   (18,) + _XIMGPROC_PANEL[1:]),
    "sintel_ambush.jpg": ArchivePhoto(f"{_XIMGPROC}/ambush_5_left.jpg"),
    "plant.jpg": ArchivePhoto(
        "opencv_contrib/modules/alphamat/samples/input_images/plant.jpg"),
    "puppy.jpg": ArchivePhoto("opencv_contrib/modules/cannops/tutorials/"
                              "puppy.jpg"),
    "comic.jpg": ArchivePhoto("opencv_contrib/modules/dnn_superres/tutorials/"
                              "benchmark/images/orig_comic.jpg"),
    "urban_facade.jpg": ArchivePhoto(
        "opencv_contrib/modules/dnn_superres/tutorials/benchmark/images/"
        "orig_urban.jpg"),
    "portrait_d.jpg": ArchivePhoto(
        "opencv_contrib/modules/face/tutorials/face_landmark/images/"
        "227943776_1.jpg"),
    "portrait_e.jpg": ArchivePhoto(
        "opencv_contrib/modules/face/tutorials/face_landmark/images/"
        "230501201_1.jpg"),
    "corridor.jpg": ArchivePhoto("opencv_contrib/samples/data/corridor.jpg"),
    "sagrada_familia.png": ArchivePhoto(
        "opencv_contrib/modules/sfm/samples/data/images/resized_IMG_2889.jpg",
        quarter_turns=1),
    "hen.png": ArchivePhoto(
        "opencv_contrib/modules/dnns_easily_fooled/model/hen_256.png"),
    "robin.jpg": ArchivePhoto("opencv_contrib/modules/hfs/samples/data/"
                              "000.jpg"),
    "tin_box.jpg": ArchivePhoto(
        "opencv/samples/cpp/tutorial_code/calib3d/real_time_pose_estimation/"
        "Data/resized_IMG_3875.JPG"),
    "cat.jpg": ArchivePhoto("opencv/samples/dnn/dnn_model_runner/"
                            "dnn_conversion/paddlepaddle/data/cat.jpg"),
    **{f"scenetext0{i}.jpg": ArchivePhoto(f"{_TEXT}/scenetext0{i}.jpg")
       for i in (1, 3, 4, 5, 6)},
    # 960 x 1280 with a 16-pixel flat band down its left side.
    "scenetext02.png": ArchivePhoto(f"{_TEXT}/scenetext02.jpg",
                                    (0, 960, 16, 1280)),
}


class MissingAssetError(FileNotFoundError):
  """A file that the set-up step fetches is not in the data home."""


def data_home() -> pathlib.Path:
  """Where the set-up step puts fetched data (see the module docstring)."""
  env = os.environ.get(ENV_VAR)
  if env:
    return pathlib.Path(env)
  return pathlib.Path(sys.prefix) / "share" / "mtssl_tf"


def labelme_voc_path(version: str = LABELME_VERSION) -> pathlib.Path:
  """The folder that holds (or will hold) the labelme VOC examples."""
  return data_home() / f"labelme-voc-{version}"


def has_voc_examples(folder: pathlib.Path, count: int = 3) -> bool:
  """Whether ``folder`` is a VOC folder with ``count`` images and XMLs."""
  return (len(list((folder / "Annotations").glob("*.xml"))) >= count
          and len(list((folder / "JPEGImages").glob("*.jpg"))) >= count)


def labelme_voc_dir(version: str = LABELME_VERSION) -> pathlib.Path:
  """The labelme VOC examples as a VOC folder (``--voc_folder``).

  Raises:
    MissingAssetError: the set-up step has not fetched them; the message
      names the folder, ``$MTSSL_TF_DATA`` and the set-up command.
  """
  folder = labelme_voc_path(version)
  if not has_voc_examples(folder):
    raise MissingAssetError(
        f"the labelme VOC examples are not in {folder}: they are fetched by "
        f"the set-up step, {SETUP_COMMAND}, into the data home "
        f"(${ENV_VAR}, default <sys.prefix>/share/mtssl_tf); nothing is "
        "downloaded at run time")
  return folder


def extract_members(archive: Union[str, os.PathLike],
                    dest: Union[str, os.PathLike],
                    target: Callable[[str], Optional[str]],
                    check: Callable[[pathlib.Path, int], None]
                    ) -> pathlib.Path:
  """Copies chosen regular files of a source archive into ``dest``.

  Files go to a staging folder first and reach ``dest`` only when ``check``
  accepts them, so a wrong archive leaves ``dest`` as it was (the set-up
  step's "is present" test stays honest).

  Args:
    archive: a ``.tar.gz`` whose members all sit below one top folder, as
      in every sdist.
    dest: the folder to fill (made if missing).
    target: maps a member's path below the top folder to its path relative
      to ``dest``, or ``None`` to skip it.
    check: called with the staging folder and the number of files copied;
      raises ``RuntimeError`` when they are not what was expected.
  """
  dest = pathlib.Path(dest)
  with tempfile.TemporaryDirectory() as tmp:
    staging = pathlib.Path(tmp)
    count = 0
    with tarfile.open(archive) as tar:
      for member in tar.getmembers():
        parts = member.name.split("/", 1)
        rel = target(parts[1]) if len(parts) == 2 and member.isfile() else None
        # A target that climbs out of the folder would be a hostile archive.
        if rel is None or rel.startswith(("/", "..")) or "/../" in rel:
          continue
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(path, "wb") as dst:
          shutil.copyfileobj(src, dst)
        count += 1
    check(staging, count)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(staging, dest, dirs_exist_ok=True)
  return dest


def extract_labelme_voc(archive: Union[str, os.PathLike],
                        dest: Union[str, os.PathLike]) -> pathlib.Path:
  """Copies ``JPEGImages/`` and ``Annotations/`` of the labelme source
  archive's VOC example into ``dest``.

  Raises:
    RuntimeError: the archive does not hold 3 images and 3 XML files there.
  """
  def target(path: str) -> Optional[str]:
    if not path.startswith(_LABELME_VOC_DIR):
      return None
    rel = path[len(_LABELME_VOC_DIR):]
    return rel if rel.split("/")[0] in ("JPEGImages", "Annotations") else None

  def check(staging: pathlib.Path, count: int) -> None:
    if count < 6 or not has_voc_examples(staging):
      raise RuntimeError(
          f"{os.path.basename(archive)} holds {count} files under "
          f"{_LABELME_VOC_DIR}; expected 3 labelme VOC images + 3 XML")

  return extract_members(archive, dest, target, check)


def fetch_labelme_voc(dest: Union[str, os.PathLike],
                      version: str = LABELME_VERSION,
                      timeout: float = 600.0,
                      pip: Optional[list] = None) -> pathlib.Path:
  """Fetches the labelme source archive with ``pip download`` (PyPI) and
  extracts its VOC example into ``dest``. Set-up time only.

  Args:
    dest: the VOC folder to fill.
    version: the labelme version.
    timeout: seconds allowed for ``pip download``.
    pip: the pip command (default ``[sys.executable, "-m", "pip"]``).

  Raises:
    RuntimeError: ``pip download`` failed (its output is in the message) or
      the archive does not hold the expected files.
  """
  with tempfile.TemporaryDirectory() as tmp:
    cmd = list(pip or [sys.executable, "-m", "pip"]) + [
        "download", "--no-deps", "--no-binary", ":all:",
        "--disable-pip-version-check", f"labelme=={version}", "-d", tmp]
    try:
      proc = subprocess.run(cmd, capture_output=True, text=True,
                            timeout=timeout)
    except subprocess.TimeoutExpired:
      raise RuntimeError(f"`{' '.join(cmd)}` timed out after {timeout} s; "
                         "the labelme VOC examples need the PyPI "
                         "registry at set-up time") from None
    archives = sorted(pathlib.Path(tmp).glob("labelme-*.tar.gz"))
    if proc.returncode != 0 or not archives:
      raise RuntimeError(
          f"could not fetch the labelme source archive with `{' '.join(cmd)}`"
          f" (exit {proc.returncode}); the labelme VOC examples need the PyPI "
          f"registry at set-up time. pip said:\n{proc.stdout[-2000:]}\n"
          f"{proc.stderr[-2000:]}")
    return extract_labelme_voc(archives[0], dest)


def opencv_samples_path(version: str = OPENCV_VERSION) -> pathlib.Path:
  """The flat folder that holds (or will hold) OpenCV's sample files."""
  return data_home() / f"opencv-samples-{version}"


def opencv_samples_members() -> Dict[str, str]:
  """The files kept from the OpenCV source archive: flat file name -> path
  below the archive's top folder. The choice is the offline set's
  (:data:`mtssl_tf.data.offline.OPENCV_SAMPLES_PHOTOS` and
  ``OPENCV_SAMPLES_VIDEOS``)."""
  # Imported here: offline imports this module for the data home.
  from mtssl_tf.data import offline  # pylint: disable=g-import-not-at-top
  names = list(offline.OPENCV_SAMPLES_PHOTOS) + [
      f for _, f in offline.OPENCV_SAMPLES_VIDEOS]
  return {n: f"{_OPENCV_ARCHIVE_DIRS.get(n, _OPENCV_SAMPLES_DIR)}/{n}"
          for n in names}


def has_files(folder: pathlib.Path, names) -> bool:
  """Whether every one of ``names`` is a non-empty file in ``folder``."""
  return all((folder / n).is_file() and (folder / n).stat().st_size > 0
             for n in names)


def extract_opencv_samples(archive: Union[str, os.PathLike],
                           dest: Union[str, os.PathLike],
                           members: Optional[Dict[str, str]] = None
                           ) -> pathlib.Path:
  """Copies the chosen files of the OpenCV source archive, flat, into
  ``dest``.

  Args:
    archive: ``opencv_python_headless-<version>.tar.gz``.
    dest: the flat folder to fill.
    members: flat name -> path below the archive's top folder; default
      :func:`opencv_samples_members`.

  Raises:
    RuntimeError: one of the chosen files is not in the archive (named).
  """
  members = opencv_samples_members() if members is None else members
  return _extract_flat(archive, dest,
                       {path: name for name, path in members.items()})


def _extract_flat(archive: Union[str, os.PathLike],
                  dest: Union[str, os.PathLike], wanted: Dict[str, str],
                  finish: Optional[Callable[[pathlib.Path], None]] = None
                  ) -> pathlib.Path:
  """Copies the archive paths of ``wanted`` to its flat names in ``dest``;
  every one must be there. ``finish`` then edits the staged files."""

  def check(staging: pathlib.Path, count: int) -> None:
    del count
    missing = sorted(p for p, n in wanted.items()
                     if not (staging / n).is_file())
    if missing:
      raise RuntimeError(f"{os.path.basename(archive)} lacks {missing}")
    if finish is not None:
      finish(staging)

  return extract_members(archive, dest, wanted.get, check)


def sdist_url(project: str, filename: str, index: str = PYPI_SIMPLE,
              timeout: float = 60.0) -> str:
  """The download URL of ``filename`` in a registry's simple index (PEP 691
  JSON form).

  Raises:
    RuntimeError: the index cannot be read or does not list the file.
  """
  url = f"{index.rstrip('/')}/{project}/"
  request = urllib.request.Request(
      url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
  try:
    with urllib.request.urlopen(request, timeout=timeout) as response:
      listing = json.load(response)
  except (OSError, ValueError) as e:  # URLError is an OSError.
    raise RuntimeError(
        f"cannot read the package index {url} ({e}); OpenCV's sample data "
        "needs the PyPI registry at set-up time") from None
  for entry in listing.get("files", []):
    if entry.get("filename") == filename:
      return urllib.parse.urljoin(url, entry["url"])
  raise RuntimeError(f"the package index {url} does not list {filename}")


def download_verified(url: str, path: Union[str, os.PathLike], sha256: str,
                      timeout: float = 600.0) -> pathlib.Path:
  """Downloads ``url`` to ``path`` and checks its SHA-256.

  Raises:
    RuntimeError: the download failed (the URL is named) or the file's
      hash is not ``sha256`` (the file is deleted).
  """
  path = pathlib.Path(path)
  digest = hashlib.sha256()
  try:
    with urllib.request.urlopen(url, timeout=timeout) as src, \
        open(path, "wb") as dst:
      for chunk in iter(lambda: src.read(1 << 20), b""):
        digest.update(chunk)
        dst.write(chunk)
  except OSError as e:
    path.unlink(missing_ok=True)
    raise RuntimeError(f"cannot download {url} ({e}); OpenCV's sample data "
                       "needs the PyPI registry at set-up time") from None
  if digest.hexdigest() != sha256:
    path.unlink(missing_ok=True)
    raise RuntimeError(f"{url} has SHA-256 {digest.hexdigest()}, expected "
                       f"{sha256}: refusing the file")
  return path


def _fetch_sdist(project: str, filename: str, sha256: str,
                 extract: Callable[[pathlib.Path], pathlib.Path],
                 url: Optional[str], index: str, timeout: float
                 ) -> pathlib.Path:
  """Finds ``filename`` in ``index`` (unless ``url`` is given), downloads and
  verifies it into a temporary folder, runs ``extract`` on it, and deletes
  it."""
  url = url or sdist_url(project, filename, index, timeout=min(timeout, 60.0))
  with tempfile.TemporaryDirectory() as tmp:
    archive = download_verified(url, pathlib.Path(tmp) / filename, sha256,
                                timeout)
    return extract(archive)


def fetch_opencv_samples(dest: Union[str, os.PathLike],
                         url: Optional[str] = None,
                         sha256: str = OPENCV_SDIST_SHA256,
                         index: str = PYPI_SIMPLE,
                         timeout: float = 600.0) -> pathlib.Path:
  """Fetches the OpenCV source archive (found in ``index`` unless ``url``
  is given), verifies it, extracts the chosen files into ``dest`` and
  deletes the archive. Set-up time only.

  Raises:
    RuntimeError: the index, the download, the hash or the archive's
      content is wrong; the message names the URL.
  """
  return _fetch_sdist(OPENCV_PROJECT, OPENCV_SDIST, sha256,
                      lambda archive: extract_opencv_samples(archive, dest),
                      url, index, timeout)


RECIPE_FILE = "RECIPE"


def contrib_recipe(members: Optional[Dict[str, ArchivePhoto]] = None) -> str:
  """A digest of which files are taken and how they are cut: written into
  the fetched folder, so that a folder made by another recipe is fetched
  again (its file names alone may not change)."""
  members = OPENCV_CONTRIB_MEMBERS if members is None else members
  text = repr(sorted((name, photo.path, photo.crop, photo.quarter_turns % 4)
                     for name, photo in members.items()))
  return hashlib.sha256(text.encode()).hexdigest()


def has_contrib_photos(folder: pathlib.Path) -> bool:
  """Whether ``folder`` holds every contrib photo, made by this recipe."""
  recipe = folder / RECIPE_FILE
  return (has_files(folder, OPENCV_CONTRIB_MEMBERS) and recipe.is_file()
          and recipe.read_text().strip() == contrib_recipe())


def opencv_contrib_path(version: str = OPENCV_VERSION) -> pathlib.Path:
  """The flat folder that holds (or will hold) the contrib archive's
  photos."""
  return data_home() / f"opencv-contrib-samples-{version}"


def transform_photo(path: pathlib.Path, photo: ArchivePhoto) -> None:
  """Cuts out and turns ``photo`` in place (``path`` keeps its name; the
  caller names transformed photos ``*.png``, written losslessly).

  Raises:
    RuntimeError: the file does not decode, or the crop is not inside it.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  image = cv2.imdecode(np.fromfile(str(path), np.uint8), cv2.IMREAD_COLOR)
  if image is None:
    raise RuntimeError(f"{photo.path} does not decode as an image")
  if photo.crop is not None:
    top, bottom, left, right = photo.crop
    if not (0 <= top < bottom <= image.shape[0]
            and 0 <= left < right <= image.shape[1]):
      raise RuntimeError(f"{photo.path} is {image.shape[1]}x{image.shape[0]}"
                         f" pixels: the crop {photo.crop} is not inside it")
    image = image[top:bottom, left:right]
  # np.rot90 turns counter-clockwise for positive k.
  image = np.ascontiguousarray(np.rot90(image, -photo.quarter_turns))
  ok, encoded = cv2.imencode(".png", image)
  if not ok:
    raise RuntimeError(f"cannot encode {photo.path} as PNG")
  path.write_bytes(encoded.tobytes())


def extract_opencv_contrib(archive: Union[str, os.PathLike],
                           dest: Union[str, os.PathLike],
                           members: Optional[Dict[str, ArchivePhoto]] = None
                           ) -> pathlib.Path:
  """Copies the chosen photos of the contrib source archive, flat, into
  ``dest``, cutting out and turning those that need it.

  Raises:
    RuntimeError: a chosen file is not in the archive, does not decode, or
      its crop does not fit (named).
  """
  members = OPENCV_CONTRIB_MEMBERS if members is None else members

  def finish(staging: pathlib.Path) -> None:
    for name, photo in members.items():
      if photo.transformed:
        transform_photo(staging / name, photo)
    (staging / RECIPE_FILE).write_text(contrib_recipe(members) + "\n")

  return _extract_flat(
      archive, dest, {photo.path: name for name, photo in members.items()},
      finish)


def fetch_opencv_contrib(dest: Union[str, os.PathLike],
                         url: Optional[str] = None,
                         sha256: str = OPENCV_CONTRIB_SDIST_SHA256,
                         index: str = PYPI_SIMPLE,
                         timeout: float = 900.0) -> pathlib.Path:
  """As :func:`fetch_opencv_samples`, for the contrib archive's photos."""
  return _fetch_sdist(OPENCV_CONTRIB_PROJECT, OPENCV_CONTRIB_SDIST, sha256,
                      lambda archive: extract_opencv_contrib(archive, dest),
                      url, index, timeout)


def fetch_all(log: Callable[[str], None] = print) -> pathlib.Path:
  """The set-up step: fetches every asset that is missing (network: the
  PyPI registry only). Returns the data home."""
  # (folder, whether it is complete, what a fetch downloads, the fetch);
  # the fetches are looked up at call time (tests replace them).
  steps = (
      (labelme_voc_path(), has_voc_examples,
       f"the labelme {LABELME_VERSION} source archive",
       lambda folder: fetch_labelme_voc(folder)),
      (opencv_samples_path(),
       lambda folder: has_files(folder, opencv_samples_members()),
       f"{OPENCV_SDIST} ({OPENCV_PROJECT}'s source archive, 82 MB) from "
       f"{PYPI_SIMPLE}", lambda folder: fetch_opencv_samples(folder)),
      (opencv_contrib_path(), has_contrib_photos,
       f"{OPENCV_CONTRIB_SDIST} ({OPENCV_CONTRIB_PROJECT}'s source archive, "
       f"154 MB) from {PYPI_SIMPLE}",
       lambda folder: fetch_opencv_contrib(folder)))
  for folder, complete, what, fetch in steps:
    if complete(folder):
      log(f"fetch_data: {folder} is present")
    else:
      log(f"fetch_data: fetching {what} into {folder}")
      fetch(folder)
  return data_home()
