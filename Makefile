# Two commands do all the set-up: `make run` (the main job) and `make test`.
# Each creates .venv from the pinned requirements.txt when it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Empty DATA_DIR: download the dataset from Kaggle with kagglehub (needs a network).
DATA_DIR ?=
# paper (500 + 500 images, 15 epochs, ImageNet weights) or sample (what CI runs).
PROFILE ?= paper
# imagenet (the paper's transfer learning; needs a network once), None (from scratch), or a weights file.
WEIGHTS ?= imagenet
PYTEST_ARGS ?=
# Two pytest-xdist workers: TensorFlow keeps about one core of the two busy on this suite's small
# models, so two test processes side by side finish sooner (1 runs the suite in one process).
PYTEST_WORKERS ?= 2

.PHONY: run book test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The main job: check the dataset, execute the eight notebooks with papermill under PROFILE
# (paper: the paper's protocol; sample: a small real subset in minutes), then build the book.
run: $(VENV)/.installed
	$(BIN)/python -m cxr_utils.data $(DATA_DIR) --no-progress
	$(BIN)/python -m cxr_utils.run --profile $(PROFILE) $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") \
		$(if $(filter-out imagenet,$(WEIGHTS)),-p weights=$(WEIGHTS)) --book

# Rebuild the book from the run already in book/executed/ (no training).
book: $(VENV)/.installed
	$(BIN)/jupyter-book build . --warningiserror --keep-going

test: $(VENV)/.installed
	$(BIN)/python -m pytest --numprocesses=$(PYTEST_WORKERS) --dist=loadgroup $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
