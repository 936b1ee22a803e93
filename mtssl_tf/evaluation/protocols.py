"""Evaluation protocols: the parameters every evaluator runs with.

* ``"demo"``: the CPU-sized protocol on data that ships inside registry
  packages or that the set-up step fetched (the linear probe on
  scikit-learn's digits, detection overfitting the 3 labelme VOC images,
  depth on Middlebury tiles from scikit-image). Minutes on 2 CPU cores; it
  tells trunks apart at demo scale, it does not reproduce the paper's
  numbers.
* ``"paper"``: each evaluator's defaults, which are the paper's settings
  (ImageNet probe, VOC07 Faster R-CNN schedule, NYU depth). They need
  prepared data (TFDS ``data_dir`` or folders) and fail with a message
  naming what is missing.

``--eval_param=evaluator.name=value`` overrides a protocol's value.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional, Sequence

PROTOCOLS = ("demo", "paper")

# Same for every row of a comparison. Detection overfits the 3 labelme VOC
# images (train = test); depth fine-tunes on Middlebury tiles.
DEMO_EVAL_PARAMS: Dict[str, Dict[str, Any]] = {
    # 100 labelled digits: with all 1,347, random conv features already
    # reach ~95% top-1 and leave no room to tell trunks apart.
    "linear_probe": dict(data="digits", image_size=64, pool_size=2,
                         batch_size=64, steps=300, learning_rate=0.1,
                         max_train_examples=100),
    "detection": dict(voc_folder="labelme", image_size=128,
                      anchor_sizes=(16.0, 32.0, 64.0, 128.0), steps=50,
                      batch_size=3, learning_rate=0.02, lr_drop_steps=(),
                      weight_decay=0.0, log_every=10,
                      detector=dict(rpn_num_filters=64, head_fc_dims=256,
                                    num_sampled_rois=64, pre_nms_top_k=1000,
                                    num_proposals=300,
                                    test_pre_nms_top_k=1000,
                                    test_num_proposals=100,
                                    horizontal_flip=False,
                                    head_norm_momentum=0.9)),
    "depth": dict(source="middlebury", input_size=(64, 64), steps=150,
                  batch_size=8, learning_rate=0.01,
                  decoder_filters=(64, 32, 16, 16),
                  middlebury=dict(names=("motorcycle",), scale=0.25),
                  log_every=50),
}


def check_protocol(protocol: str) -> str:
  if protocol not in PROTOCOLS:
    raise ValueError(f"protocol={protocol!r}; allowed: {', '.join(PROTOCOLS)}")
  return protocol


def protocol_params(protocol: str, evaluators: Sequence[str],
                    overrides: Optional[Mapping[str, Mapping[str, Any]]]
                    = None) -> Dict[str, Dict[str, Any]]:
  """``{evaluator: parameters}``: the protocol's, then ``overrides``."""
  check_protocol(protocol)
  base = DEMO_EVAL_PARAMS if protocol == "demo" else {}
  out = {}
  for name in evaluators:
    params = copy.deepcopy(dict(base.get(name, {})))
    params.update((overrides or {}).get(name, {}))
    out[name] = params
  return out


def resolve_params(name: str, params: Mapping[str, Any]) -> Dict[str, Any]:
  """JSON-able parameters -> evaluator arguments: ``voc_folder="labelme"``
  is the labelme VOC folder that the set-up step fetched, and a
  ``detector`` dict becomes a ``DetectorConfig``."""
  params = dict(params)
  if name == "detection":
    from mtssl_tf.data import assets  # pylint: disable=g-import-not-at-top
    from mtssl_tf.evaluation import detection  # pylint: disable=g-import-not-at-top
    if params.get("voc_folder") == "labelme":
      params["voc_folder"] = str(assets.labelme_voc_dir())
    if isinstance(params.get("detector"), Mapping):
      params["detector"] = detection.DetectorConfig(**params["detector"])
  return params
