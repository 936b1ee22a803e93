"""Loading presets: the model (or its trunk) of a built or registered
preset, its weights sha256-checked; a preset's architecture with fresh
weights; a preset as a ``.keras`` file."""
from __future__ import annotations

import os
import tempfile
from typing import Any, Dict, Mapping, Optional, Sequence

from mtssl_tf.model_zoo.download import (WeightsIntegrityError, check_sha256,
                                         fetch, is_url)
from mtssl_tf.model_zoo.presets import get_preset
from mtssl_tf.model_zoo.registry import load_registered, registered_metadata
from mtssl_tf.model_zoo.store import (build_hint, checked_file,
                                      default_folder, folder, load_metadata,
                                      metadata_path)


def make_model(model_kwargs: Mapping[str, Any]):
  """A :class:`~mtssl_tf.models.multitask.MultiTaskModel` named ``mtssl``
  (the name its weights files were saved under)."""
  from mtssl_tf.models.build import build_model
  return build_model(dict(model_kwargs), name="mtssl")


def _model_kwargs(meta: Mapping[str, Any]) -> Dict[str, Any]:
  """MultiTaskModel kwargs from metadata, tasks in the preset's order.

  The JSON's keys are sorted; the preset's order is kept for display (the
  weights file keys heads and UnitMixer rows by task name, so the order
  does not decide which weights a task gets).
  """
  kwargs = dict(meta["model"])
  stored = kwargs["tasks"]
  if set(stored) != set(meta["tasks"]):
    raise ValueError(
        f"metadata of preset {meta.get('name')!r} is inconsistent: model "
        f"tasks {sorted(stored)} vs tasks {meta['tasks']}")
  kwargs["tasks"] = {t: stored[t] for t in meta["tasks"]}
  return kwargs


def build_preset_model(name: str, tiny: bool = True,
                       extra_flags: Sequence[str] = (),
                       overrides: Optional[Mapping[str, Any]] = None):
  """The preset's architecture with fresh weights, from the registry.

  Args:
    name: preset name.
    tiny: a depth-14, width-0.25 trunk with small heads (tests); ``False``
      gives the study size the committed weights have.
    extra_flags: more training flags, e.g. ``["--depth=26"]``.
    overrides: typed config overrides by flag name, e.g. ``{"depth": 26}``.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel` (a Keras model).
  """
  config = get_preset(name).config("tiny" if tiny else "study",
                                   list(extra_flags), dict(overrides or {}))
  return make_model(config.model_kwargs())


def _own_weights_file(name: str, weights: str,
                      sha256: Optional[str]) -> str:
  """The caller's weights file for preset ``name``: a URL fetched into the
  cache (``sha256`` required) or a local path (checked when ``sha256`` is
  given)."""
  weights = os.fspath(weights)
  if is_url(weights):
    if sha256 is None:
      raise ValueError(f"load({name!r}, weights={weights!r}) needs "
                       "sha256=<hex digest of the file>: downloaded "
                       "weights are always checked")
    return fetch(weights, sha256, stem=name)
  if sha256 is None:
    if not os.path.exists(weights):
      raise FileNotFoundError(f"weights file {weights} does not exist")
    return weights  # the caller's own file: checked only when asked
  return checked_file(weights, check_sha256(sha256, weights), name,
                      "sha256=")


def _zoo_weights_file(name: str, meta: Mapping[str, Any],
                      weights_dir: Optional[str]) -> str:
  """The zoo folder's sha256-checked weights file of a built-in preset,
  else its registry ``weights_url`` fetched into the cache."""
  preset = get_preset(name)
  path = os.path.join(folder(weights_dir), preset.weights_filename)
  if os.path.exists(path):
    try:
      return checked_file(path, meta["sha256"], name,
                          f"the metadata {metadata_path(name, weights_dir)}")
    except WeightsIntegrityError as e:
      raise WeightsIntegrityError(f"{e}; {build_hint(name)}") from None
  if preset.weights_url:
    if preset.weights_sha256 != meta["sha256"]:
      raise WeightsIntegrityError(
          f"model-zoo preset {name!r}: the registry's weights_sha256 "
          f"{preset.weights_sha256} differs from the metadata's "
          f"{meta['sha256']} ({metadata_path(name, weights_dir)}): they "
          "describe different weights files")
    return fetch(preset.weights_url, preset.weights_sha256, stem=name)
  raise FileNotFoundError(
      f"model-zoo preset {name!r}: weights file {path} does not exist; "
      f"{build_hint(name)}")


