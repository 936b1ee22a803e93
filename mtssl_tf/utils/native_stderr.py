"""Keeps the image decoders' own messages off the user's terminal.

libjpeg and libpng, inside TensorFlow's decoders, write straight to the
process's stderr ("Corrupt JPEG data: premature end of data segment",
"libpng warning: iCCP: ..."), with no file name, from whatever thread is
decoding. The input pipelines already refuse and name such files
(:mod:`mtssl_tf.data.skips`); these lines only bury that report.
:func:`hidden_decoder_messages` puts a filter between file descriptor 2 and
the terminal for the length of a run: every other line passes unchanged.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

DECODER_MESSAGES = re.compile(
    r"Corrupt JPEG data|Premature end of JPEG|Unsupported JPEG process|"
    r"Improper call to JPEG library|Invalid JPEG file structure|"
    r"Not a JPEG file|Input file read error|Bogus (marker|Huffman|DQT|DHT)|"
    r"JPEG datastream contains no image|Huffman table 0x|"
    r"Quantization table 0x|libpng (warning|error)|"
    r"tensorflow/core/lib/(jpeg|png|gif)/")


class Hidden:
  """How many lines the filter kept back."""
  count = 0


@contextlib.contextmanager
def hidden_decoder_messages(pattern: re.Pattern = DECODER_MESSAGES):
  """Within the block, lines written to stderr (by Python or by native
  code) that match ``pattern`` are dropped; yields a :class:`Hidden` with
  their count. Outside a real file descriptor 2 (e.g. under pytest's
  capture) it does nothing."""
  hidden = Hidden()
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError, AttributeError):
    yield hidden
    return
  read_end, write_end = os.pipe()
  os.dup2(write_end, 2)
  os.close(write_end)

  def pump():
    with os.fdopen(read_end, "rb") as source, \
        os.fdopen(os.dup(saved), "wb", buffering=0) as terminal:
      for line in source:
        if pattern.search(line.decode("utf-8", "replace")):
          hidden.count += 1
        else:
          terminal.write(line)

  thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
  thread.start()
  try:
    yield hidden
  finally:
    sys.stderr.flush()
    # Closing the pipe's last write end ends the pump once it has drained.
    os.dup2(saved, 2)
    thread.join(timeout=10)
    os.close(saved)


__all__ = ["DECODER_MESSAGES", "hidden_decoder_messages"]
