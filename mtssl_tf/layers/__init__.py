"""Custom Keras layers (registered for ``keras.models.load_model``)."""
from mtssl_tf.layers.unit_mixer import UnitMixer, UnitNorm

__all__ = ["UnitMixer", "UnitNorm"]