def _has_metadata(name: str, weights_dir: Optional[str]) -> bool:
  if weights_dir is None and default_folder() is None:
    return False
  return os.path.exists(metadata_path(name, weights_dir))


def load(name: str, *, weights=True, weights_dir: Optional[str] = None,
         sha256: Optional[str] = None):
  """The preset's model, with its weights checked and loaded.

  Args:
    name: a preset name (:func:`list_presets`) or a registered preset
      (:func:`list_registered`).
    weights: ``True``: the preset's weights from the zoo folder (else its
      registry ``weights_url``, fetched and cached); ``False``: fresh
      weights; a URL (with ``sha256``; fetched into the cache) or a path
      of a ``.weights.h5`` file. Without the preset's metadata (no zoo
      folder, as in a wheel) the architecture is its study-scale recipe.
    weights_dir: the zoo folder of ``<name>.weights.h5`` and
      ``<name>.json`` (default: ``$MTSSL_TF_ZOO_DIR``, else the
      checkout's ``model_zoo/``).
    sha256: expected sha256 of ``weights`` when it is a URL or a path.

  Returns:
    A :class:`~mtssl_tf.models.multitask.MultiTaskModel`; ``.save(x.keras)``
    writes a file that ``keras.models.load_model`` opens after
    ``import mtssl_tf``.

  Raises:
    ValueError: unknown name (the message lists the known ones); a
      trunk-only registered preset (use :func:`load_trunk`).
    FileNotFoundError: the preset is not built, or no zoo folder is known
      (the message says where weights come from).
    WeightsIntegrityError: the weights file's sha256 differs from the
      expected one (a ``ValueError`` naming the file and both hashes).
    WeightsDownloadError: a weights URL could not be fetched.
  """
  if sha256 is not None and not isinstance(weights, (str, os.PathLike)):
    raise ValueError("sha256= applies to weights=<URL or path> only; a "
                     "preset's own weights are checked against its metadata")
  registered = registered_metadata(name, weights_dir)
  if registered is not None:
    if registered["kind"] != "multitask":
      raise ValueError(
          f"registered preset {name!r} is a trunk without task heads; load "
          f"it with model_zoo.load_trunk({name!r}) or "
          f"mtssl_tf.Trunk.from_preset({name!r})")
    return load_registered(registered, weights, weights_dir)
  own_file = isinstance(weights, (str, os.PathLike))
  if weights is not True and weights is not False and not own_file:
    raise ValueError(f"weights={weights!r} must be True, False, a URL or "
                     "a path")
  get_preset(name)
  # Without metadata (no zoo folder, as in a wheel, or not built): the
  # architecture of the preset's study-scale recipe, which made the files.
  with_meta = weights is True or _has_metadata(name, weights_dir)
  meta = load_metadata(name, weights_dir) if with_meta else None
  model = (make_model(_model_kwargs(meta)) if with_meta
           else build_preset_model(name, tiny=False))
  # Float16 arrays of a zoo file load into the float32 variables (Keras
  # assigns each by its layer's path; the sha256 was checked on the file).
  if own_file:
    model.load_weights(_own_weights_file(name, weights, sha256))
  elif weights is True:
    model.load_weights(_zoo_weights_file(name, meta, weights_dir))
  return model


def load_trunk(name: str, *, weights=True, weights_dir: Optional[str] = None,
               sha256: Optional[str] = None):
  """The preset's trunk (:class:`~mtssl_tf.models.Trunk`), weights checked
  as by :func:`load`; a registered trunk-only preset (a converted authors'
  checkpoint) is returned as it is."""
  registered = registered_metadata(name, weights_dir)
  if registered is not None:
    model = load_registered(registered, weights, weights_dir)
    return model if registered["kind"] == "trunk" else model.trunk
  return load(name, weights=weights, weights_dir=weights_dir,
              sha256=sha256).trunk



def export_keras(name: str, output: str, *,
                 weights_dir: Optional[str] = None) -> str:
  """Writes the preset's model (weights checked) as a ``.keras`` file that
  ``keras.models.load_model`` opens after ``import mtssl_tf``."""
  if not output.endswith(".keras"):
    raise ValueError(f"output={output!r} must end with .keras")
  model = load(name, weights_dir=weights_dir)
  out_dir = os.path.dirname(os.path.abspath(output))
  os.makedirs(out_dir, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".keras", dir=out_dir)
  os.close(fd)
  try:
    model.save(tmp)
    os.replace(tmp, output)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return output
