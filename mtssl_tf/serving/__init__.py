"""Serving: the export library (:mod:`mtssl_tf.serving.model_export`) and
clients of the exported model under TF Serving
(:mod:`mtssl_tf.serving.client`)."""
