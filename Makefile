# Two commands do all the set-up: `make run` (the main job) and `make test`.
# Each creates .venv from the pinned requirements.txt when it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Empty DATA_DIR: download the dataset from Kaggle with kagglehub (needs a network).
DATA_DIR ?=
# imagenet (the paper's transfer learning; needs a network once), none (from scratch), or a weights file.
WEIGHTS ?= imagenet
RESULTS_DIR ?= results
PYTEST_ARGS ?=

.PHONY: run test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# For now: check the dataset, then a short training run of the hybrid (50 + 50 images, 2 epochs).
run: $(VENV)/.installed
	$(BIN)/python -m cxr_utils.data $(DATA_DIR) --manifest-out $(RESULTS_DIR)/manifest.csv
	$(BIN)/python -m cxr_utils.training $(if $(DATA_DIR),--data-dir "$(DATA_DIR)") \
		--model resnet50_lstm --n-per-class 50 --epochs 2 --weights $(WEIGHTS) \
		--results-dir $(RESULTS_DIR)/quick-run

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache .pytest_cache
