"""``python -m cxr_utils.study blanked``: chapter 8's lungs-blanked models (``cxr_utils.blanked``) trained
beside a finished run, with the run's split and protocol read from its records. See ``cxr_utils.study``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from cxr_utils import chapters, config, evaluation, shortcuts
from cxr_utils.atomic import read_json
from cxr_utils.blanked import BlankedError, blanked_results, save_blanked_results, train_blanked

# -p names the command takes; the others are the run's and define the comparison.
OVERRIDABLE = ("epochs", "batch_size", "weights", "cache_dir")
RUN_ONLY = ("seed", "n_per_class", "image_size")


def run_protocol(results_dir, overrides: dict | None = None, data_dir=None) -> dict:
    """The settings a run's models were trained with: n_per_class and seed (its split), epochs,
    batch_size, image_size, weights, data_dir and cache_dir; from the run's parameters
    (``run.json``), else its models' and its split's records; ``overrides`` (``OVERRIDABLE``) replace
    some. ValueError for a bad override, BlankedError for a folder that is not a run."""
    results_dir = Path(results_dir)
    if not (results_dir / "split.csv").is_file():
        raise BlankedError(f"{results_dir} holds no split.csv: give --run the results folder of a run "
                           "(python -m cxr_utils.run, or the notebooks' results_dir)")
    overrides = dict(overrides or {})
    for name in overrides:
        if name in RUN_ONLY:
            raise ValueError(f"-p {name}: the run's {name} defines the comparison with its intact models; "
                             f"it is read from the run, not set here")
        if name not in OVERRIDABLE:
            raise ValueError(f"-p {name}: unknown parameter; `blanked` takes {', '.join(OVERRIDABLE)}")
    parameters = dict((read_json(results_dir / "run.json") or {}).get("settings", {}))
    models = [(read_json(results_dir / m / "run.json") or {}).get("settings", {}) for m in config.REGISTRY]
    models = [m for m in models if m]
    split_record = chapters.recorded_settings(results_dir / "split.csv") or {}
    fallbacks = {"n_per_class": split_record.get("n_per_class"),
                 "seed": split_record.get("seed", next((m["training"].get("seed") for m in models), None)),
                 "epochs": next((m["training"].get("epochs") for m in models), None),
                 "batch_size": next((m["training"].get("batch_size") for m in models), None),
                 "image_size": next((m.get("image_size") for m in models), None)}
    protocol = {name: parameters.get(name, fallbacks[name]) for name in fallbacks}
    try:
        protocol["weights"] = evaluation.run_settings(results_dir)["weights"]
    except FileNotFoundError:  # no ResNet50 model trained yet: the run's parameter, if it has one
        protocol["weights"] = parameters.get("weights", config.PROTOCOL.weights)
    except ValueError as error:  # its ResNet50 models disagree: the run is not one comparison
        raise BlankedError(str(error)) from None
    protocol["cache_dir"] = parameters.get("cache_dir")
    protocol.update(overrides)
    protocol["weights"] = config.parse_weights(protocol["weights"])
    unknown = [name for name, value in protocol.items() if value is None and name in fallbacks]
    if unknown:
        raise BlankedError(f"cannot tell the run's {', '.join(unknown)} from {results_dir} (no run.json, no model "
                           "record, no split.settings.json): train its models first")
    config.check_parameters({name: protocol[name] for name in ("epochs", "batch_size")})
    protocol["data_dir"] = data_dir if data_dir is not None else parameters.get("data_dir")
    return protocol


def command(run_dir, data_dir=None, overrides: dict | None = None, models=None, log=print) -> pd.DataFrame:
    """Read the run's split and protocol, train the blanked models beside it, write and return
    ``blanked_results``."""
    from cxr_utils import training  # imports Keras: only when models train

    protocol = run_protocol(run_dir, overrides, data_dir)
    model_ids = config.model_ids(models)
    split = chapters.split(run_dir, protocol["data_dir"], n_per_class=protocol["n_per_class"],
                           seed=protocol["seed"], log=log)
    settings = training.TrainingConfig(epochs=protocol["epochs"], batch_size=protocol["batch_size"],
                                       seed=protocol["seed"], progress=sys.stderr.isatty(),
                                       batchnorm_check=False)  # as chapter 8's (shortcut_run)
    train_blanked(run_dir, split, shortcuts.LungBox(), settings, {"weights": protocol["weights"]},
                  protocol["cache_dir"], protocol["image_size"], model_ids, log)
    table = blanked_results(run_dir)
    save_blanked_results(run_dir, table)
    return table
