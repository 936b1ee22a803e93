"""The model zoo: presets of the paper's task combinations, with weights.

Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017 (Tables 2-4).

>>> from mtssl_tf import model_zoo
>>> model_zoo.list_presets()[:3]
['rp', 'rp_h', 'rp_col']
>>> model = model_zoo.load("rp_col")          # in a checkout: model_zoo/
>>> model = model_zoo.load("rp_col", weights="file:///zoo/rp_col.weights.h5",
...                        sha256="<hex>")    # anywhere: a URL or a path
>>> features = model.trunk(images)["conv4_block2_out"]
>>> model_zoo.get_preset("rp_col").config("tiny", run_dir="/tmp/x").trunk.depth
14

The installed package holds no weights: a preset's files live in a zoo
folder (the repository's top-level ``model_zoo/`` in a checkout, or the
folder ``$MTSSL_TF_ZOO_DIR`` or ``weights_dir=`` names), or come by URL or
path with their sha256 (fetched into the Keras cache).

The package is split by job:

* :mod:`~mtssl_tf.model_zoo.presets`: :class:`Preset` objects (typed
  overrides, paper numbers, a :class:`Recipe` per scale);
* :mod:`~mtssl_tf.model_zoo.store`: the zoo folder, the weights and
  metadata files, sha256;
* :mod:`~mtssl_tf.model_zoo.load`: :func:`load`, :func:`load_trunk`,
  :func:`build_preset_model`, :func:`export_keras`;
* :mod:`~mtssl_tf.model_zoo.registry`: :func:`list_registered`,
  :func:`registered_metadata` (``.keras`` files by URL or path);
* :mod:`~mtssl_tf.model_zoo.download`: weights fetched by URL, checked and
  cached;
* :mod:`~mtssl_tf.model_zoo.provenance`: :func:`up_to_date`,
  :func:`build_command` (what made a preset's files);
* :mod:`~mtssl_tf.model_zoo.listing`: the ``list`` / ``show`` texts.

Building presets and registering files is maintainer tooling in a
checkout (``python -m tools.zoo``, :mod:`tools.zoo`). The committed weights
are study-scale weights (``configs/study_common.cfg``); see
``model_zoo/README.md``.
"""
from __future__ import annotations

from mtssl_tf.model_zoo.download import (WeightsDownloadError,
                                         WeightsIntegrityError, cache_dir,
                                         fetch, sha256_file)
from mtssl_tf.model_zoo.load import (build_preset_model, export_keras, load,
                                     load_trunk)
from mtssl_tf.model_zoo.presets import (PRESETS, SCALES, Preset, Recipe,
                                        get_preset, list_presets,
                                        parse_train_flags, preset_config)
from mtssl_tf.model_zoo.provenance import build_command, up_to_date
from mtssl_tf.model_zoo.registry import list_registered, registered_metadata
from mtssl_tf.model_zoo.store import (CHECKOUT_ZOO_DIR, COMMITTED,
                                      METADATA_VERSION, RUN_DIR_PLACEHOLDER,
                                      ZOO_DIR_ENV, NoZooFolderError,
                                      default_folder, is_built, load_metadata,
                                      metadata_path, update_evaluations,
                                      weights_path)

__all__ = ["CHECKOUT_ZOO_DIR", "COMMITTED", "METADATA_VERSION", "PRESETS",
           "NoZooFolderError", "Preset", "RUN_DIR_PLACEHOLDER", "Recipe",
           "SCALES", "WeightsDownloadError", "WeightsIntegrityError",
           "ZOO_DIR_ENV", "build_command", "build_preset_model", "cache_dir",
           "default_folder", "export_keras", "fetch", "get_preset",
           "is_built", "list_presets", "list_registered", "load",
           "load_metadata", "load_trunk", "metadata_path",
           "parse_train_flags", "preset_config", "registered_metadata",
           "sha256_file", "up_to_date", "update_evaluations", "weights_path"]
