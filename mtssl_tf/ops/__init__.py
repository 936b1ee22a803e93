"""TensorFlow image ops shared by the tasks (usable eagerly and inside tf.data)."""
