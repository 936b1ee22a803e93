"""Image files: finding them in a folder, and checking them before decoding.

Two things go wrong with the image folders people train on, and both are
handled here rather than left to the decoders:

* Folders can hold symbolic links that loop (``photos/all -> ..``); the
  listing follows links but visits each real folder once.
* A file can be empty, not an image at all, a JPEG cut short by a failed
  copy, or a header that claims billions of pixels. TensorFlow's decoders
  refuse most of these, but a truncated JPEG makes libjpeg print
  "Premature end of JPEG data" or "Input file read error" on stderr on
  every read (no file name), and a huge header makes the decoder allocate
  the whole image. :func:`checked_decode` reads the first bytes and the
  last KiB, gives such a file a status code of :mod:`mtssl_tf.data.skips`
  and only hands the rest to ``tf.io.decode_image``.
"""
from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import tensorflow as tf

from mtssl_tf.data.skips import (EMPTY, NOT_IMAGE, OK, TOO_LARGE,
                                 TRUNCATED)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
# Pillow's bound for a decompression bomb: about 180 megapixels (a 540 MB
# RGB array); no photo a trunk trains on comes near it.
MAX_IMAGE_PIXELS = 178_956_970
# A JPEG's end-of-image marker must sit in its last bytes; camera files can
# carry a little padding after it.
_JPEG_TAIL = 1024
_HEAD = 32


def list_image_files(path: str,
                     extensions: Sequence[str] = IMAGE_EXTENSIONS) -> List[str]:
  """Image files under ``path`` (recursive, sorted, extension case-insensitive).

  Symbolic links to folders are followed, each real folder once, so a link
  that loops back is harmless. Remote paths (``gs://...``) are walked with
  ``tf.io.gfile``.

  Raises:
    FileNotFoundError: ``path`` is missing or not a folder, or holds no image
      file; the message names the path.
  """
  path = os.fspath(path)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"image folder {path!r} does not exist")
  if not tf.io.gfile.isdir(path):
    raise FileNotFoundError(f"image folder {path!r} is not a folder")
  extensions = tuple(e.lower() for e in extensions)
  files = []
  for root, names in _walk(path):
    files.extend(os.path.join(root, name) for name in names
                 if name.lower().endswith(extensions))
  if not files:
    raise FileNotFoundError(
        f"no image files ({', '.join(extensions)}) under {path!r}")
  return sorted(files)


