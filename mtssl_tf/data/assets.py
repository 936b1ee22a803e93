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
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Callable, Optional, Union

ENV_VAR = "MTSSL_TF_DATA"
SETUP_COMMAND = "`make venv` (or `python -m mtssl_tf.fetch_data`)"
LABELME_VERSION = "6.3.1"
_LABELME_VOC_DIR = "examples/bbox_detection/data_dataset_voc/"


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


def extract_labelme_voc(archive: Union[str, os.PathLike],
                        dest: Union[str, os.PathLike]) -> pathlib.Path:
  """Copies ``JPEGImages/`` and ``Annotations/`` of the labelme source
  archive's VOC example into ``dest``.

  Raises:
    RuntimeError: the archive does not hold 3 images and 3 XML files there.
  """
  dest = pathlib.Path(dest)
  with tempfile.TemporaryDirectory() as tmp:
    staging = pathlib.Path(tmp)
    count = 0
    with tarfile.open(archive) as tar:
      for member in tar.getmembers():
        parts = member.name.split("/", 1)
        if len(parts) < 2 or not parts[1].startswith(_LABELME_VOC_DIR):
          continue
        rel = parts[1][len(_LABELME_VOC_DIR):]
        if not member.isfile() or rel.split("/")[0] not in ("JPEGImages",
                                                           "Annotations"):
          continue
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(target, "wb") as dst:
          shutil.copyfileobj(src, dst)
        count += 1
    if count < 6 or not has_voc_examples(staging):
      raise RuntimeError(
          f"{os.path.basename(archive)} holds {count} files under "
          f"{_LABELME_VOC_DIR}; expected 3 labelme VOC images + 3 XML")
    dest.mkdir(parents=True, exist_ok=True)
    for sub in ("JPEGImages", "Annotations"):
      shutil.copytree(staging / sub, dest / sub, dirs_exist_ok=True)
  return dest


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


def fetch_all(log: Callable[[str], None] = print) -> pathlib.Path:
  """The set-up step: fetches every asset that is missing (network: the
  PyPI registry only). Returns the data home."""
  folder = labelme_voc_path()
  if has_voc_examples(folder):
    log(f"fetch_data: {folder} is present")
  else:
    log(f"fetch_data: fetching the labelme {LABELME_VERSION} source archive "
        f"into {folder}")
    fetch_labelme_voc(folder)
  return data_home()
