"""mtssl_tf: Multi-task Self-Supervised Visual Learning (Doersch & Zisserman,
ICCV 2017) in TensorFlow / Keras 3.

Importing the package registers its Keras objects (trunk, UnitMixer, heads of
already-imported tasks) so that ``keras.models.load_model`` can open the
package's ``.keras`` files.
"""
__version__ = "0.1.0"

import os as _os
import sys as _sys

if "tensorflow" not in _sys.modules:
  # When this package is the first to load TensorFlow (the command-line
  # entry points), keep TF's C++ INFO/WARNING lines (libpng iCCP notices on
  # some sample PNGs, oneDNN banners) out of the progress output. A value the
  # user set wins.
  _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mtssl_tf import layers, models  # noqa: E402  (registers Keras objects)
from mtssl_tf.layers import UnitMixer  # noqa: E402
from mtssl_tf.models import Trunk, TrunkConfig, build_trunk  # noqa: E402
from mtssl_tf.models.multitask import MultiTaskModel  # noqa: E402
from mtssl_tf.models.build import build_model  # noqa: E402
from mtssl_tf import tasks  # noqa: E402

tasks.import_all()  # registers the heads' Keras classes

__all__ = ["layers", "models", "tasks", "MultiTaskModel", "Trunk", "TrunkConfig", "UnitMixer",
           "build_model", "build_trunk", "__version__"]