def _walk(path: str):
  """``(folder, file names)`` under ``path``; local folders by real path, once."""
  if "://" in path:
    for root, _, names in tf.io.gfile.walk(path):
      yield root, names
    return
  seen = set()
  for root, dirs, names in os.walk(path, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:
      dirs[:] = []
      continue
    seen.add(real)
    yield root, names


def _bytes(data: tf.Tensor, start, length: int) -> tf.Tensor:
  """uint8 [length] of ``data[start:start + length]``, zero-padded."""
  piece = tf.strings.substr(data, start, length)
  padded = tf.strings.join([piece, tf.constant(b"\0" * length)])
  return tf.io.decode_raw(tf.strings.substr(padded, 0, length), tf.uint8)


def _starts_with(head: tf.Tensor, prefix: bytes, at: int = 0) -> tf.Tensor:
  want = tf.constant(list(prefix), tf.uint8)
  return tf.reduce_all(tf.equal(head[at:at + len(prefix)], want))


def _number(head: tf.Tensor, start: int, size: int,
            big_endian: bool) -> tf.Tensor:
  """An unsigned integer of ``size`` bytes at ``start``, as int64."""
  digits = tf.cast(head[start:start + size], tf.int64)
  weights = [256 ** i for i in range(size)]
  if big_endian:
    weights = weights[::-1]
  return tf.reduce_sum(digits * tf.constant(weights, tf.int64))


def _signed32_le(head: tf.Tensor, start: int) -> tf.Tensor:
  value = _number(head, start, 4, big_endian=False)
  return tf.where(value >= 2 ** 31, value - 2 ** 32, value)


def header_status(data: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """What the bytes of an image file say before decoding.

  Returns:
    ``(status, is_jpeg)``: :data:`~mtssl_tf.data.skips.OK`, ``EMPTY``,
    ``NOT_IMAGE`` (no JPEG, PNG, GIF, BMP or WebP signature), ``TRUNCATED``
    (a JPEG without its end marker in its last KiB) or ``TOO_LARGE``
    (a PNG, GIF or BMP header with more than :data:`MAX_IMAGE_PIXELS`;
    JPEGs are measured by :func:`checked_decode`).
  """
  length = tf.strings.length(data)
  head = _bytes(data, 0, _HEAD)
  is_jpeg = _starts_with(head, b"\xff\xd8\xff")
  is_png = _starts_with(head, b"\x89PNG\r\n\x1a\n")
  is_gif = _starts_with(head, b"GIF8")
  is_bmp = _starts_with(head, b"BM")
  is_webp = tf.logical_and(_starts_with(head, b"RIFF"),
                           _starts_with(head, b"WEBP", at=8))
  known = tf.reduce_any(tf.stack([is_jpeg, is_png, is_gif, is_bmp, is_webp]))

  tail = _bytes(data, tf.maximum(length - _JPEG_TAIL, 0), _JPEG_TAIL)
  has_end = tf.reduce_any(tf.logical_and(tf.equal(tail[:-1], 0xFF),
                                         tf.equal(tail[1:], 0xD9)))
  width = tf.where(is_png, _number(head, 16, 4, True),
                   tf.where(is_gif, _number(head, 6, 2, False),
                            tf.abs(_signed32_le(head, 18))))
  height = tf.where(is_png, _number(head, 20, 4, True),
                    tf.where(is_gif, _number(head, 8, 2, False),
                             tf.abs(_signed32_le(head, 22))))
  measured = tf.reduce_any(tf.stack([is_png, is_gif, is_bmp]))
  too_large = tf.logical_and(measured, width * height > MAX_IMAGE_PIXELS)

  status = tf.constant(OK)
  status = tf.where(too_large, TOO_LARGE, status)
  status = tf.where(tf.logical_and(is_jpeg, tf.logical_not(has_end)),
                    TRUNCATED, status)
  status = tf.where(known, status, NOT_IMAGE)
  status = tf.where(tf.equal(length, 0), EMPTY, status)
  return status, is_jpeg


def decode_image(data: tf.Tensor) -> tf.Tensor:
  """Encoded bytes (JPEG/PNG/BMP/GIF/WebP) -> uint8 RGB [H, W, 3].

  Grey is repeated to three channels, alpha is dropped, 16-bit PNGs are
  scaled to 8 bits and a GIF gives its first frame. Raises
  ``InvalidArgumentError`` on bytes it cannot decode.
  """
  image = tf.io.decode_image(data, channels=3, dtype=tf.uint8,
                             expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def checked_decode(data: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """:func:`header_status`, then decoding of what passes.

  Returns:
    ``(image, status)``: uint8 [H, W, 3] and ``OK``, or an empty [0, 0, 3]
    image and the refusal's status. Bytes that pass the checks but still
    fail to decode raise ``InvalidArgumentError`` (use it inside
    :func:`mtssl_tf.data.sources.try_map`, which counts them as corrupt).
  """
  status, is_jpeg = header_status(data)

  def jpeg_size_status():
    shape = tf.cast(tf.image.extract_jpeg_shape(data), tf.int64)
    return tf.where(shape[0] * shape[1] > MAX_IMAGE_PIXELS, TOO_LARGE, OK)

  status = tf.cond(tf.logical_and(is_jpeg, tf.equal(status, OK)),
                   jpeg_size_status, lambda: status)
  image = tf.cond(tf.equal(status, OK), lambda: decode_image(data),
                  lambda: tf.zeros([0, 0, 3], tf.uint8))
  image.set_shape([None, None, 3])
  return image, status


__all__ = ["IMAGE_EXTENSIONS", "MAX_IMAGE_PIXELS", "checked_decode",
           "decode_image", "header_status", "list_image_files"]
