"""A run as its model card reads it: the run's files, read once (``CardRun``), and the tables the
card's sections show (metrics with intervals, confusion counts, McNemar's tests).
``cxr_utils.model_card_sections`` computes each section from them and renders its template;
``cxr_utils.model_card`` puts the card together. See ``cxr_utils.model_card``.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pandas as pd

from cxr_utils import config, data, evaluation, external, glance, predict
from cxr_utils.atomic import read_json
from cxr_utils.config import PROTOCOL, REGISTRY


class ModelCardError(ValueError):
    """The folder holds no trained model's results: there is nothing to describe."""


# --- reading the run -------------------------------------------------------------------------

def optional_csv(path: Path) -> pd.DataFrame | None:
    """A CSV file of the run, or None when it is missing or unreadable."""
    try:
        return pd.read_csv(path) if Path(path).is_file() else None
    except (ValueError, pd.errors.ParserError):
        return None


def _table(path: Path) -> pd.DataFrame | None:
    """A manifest-like CSV with its column types, or None."""
    try:
        return data.read_manifest(path) if Path(path).is_file() else None
    except data.DatasetError:
        return None


class CardRun:
    """Everything the card reads, read once."""

    def __init__(self, results_dir):
        self.dir = Path(results_dir)
        if not self.dir.is_dir():
            raise ModelCardError(f"results folder {self.dir} not found")
        self.record = read_json(self.dir / "run.json") or {}
        self.settings = self.record.get("settings", {})
        self.models = {}
        for model_id, spec in REGISTRY.items():
            metrics_json = read_json(self.dir / model_id / "metrics.json")
            if metrics_json is None:
                continue
            self.models[model_id] = {"spec": spec, "metrics": metrics_json,
                                     "record": read_json(self.dir / model_id / "run.json") or {}}
        if not self.models:
            raise ModelCardError(
                f"{self.dir} holds no trained model (<model>/metrics.json); run the series "
                "(python -m cxr_utils.run) with this results folder first"
            )
        self.names = {model_id: entry["spec"].paper_name for model_id, entry in self.models.items()}
        self.manifest = _table(self.dir / "manifest.csv")
        self.split = _table(self.dir / "split.csv")
        self.sample_settings = read_json(self.dir / "sample.settings.json") or {}
        self.computed = []  # models whose AUC and Brier score this card computed from predictions.csv
        self.test = self._test_metrics()
        self.test_confusions = _confusions(self.dir / evaluation.EVALUATION_DIR, self.names.values())
        self.test_mcnemar = optional_csv(self.dir / evaluation.EVALUATION_DIR / "mcnemar.csv")
        self.extended = self._evaluated(self.dir / Path(evaluation.EXTENDED_DIR))
        self.external = {name: {**self._evaluated(external.external_dir(self.dir, name) / evaluation.EVALUATION_DIR),
                                "record": read_json(external.external_dir(self.dir, name) / external.RECORD) or {}}
                         for name in external.evaluated_names(self.dir)}

    def model_setting(self, model_id, *keys, default=None):
        value = self.models[model_id]["record"].get("settings", {})
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return default
            value = value[key]
        return value

    def first_recorded(self, key: str, default):
        """``key`` (versions, hardware, git_commit) of the run record, else of the first model
        record that has it: each model's training records them too, and a run whose chapters ran
        without ``python -m cxr_utils.run`` has no run record."""
        return self.record.get(key) or next(
            (entry["record"][key] for entry in self.models.values() if entry["record"].get(key)), default)

    @property
    def training(self) -> dict:
        """The training settings the first model recorded (epochs, batch size, learning rate, ...)."""
        return self.model_setting(next(iter(self.models)), "training", default={}) or {}

    @property
    def n_per_class(self):
        """Images per class in the run's sample, or None when not recorded."""
        return self.settings.get("n_per_class", self.sample_settings.get("n_per_class"))

    @functools.cached_property
    def duplicates(self) -> dict | None:
        """``data.duplicate_report`` of the run's copy of the database; None without duplicate groups."""
        if self.manifest is None or "duplicate_group" not in self.manifest:
            return None
        return data.duplicate_report(self.manifest)

    @property
    def seed(self) -> int:
        seeds = [self.model_setting(m, "training", "seed") for m in self.models]
        seeds = [s for s in [self.settings.get("seed"), *seeds] if s is not None]
        return int(seeds[0]) if seeds else PROTOCOL.seed

    @property
    def image_size(self):
        sizes = {self.model_setting(m, "image_size") for m in self.models} - {None}
        if len(sizes) == 1:
            return int(sizes.pop())
        return self.settings.get("image_size")

    @property
    def weights(self):
        """The ResNet50 models' weights setting (None: from scratch), or "unrecorded"."""
        values = {str(self.model_setting(m, "model_options", "weights", default=PROTOCOL.weights))
                  for m, entry in self.models.items() if entry["spec"].has_backbone and entry["record"]}
        if len(values) == 1:
            value = values.pop()
            return None if value == "None" else value
        return "unrecorded" if not values else "mixed"

    def _test_metrics(self) -> pd.DataFrame:
        recorded = predict.recorded_test_metrics(self.dir, list(self.models))
        have = set(zip(recorded["model"], recorded["metric"]))
        missing = [m for m in self.models if (self.names[m], "auc") not in have]
        parts = [recorded]
        for model_id in missing:  # an older run: AUC and Brier from its predictions
            table = optional_csv(self.dir / model_id / "predictions.csv")
            if table is None or not {"label", "probability"} <= set(table.columns):
                continue
            computed = evaluation.probability_table({self.names[model_id]: table}, seed=self.seed)
            parts.append(computed.assign(source=f"{model_id}/predictions.csv"))
            self.computed.append(model_id)
        return pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else recorded

    def _evaluated(self, folder: Path) -> dict:
        metrics_long = optional_csv(folder / "metrics.csv")
        if metrics_long is None:
            return {}
        probability = optional_csv(folder / "probability_metrics.csv")
        both = pd.concat([metrics_long, probability], ignore_index=True) if probability is not None else metrics_long
        return {"metrics": both, "mcnemar": optional_csv(folder / "mcnemar.csv"),
                "confusions": _confusions(folder, dict.fromkeys(metrics_long["model"])),
                "has_probability": probability is not None}


