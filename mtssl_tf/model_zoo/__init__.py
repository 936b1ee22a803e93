"""The model zoo: presets of the paper's task combinations, with weights.

Reference: Doersch & Zisserman, "Multi-task Self-Supervised Visual
Learning", ICCV 2017 (Tables 2-4).

>>> from mtssl_tf import model_zoo
>>> model_zoo.list_presets()[:3]
['rp', 'rp_h', 'rp_col']
>>> model = model_zoo.load("rp_col")          # a keras.Model, weights checked
>>> features = model.trunk(images)["conv4_block2_out"]
>>> model_zoo.get_preset("rp_col").config("tiny", run_dir="/tmp/x").trunk.depth
14
>>> meta = model_zoo.build_preset("rp", tiny=True, steps=2,
...                               weights_dir="/tmp/zoo")  # in-process

The package is split by job:

* :mod:`~mtssl_tf.model_zoo.presets`: :class:`Preset` objects (typed
  overrides, paper numbers, a :class:`Recipe` per scale);
* :mod:`~mtssl_tf.model_zoo.store`: the weights and metadata files, sha256;
* :mod:`~mtssl_tf.model_zoo.load`: :func:`load`, :func:`load_trunk`,
  :func:`build_preset_model`, :func:`export_keras`;
* :mod:`~mtssl_tf.model_zoo.build`: :func:`build_preset` (trains in this
  process with the Trainer, or imports a finished run with ``from_run``);
* :mod:`~mtssl_tf.model_zoo.registry`: :func:`register`,
  :func:`list_registered` (``.keras`` files by URL or path);
* :mod:`~mtssl_tf.model_zoo.download`: weights fetched by URL, checked and
  cached;
* :mod:`~mtssl_tf.model_zoo.listing`: the ``list`` / ``show`` texts.

The committed weights are demo weights made by
``python -m mtssl_tf.model_zoo build --all --resume`` at the CPU-scale
study's recipe (``configs/study_common.cfg``); see ``model_zoo/README.md``.
"""
from __future__ import annotations

from mtssl_tf.model_zoo.build import (build_command, build_preset,
                                      build_presets, read_pretext_metrics,
                                      up_to_date)
from mtssl_tf.model_zoo.download import (WeightsDownloadError,
                                         WeightsIntegrityError, cache_dir,
                                         fetch, sha256_file)
from mtssl_tf.model_zoo.load import (build_preset_model, export_keras, load,
                                     load_trunk)
from mtssl_tf.model_zoo.presets import (PRESETS, SCALES, Preset, Recipe,
                                        get_preset, list_presets,
                                        parse_train_flags, preset_config)
from mtssl_tf.model_zoo.registry import (list_registered, register,
                                         registered_metadata)
from mtssl_tf.model_zoo.store import (COMMITTED, METADATA_VERSION,
                                      RUN_DIR_PLACEHOLDER, WEIGHTS_DIR,
                                      is_built, load_metadata, metadata_path,
                                      update_evaluations, weights_path)

__all__ = ["COMMITTED", "METADATA_VERSION", "PRESETS", "Preset",
           "RUN_DIR_PLACEHOLDER", "Recipe", "SCALES", "WEIGHTS_DIR",
           "WeightsDownloadError", "WeightsIntegrityError", "build_command",
           "build_preset", "build_preset_model", "build_presets", "cache_dir",
           "export_keras", "fetch", "get_preset", "is_built",
           "list_presets", "list_registered", "load", "load_metadata",
           "load_trunk", "metadata_path", "parse_train_flags",
           "preset_config", "read_pretext_metrics", "register",
           "registered_metadata", "sha256_file", "up_to_date",
           "update_evaluations", "weights_path"]
