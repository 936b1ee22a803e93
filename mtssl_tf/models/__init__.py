"""Models: the ResNet-v2 trunk and the multi-task model."""
from mtssl_tf.models.trunk import (DEPTHS, Trunk, TrunkConfig, build_trunk,
                                   copy_weights_by_name, trunk_graph)
from mtssl_tf.models.build import build_model  # noqa: E402  (after trunk)

__all__ = ["DEPTHS", "Trunk", "TrunkConfig", "build_model", "build_trunk",
           "copy_weights_by_name", "trunk_graph"]