def _confusions(folder: Path, names) -> dict[str, pd.DataFrame]:
    """The confusion matrices of ``names`` (models) saved in ``folder``, by model, for those it holds."""
    confusions = {}
    for name in names:
        table = optional_csv(folder / f"confusion_{name}.csv")
        if table is not None:
            confusions[name] = table.set_index(table.columns[0])
    return confusions


# --- the tables ------------------------------------------------------------------------------

def table_markdown(table: pd.DataFrame, index: bool = False) -> str:
    """A table as Markdown; "(none recorded)" for an empty one."""
    return table.to_markdown(index=index) if len(table) else "(none recorded)"


def metric_row(long: pd.DataFrame, model: str, metric: str):
    """The row of ``model`` and ``metric`` in a long metrics table (value, low, high, ...), or None."""
    rows = long[(long["model"] == model) & (long["metric"] == metric)]
    return None if rows.empty else rows.iloc[0]


def number_or_na(value, digits: int = 3) -> str:
    """A figure to ``digits`` decimals; "n/a" for a missing one."""
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def builder_defaults(spec: config.ModelSpec) -> dict[str, str]:
    """The builder's keyword defaults as its source writes them (without importing it, so Keras
    is not loaded), module constants resolved; ``input_shape`` left out (the run's image size)."""
    builder = spec.builder
    if not isinstance(builder, str):
        return {name: repr(p.default) for name, p in inspect.signature(builder).parameters.items()
                if p.default is not inspect.Parameter.empty and name != "input_shape"}
    module, _, name = builder.partition(":")
    try:
        origin = importlib.util.find_spec(module).origin
        tree = ast.parse(Path(origin).read_text())
    except (AttributeError, ImportError, OSError, SyntaxError, ValueError):
        return {}
    constants = {target.id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name), None)
    if function is None:
        return {}
    arguments = function.args.args[len(function.args.args) - len(function.args.defaults):]
    pairs = list(zip(arguments, function.args.defaults))
    pairs += [(a, d) for a, d in zip(function.args.kwonlyargs, function.args.kw_defaults) if d is not None]
    defaults = {}
    for argument, default in pairs:
        if argument.arg == "input_shape":
            continue
        if isinstance(default, ast.Name) and default.id in constants:
            default = constants[default.id]
        defaults[argument.arg] = ast.unparse(default)
    return defaults


