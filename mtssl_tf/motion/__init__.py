"""Motion masks from videos: the labels of the motion segmentation task.

Doersch & Zisserman (ICCV 2017) train one of their four self-supervised heads
to predict, from a single frame, which pixels move (Pathak et al., CVPR 2017,
"Learning Features by Watching Objects Move"). Pathak's labels came from an
unsupervised video segmentation (uNLC) built on dense optical flow. This module
computes comparable pseudo ground truth with OpenCV only, once, offline:

1. Frames are read with OpenCV (``cv2.VideoCapture``), converted to RGB and
   optionally downscaled so that their longer side is at most ``max_side``.
2. For a target frame ``t`` and each offset ``d`` in ``offsets`` (default
   ``(-2, -1, 1, 2)``), dense Farneback flow is computed from frame ``t`` to
   frame ``t + d`` (so every flow field lives on frame ``t``'s pixels).
3. Camera motion: a homography is fitted with RANSAC to the flow sampled on a
   regular grid. The background is the dominant motion, so RANSAC's inliers
   are the background and independently moving objects are outliers.
4. Residual = flow minus the homography-induced flow. A pixel moves in pair
   ``d`` when ``|residual| > threshold * |d|`` (pixels per frame of gap).
   Pixels that the homography maps outside the frame have no correspondence
   and do not vote in that pair.
5. Consistency over several frames: a pixel is moving when it moves in at
   least ``min_agreement`` of the pairs where it votes. Forward and backward
   offsets together remove the occlusion halos that one flow field leaves
   beside a moving object.
6. Cleaning: morphological opening then closing, and connected components
   smaller than ``min_area`` (fraction of the frame) are dropped.

A frame whose cleaned mask is empty is *static*; a frame where more than
``max_area`` of the pixels move is *unreliable* (the camera model failed, e.g.
a cut or a scene that is mostly foreground). Neither is written by default. A
video whose frames are all static is reported as static, never an error.

Storage: one TFRecord file per video of ``tf.train.Example`` records,

=====================  ======  ============================================
key                    type    value
=====================  ======  ============================================
``image/encoded``      bytes   the frame, JPEG (default) or PNG, RGB
``image/format``       bytes   ``b"jpeg"`` or ``b"png"``
``mask/encoded``       bytes   the mask, 1-channel PNG with values {0, 1}
``image/height``       int64   frame height
``image/width``        int64   frame width
``video/name``         bytes   the video's file name
``frame/index``        int64   the frame's index in the (decoded) video
``mask/fraction``      float   fraction of moving pixels
=====================  ======  ============================================

:func:`motion_dataset` reads them back as ``{"image": uint8 [H, W, 3],
"mask": uint8 [H, W]}`` with mask values in {0, 1}.

The package is split by job: :mod:`~mtssl_tf.motion.video` (reading and
writing videos), :mod:`~mtssl_tf.motion.flow` (flow, camera model, settings),
:mod:`~mtssl_tf.motion.masks` (the multi-pair vote over a frame stream),
:mod:`~mtssl_tf.motion.records` (the TFRecord format),
:mod:`~mtssl_tf.motion.jobs` (videos -> record files) and
:mod:`~mtssl_tf.motion.drawing` (previews). Its public names are all
importable from ``mtssl_tf.motion``. OpenCV is imported inside the functions
that need it so that importing the package (for :func:`motion_dataset`)
stays cheap.
"""
from mtssl_tf.motion.drawing import overlay_mask, preview_grid
from mtssl_tf.motion.flow import (MotionMaskConfig, clean_mask, dense_flow,
                                  fit_camera_motion, homography_flow,
                                  moving_pixels)
from mtssl_tf.motion.jobs import (SUMMARY_NAME, VideoReport,
                                  cached_motion_records, check_run_settings,
                                  config_from_settings,
                                  process_video, run_videos,
                                  summarize_reports)
from mtssl_tf.motion.masks import (FrameMask, iter_motion_masks, mask_iou,
                                   motion_masks)
from mtssl_tf.motion.records import (IMAGE_FORMATS, encode_example,
                                     list_tfrecords, motion_dataset,
                                     parse_example, write_tfrecord)
from mtssl_tf.motion.video import (VideoReadError, expand_video_patterns,
                                   iter_video_frames, read_video, write_video)

__all__ = [
    "FrameMask", "IMAGE_FORMATS", "MotionMaskConfig", "SUMMARY_NAME",
    "VideoReadError", "VideoReport", "cached_motion_records",
    "check_run_settings", "clean_mask", "config_from_settings", "dense_flow",
    "encode_example", "expand_video_patterns", "fit_camera_motion",
    "homography_flow", "iter_motion_masks", "iter_video_frames",
    "list_tfrecords", "mask_iou", "motion_dataset", "motion_masks",
    "moving_pixels", "overlay_mask", "parse_example", "preview_grid",
    "process_video", "read_video", "run_videos", "summarize_reports",
    "write_tfrecord", "write_video",
]
