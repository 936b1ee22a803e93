# Two commands on a fresh machine with Python 3.11 (see README "Quick start"):
#   make demo   - set up .venv, pre-train on offline data (configs/demo.cfg),
#                 export, evaluate (linear probe and depth, trained and
#                 random-init trunks), write
#                 runs/demo/results.md, print a short summary
#   make test   - set up .venv, run the whole test suite
#   make study  - the CPU-scale study with seeds (configs/study_*.cfg): train
#                 what is missing under runs/study, fill the task-transfer
#                 matrix, write RESULTS.md
#                 (SEEDS ?= 0 1 2; python -m tools.study --dry_run lists
#                 the commands)
# `make venv` installs the pinned stack and fetches the few data files that
# no installable package carries (python -m mtssl_tf.fetch_data, into
# .venv/share/mtssl_tf); nothing downloads at run time after that.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_STAMP := $(VENV)/.data

.PHONY: venv demo study test bench clean

venv: $(STAMP) $(DATA_STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# offline.py holds the list of OpenCV sample files to keep.
$(DATA_STAMP): $(STAMP) mtssl_tf/data/assets.py mtssl_tf/data/offline.py
	$(PY) -m mtssl_tf.fetch_data
	touch $(DATA_STAMP)

demo: venv
	$(PY) -m mtssl_tf.train --flagfile=configs/demo.cfg
	$(PY) -m mtssl_tf.export --flagfile=configs/demo.cfg
	@# The linear probe and depth, trained vs random init (detection, the
	@# third evaluation, adds about a minute per trunk on 2 cores: run
	@# `python -m mtssl_tf.evaluate --checkpoint=runs/demo` for all three).
	$(PY) -m mtssl_tf.evaluate --checkpoint=runs/demo --evaluators=linear_probe,depth
	@# The demo closes on what the run learned: the held-out pretext metrics
	@# beside chance and the evaluations beside a random-init trunk, each with
	@# a line on what it means at this scale.
	@$(PY) -m mtssl_tf.demo_summary runs/demo

# Resumable: a run whose final checkpoint and held-out metrics exist is
# skipped, a half-finished one resumes; the evaluations are cached in
# runs/study/report.
SEEDS ?= 0 1 2
study: venv
	$(PY) -m tools.study --seeds="$(SEEDS)" --output=RESULTS.md

test: venv
	@# Two pytest workers (pytest-xdist), each file's tests in one worker (its
	@# module fixtures built once), the longest files first (tests/conftest.py
	@# LONGEST_FILES): much of a test's time is single-threaded tracing, so 2
	@# cores finish in about 2/3 of the serial time.
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder tests

bench: venv
	$(PY) benchmarks/train_step.py

clean:
	rm -rf $(VENV) runs build *.egg-info
