"""Command-line helpers of the entry points (absl flags).

Only ``python -m mtssl_tf.X`` modules import this package; library code
receives configs (:mod:`mtssl_tf.config`, :mod:`mtssl_tf.options`) and
never defines or reads absl flags.
"""
