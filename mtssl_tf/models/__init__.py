"""Models: the ResNet-v2 trunk and the multi-task model."""
from mtssl_tf.models.trunk import (DEPTHS, Trunk, TrunkConfig, build_trunk,
                                   copy_weights_by_name, trunk_graph)

__all__ = ["DEPTHS", "Trunk", "TrunkConfig", "build_trunk",
           "copy_weights_by_name", "trunk_graph"]