def shown_options(options: dict) -> str:
    """The model options a run set, as the card shows them (weights without the machine's folders)."""
    if not options:
        return "none (builder defaults)"
    return ", ".join(f"{k}={shown_weights(v) if k == 'weights' else repr(v)}" for k, v in options.items())


def shown_weights(value) -> str:
    """A weights setting without the machine's folders: a file by its name."""
    if value is None or config.weights_kind(value) != "file":
        return repr(value)
    return repr(Path(str(value)).name)


def _interval_cell(row) -> str:
    return "not recorded" if row is None else predict.interval_text(row["value"], row["low"], row["high"])


def metrics_table(long: pd.DataFrame, names: list[str]) -> str:
    """Each of ``names`` (models) with its metrics and their 95% intervals, as a Markdown table."""
    metrics = [m for m in (*config.METRICS, "auc", "brier") if m in set(long["metric"])]
    rows = []
    for name in names:
        if not (long["model"] == name).any():
            continue
        n = long.loc[long["model"] == name, "n"].max() if "n" in long else np.nan
        rows.append({"model": name, **{m: _interval_cell(metric_row(long, name, m)) for m in metrics},
                     "images": "" if pd.isna(n) else int(n)})
    return table_markdown(pd.DataFrame(rows))


def confusion_table(confusions: dict) -> str:
    """Each model's confusion counts (TP, FN, FP, TN; COVID positive) as a Markdown table."""
    rows = []
    for name, table in confusions.items():
        covid, normal = config.CLASS_NAMES[1], config.CLASS_NAMES[0]
        rows.append({"model": name, "TP": int(table.loc[covid, covid]), "FN": int(table.loc[covid, normal]),
                     "FP": int(table.loc[normal, covid]), "TN": int(table.loc[normal, normal])})
    return table_markdown(pd.DataFrame(rows))


def mcnemar_table(mcnemar: pd.DataFrame | None) -> str | None:
    """McNemar's tests between the models as a Markdown table (p-values as every page shows them),
    or None when there are none."""
    if mcnemar is None or mcnemar.empty:
        return None
    shown = mcnemar.assign(p_value=[glance.p_value(p) for p in mcnemar["p_value"]])
    # Cells as given: pandas alone would read "1.1e-03" back as a number and print 0.0011.
    return glance.markdown_table(list(shown.columns), shown.to_numpy().tolist(),
                                 ["r" if pd.api.types.is_numeric_dtype(mcnemar[c]) else "l" for c in shown.columns]
                                 ).rstrip("\n")  # the card's other tables end without one


def class_counts(confusions: dict) -> tuple[int, int] | None:
    """(COVID, Normal) images of a test set, from any one model's confusion matrix; None without one."""
    if not confusions:
        return None
    table = next(iter(confusions.values()))
    covid, normal = config.CLASS_NAMES[1], config.CLASS_NAMES[0]
    return int(table.loc[covid].sum()), int(table.loc[normal].sum())
