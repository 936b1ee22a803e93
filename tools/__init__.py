"""Maintainer tooling of mtssl_tf, kept out of the installed package (as
keras-hub keeps its checkpoint conversion scripts in ``tools/``).

Run from the repository root of a checkout:

* ``python -m tools.zoo build|register``: builds the model zoo's presets
  into ``model_zoo/`` (:mod:`tools.zoo`);
* ``python -m tools.study``: the CPU-scale study with seeds (``make
  study``);
* ``python -m tools.report``: the paper's Tables 2-4 over checkpoints, the
  generator of RESULTS.md (:mod:`tools.report`).
"""
