"""A finished run's saved models: checking the run folder and loading each model safely.

Before Keras sees a model file, its config is read and any Lambda layer or layer from outside
Keras and this package is refused; then Keras loads it with ``safe_mode=True``, so no code from a
run folder runs. Used by ``cxr_utils.predict`` and ``cxr_utils.external``.
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np

from cxr_utils import command, config
from cxr_utils.atomic import read_json
from cxr_utils.config import REGISTRY

# Modules a model archive may name: Keras' own layers and this package's registered layer.
ALLOWED_MODULES = ("keras", "cxr_utils")
# Layer classes that carry Python code in their configuration: refused whatever safe_mode says.
CODE_LAYERS = ("Lambda", "TFOpLambda", "__lambda__")


class RunFolderError(ValueError):
    """A run folder that cannot be used for scoring; the message names the folder and the fix."""


# --- the run folder --------------------------------------------------------------------------

def _fix_for(results_dir: Path) -> str:
    return (f"point --run at the results folder of a run that saved its models (results/<profile>, "
            f"written by `python -m cxr_utils.run`), or re-run the series with --results-dir {results_dir}")


def check_run_folder(results_dir, ids) -> Path:
    """The run folder, checked to hold ``<model>/model.keras`` for each of ``ids`` (before any
    Keras import, so a wrong folder is named in a second)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise RunFolderError(f"run folder {results_dir} not found; {_fix_for(results_dir)}")
    missing = [model_id for model_id in ids if not (results_dir / model_id / "model.keras").is_file()]
    if missing:
        published = (results_dir / "manifest.csv").is_file() and not any(
            (results_dir / model_id / "model.keras").is_file() for model_id in REGISTRY)
        why = (" (a published copy such as book/executed/results keeps no model weights)" if published else "")
        names = ", ".join(f"{m}/model.keras" for m in missing)
        chapters = ", ".join(f"notebooks/{REGISTRY[m].chapter}.ipynb" for m in missing)
        raise RunFolderError(
            f"run folder {results_dir} has no {names}{why}. Fix: {_fix_for(results_dir)}; or re-run "
            f"{chapters} with results_dir={results_dir}; or choose another model with --model"
        )
    return results_dir


def run_image_size(results_dir, ids=None) -> int | None:
    """The image size the run's models were trained at, from their records (``<model>/run.json``,
    then the run's ``run.json``); None when no record says. ValueError when models disagree."""
    results_dir = Path(results_dir)
    sizes = {}
    for model_id in ids or REGISTRY:
        record = read_json(results_dir / model_id / "run.json") or {}
        size = record.get("settings", {}).get("image_size")
        if size is not None:
            sizes[model_id] = int(size)
    if not sizes:
        size = (read_json(results_dir / "run.json") or {}).get("settings", {}).get("image_size")
        return None if size is None else int(size)
    if len(set(sizes.values())) > 1:
        raise RunFolderError(
            f"the models in {results_dir} were trained at different image sizes ({sizes}); score them "
            "one at a time with --model, or re-run the series with one image_size"
        )
    return next(iter(sizes.values()))


