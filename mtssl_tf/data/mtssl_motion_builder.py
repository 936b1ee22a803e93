"""``mtssl_motion``: motion-segmentation data as a TFDS dataset.

The labels of the motion segmentation task (Doersch & Zisserman, ICCV 2017,
after Pathak et al., CVPR 2017) are computed from a folder of your videos by
the package's flow / camera-motion pipeline (:mod:`mtssl_tf.motion`: dense
Farneback flow, a RANSAC homography for the camera, forward-backward
agreement, morphological cleaning), once, when the dataset is prepared. TFDS
then names, versions and shards the result like any other dataset.

Manual data (nothing is downloaded): put the videos in the manual folder,
either directly (all go to ``train``) or in sub-folders named after splits
(``train/``, ``validation/``, ``test/``)::

  <manual_dir>/train/clip1.mp4, <manual_dir>/train/clip2.avi, ...
  <manual_dir>/validation/clip9.mp4

Prepare and read::

  import tensorflow_datasets as tfds
  import mtssl_tf.data.mtssl_motion  # registers the builder
  builder = tfds.builder("mtssl_motion", data_dir="/data/tfds")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir="/data/videos"))
  ds = tfds.load("mtssl_motion", split="train", data_dir="/data/tfds")

or ``python -m mtssl_tf.data.mtssl_motion --manual_dir=/data/videos
--data_dir=/data/tfds`` (the same call, :func:`prepare`; TFDS 4.9.10's own
``tfds build`` command imports ``apache_beam``, which the pinned stack does
not install); then train with
``python -m mtssl_tf.train --data=tfds --data_dir=/data/tfds ...`` (motion
segmentation reads ``--motion_tfds_name``, default ``mtssl_motion``).

Each example is one frame with motion:

=================  ==================================  ======================
feature            type                                value
=================  ==================================  ======================
``frame``          Image uint8 [H, W, 3], JPEG         the frame, RGB
``mask``           Image uint8 [H, W, 1], PNG          1 where pixels move
``video_id``       Text                                file name, split-relative
``frame_index``    int64                               index in the video
``moving_fraction`` float32                            fraction of moving px
=================  ==================================  ======================

Frames without motion (static) and frames where more than ``max_area`` moves
(the camera model failed) are left out, as ``make_motion_masks`` does.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import tensorflow_datasets as tfds

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".mpg",
                    ".mpeg", ".m4v")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class MtsslMotionConfig(tfds.core.BuilderConfig):
  """How the masks are computed: a :class:`mtssl_tf.motion.MotionMaskConfig`
  (as keyword arguments) and the frame stride.

  Attributes:
    mask: keyword arguments of ``MotionMaskConfig`` (``max_side``,
      ``threshold``, ``min_area``...).
    every: every ``every``-th frame is a target (flow still uses the
      neighbouring frames).
    max_frames: read at most this many frames per video (``None``: all).
  """
  mask: Dict[str, Any] = dataclasses.field(default_factory=dict)
  every: int = 3
  max_frames: Any = None


# The builder lives here, not in the command's module: run as `python -m`,
# that file is `__main__`, and a class registered from it would make TFDS
# look for resources of a package called `__main__`.
class MtsslMotion(tfds.core.GeneratorBasedBuilder):
  """Frames and motion masks computed from a folder of videos.

  Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
  Learning", ICCV 2017 (the motion segmentation task); labels as in
  :mod:`mtssl_tf.motion`.
  """

  # TFDS looks for a checksums file beside a builder's code, for the files
  # it downloads; this builder downloads nothing. Finding that path needs
  # the `importlib_resources` package, which TFDS 4.9.10 imports but the
  # pinned stack (etils 1.15) does not install: without a code path TFDS
  # skips the lookup.
  code_path = None

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Frames, motion masks, video id, frame index."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Put your videos (" + ", ".join(VIDEO_EXTENSIONS) + ") in the manual "
      "folder, directly (all become the 'train' split) or in sub-folders "
      "named train/, validation/, test/. Pass it as "
      "download_config=tfds.download.DownloadConfig(manual_dir=...) or "
      "`tfds build --manual_dir=...`.")
  BUILDER_CONFIGS = [
      # The offline demo's settings (mtssl_tf.data.pipeline): frames at most
      # 160 px on their longer side, every third frame.
      MtsslMotionConfig(name="default", description="max_side=160, every=3",
                        mask={"max_side": 160}, every=3),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[0],
        features=tfds.features.FeaturesDict({
            "frame": tfds.features.Image(shape=(None, None, 3),
                                         encoding_format="jpeg"),
            "mask": tfds.features.Image(shape=(None, None, 1),
                                        encoding_format="png"),
            "video_id": tfds.features.Text(),
            "frame_index": np.int64,
            "moving_fraction": np.float32,
        }),
        supervised_keys=("frame", "mask"),
        citation="Doersch & Zisserman, Multi-task Self-Supervised Visual "
                 "Learning, ICCV 2017.")

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    splits = videos_by_split(root)
    return {split: self._generate_examples(videos, base)
            for split, (base, videos) in splits.items()}

  def _generate_examples(self, videos: List[str], base: str
                         ) -> Iterator[Tuple[str, Dict[str, Any]]]:
    from mtssl_tf import motion  # pylint: disable=g-import-not-at-top
    config = motion.MotionMaskConfig(**dict(self.builder_config.mask))
    for path in videos:
      video_id = os.path.relpath(path, base)
      frames = motion.iter_video_frames(path, config.max_side,
                                        self.builder_config.max_frames)
      for item in motion.iter_motion_masks(frames, config,
                                           self.builder_config.every):
        if item.status != "moving":
          continue
        yield f"{video_id}#{item.index}", {
            "frame": item.frame,
            "mask": item.mask[..., None],
            "video_id": video_id,
            "frame_index": item.index,
            "moving_fraction": item.fraction,
        }


def _videos_in(folder: str) -> List[str]:
  found = []
  for dirpath, _, files in os.walk(folder):
    for name in files:
      if name.lower().endswith(VIDEO_EXTENSIONS):
        found.append(os.path.join(dirpath, name))
  return sorted(found)


def videos_by_split(root: str) -> Dict[str, Tuple[str, List[str]]]:
  """``{split: (base folder, [video paths])}`` of a manual folder.

  Raises:
    FileNotFoundError: the folder is missing or holds no video; the message
      names it and the extensions looked for.
  """
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"mtssl_motion: manual folder {root!r} does not exist; "
        + MtsslMotion.MANUAL_DOWNLOAD_INSTRUCTIONS)
  named = [s for s in SPLITS if os.path.isdir(os.path.join(root, s))]
  if named:
    splits = {s: (os.path.join(root, s), _videos_in(os.path.join(root, s)))
              for s in named}
    loose = [f for f in os.listdir(root)
             if f.lower().endswith(VIDEO_EXTENSIONS)]
    if loose:
      raise ValueError(
          f"mtssl_motion: {root!r} has split folders ({', '.join(named)}) "
          f"and videos outside them ({', '.join(sorted(loose))}); move the "
          "videos into a split folder")
  else:
    splits = {"train": (root, _videos_in(root))}
  empty = [s for s, (_, videos) in splits.items() if not videos]
  if empty:
    raise FileNotFoundError(
        f"mtssl_motion: no video ({', '.join(VIDEO_EXTENSIONS)}) for split "
        f"{', '.join(empty)} under {root!r}")
  return splits


def prepare(manual_dir: str, data_dir: Optional[str] = None
            ) -> tfds.core.DatasetBuilder:
  """``download_and_prepare`` of ``mtssl_motion`` from a folder of videos
  (nothing is downloaded); returns the prepared builder."""
  videos_by_split(manual_dir)  # a clear error before TFDS starts
  builder = tfds.builder("mtssl_motion", data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder


__all__ = ["MtsslMotion", "MtsslMotionConfig", "SPLITS", "VIDEO_EXTENSIONS",
           "prepare", "videos_by_split"]
