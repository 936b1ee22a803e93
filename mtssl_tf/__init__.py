"""mtssl_tf: Multi-task Self-Supervised Visual Learning (Doersch & Zisserman,
ICCV 2017) in TensorFlow / Keras 3."""
__version__ = "0.1.0"