def _archive_config(path: Path) -> tuple[dict, dict]:
    """The configuration and metadata inside a .keras archive, read as JSON (nothing runs)."""
    if not zipfile.is_zipfile(path):
        raise RunFolderError(
            f"{path} is not a Keras model archive (.keras is a zip file); it may be damaged or "
            f"incomplete. Fix: {_fix_for(path.parent.parent)}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            model_config = json.loads(archive.read("config.json"))
            metadata = json.loads(archive.read("metadata.json")) if "metadata.json" in archive.namelist() else {}
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise RunFolderError(
            f"{path} has no readable config.json ({error}). Fix: {_fix_for(path.parent.parent)}") from error
    return model_config, metadata


def _unsafe_entries(node, found=None) -> list[str]:
    """Every place in a model configuration that would import a module outside Keras and this
    package, or that names a layer carrying Python code (Lambda)."""
    found = [] if found is None else found
    if isinstance(node, dict):
        module, class_name = node.get("module"), node.get("class_name")
        if isinstance(module, str) and module.split(".")[0] not in ALLOWED_MODULES:
            found.append(f"{class_name or '?'} from module {module!r}")
        if class_name in CODE_LAYERS:
            found.append(f"a {class_name} layer (Python code in the file)")
        registered = node.get("registered_name")
        if isinstance(registered, str) and ">" in registered and registered.split(">")[0] not in ALLOWED_MODULES:
            found.append(f"custom object {registered!r}")
        for value in node.values():
            _unsafe_entries(value, found)
    elif isinstance(node, list):
        for value in node:
            _unsafe_entries(value, found)
    return found


def _keras_version() -> str:
    import keras

    return keras.__version__


@dataclasses.dataclass
class LoadedModel:
    """One model of a run, loaded once: ``model`` whole, or its frozen ``backbone`` and ``head``."""

    id: str
    name: str
    model: object
    backbone: object = None  # the frozen ResNet50 sub-model, when there is one
    head: object = None
    shares_backbone_with: str | None = None  # an earlier model whose identical backbone pass is reused


def load_model(results_dir, model_id: str):
    """``RESULTS_DIR/<model_id>/model.keras`` loaded with Keras' safe mode, after refusing any
    configuration that names code (a Lambda layer) or a module outside Keras and this package.
    RunFolderError names the file and the fix when it cannot be loaded."""
    import keras

    from cxr_utils import models  # noqa: F401  (registers GrayscaleRows, the one custom layer)

    results_dir = Path(results_dir)
    path = results_dir / model_id / "model.keras"
    model_config, metadata = _archive_config(path)
    unsafe = _unsafe_entries(model_config)
    if unsafe:
        raise RunFolderError(
            f"refused to load {path}: its configuration names {'; '.join(sorted(set(unsafe))[:3])}, which would "
            "run code from the run folder. Models of this project use Keras layers and cxr_utils's own only. "
            f"Fix: {_fix_for(results_dir)}"
        )
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as error:  # Keras raises ValueError, TypeError, KeyError... for an unloadable file
        saved = metadata.get("keras_version") or "an unrecorded version"
        record = read_json(results_dir / model_id / "run.json") or {}
        commit = record.get("git_commit")
        reason = " ".join(str(error).split())[:300]
        at_commit = (f" (or check out its commit {commit[:12]} and install that commit's requirements.txt)"
                     if commit else "")
        raise RunFolderError(
            f"{path} cannot be loaded by this version (saved with Keras {saved}, this is Keras {_keras_version()}): "
            f"{type(error).__name__}: {reason}. The run folder {results_dir} was probably written by an "
            f"incompatible version of cxr_utils or Keras. Fix: re-run the series with this version "
            f"(`python -m cxr_utils.run --results-dir {results_dir}`){at_commit}"
        ) from None


def _same_weights(a, b) -> bool:
    first, second = a.get_weights(), b.get_weights()
    return len(first) == len(second) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(first, second))


def load_models(results_dir, ids=None) -> dict[str, LoadedModel]:
    """Each of ``ids`` (default every model of the registry) loaded once (``load_model``); a
    frozen ResNet50 backbone with the same weights as an earlier model's is marked shared, so
    each image goes through it once."""
    from cxr_utils import models  # imports Keras: only when a model is loaded

    ids = list(ids or REGISTRY)
    check_run_folder(results_dir, ids)
    loaded: dict[str, LoadedModel] = {}
    for model_id in ids:
        model = load_model(results_dir, model_id)
        entry = LoadedModel(model_id, REGISTRY[model_id].paper_name, model)
        backbone = models.frozen_backbone(model)
        if backbone is not None:
            entry.backbone, entry.head = backbone, model.get_layer("head")
            for other in loaded.values():
                if (other.backbone is not None and other.shares_backbone_with is None
                        and other.backbone.input_shape == backbone.input_shape
                        and _same_weights(other.backbone, backbone)):
                    entry.shares_backbone_with = other.id
                    break
        loaded[model_id] = entry
    return loaded


def model_image_size(loaded: dict[str, LoadedModel], results_dir=None) -> int:
    """The input size of the loaded models, checked against the run's records."""
    shapes = {m.id: tuple(m.model.input_shape[1:3]) for m in loaded.values()}
    sizes = {shape[0] for shape in shapes.values() if shape[0] == shape[1] and shape[0] is not None}
    if len(sizes) != 1 or len(set(shapes.values())) != 1:
        raise RunFolderError(f"the models take inputs of different or non-square sizes ({shapes}); score them "
                             "one at a time with --model")
    size = sizes.pop()
    recorded = None if results_dir is None else run_image_size(results_dir, list(loaded))
    if recorded is not None and recorded != size:
        raise RunFolderError(
            f"the run's records in {results_dir} say image_size={recorded}, but its models take {size}x{size} "
            f"inputs; the folder mixes two runs. Fix: {_fix_for(Path(results_dir))}"
        )
    return int(size)


def run_command_parser(prog: str, description: str, exits: str,
                       run_help: str = "results folder of a run (results/<profile>), holding <model>/model.keras"):
    """The parser of a command on a finished run (``cxr_utils.predict``, ``cxr_utils.external``),
    with the arguments they share: --run, --model, --batch-size and --no-progress."""
    parser = command.parser(prog, description + " Not a medical device.", exits)
    parser.add_argument("--run", required=True, metavar="RESULTS_DIR", help=run_help)
    parser.add_argument("--model", action="append", metavar="NAME",
                        help="a model id or the paper's name (resnet50, lstm, resnet50_lstm, ResNet50-LSTM, ...) "
                        "or 'all' (default); repeat for several")
    parser.add_argument("--batch-size", type=int, default=config.PROTOCOL.batch_size, help="images per model call")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser
