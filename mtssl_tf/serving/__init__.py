"""Serving: clients of the exported model under TF Serving."""
