"""What the study modules share: the error they raise, a study's folder layout (study.json, one
``seed-N`` folder per seed, a seed's evaluation files). Their progress words are ``report.counted`` and
``report.duration_text``; a model's finished folder is ``evaluation.model_complete``. See
``cxr_utils.study``."""

from __future__ import annotations

from pathlib import Path

from cxr_utils.evaluation import EVALUATION_DIR

STUDY_RECORD = "study.json"
SEED_PREFIX = "seed-"
ADOPTED = "adopted"  # study.json: seed -> the notebook-series run it came from (``study adopt``)


class StudyError(RuntimeError):
    """The study cannot go on as asked (another study's folder, bad settings); the message says why
    and what to do."""


# -- a study's folders ----------------------------------------------------------------------------


def seed_dir(study_dir, seed: int) -> Path:
    return Path(study_dir) / f"{SEED_PREFIX}{seed}"


def seed_folders(study_dir: Path, record: dict | None) -> list[tuple[int, Path]]:
    """The study's seed folders: study.json's seeds in its order, then any other seed-N folder."""
    found = {}
    for path in Path(study_dir).glob(f"{SEED_PREFIX}*"):
        number = path.name[len(SEED_PREFIX):]
        if path.is_dir() and number.isdigit():
            found[int(number)] = path
    order = [int(s) for s in (record or {}).get("settings", {}).get("seeds", []) if int(s) in found]
    order += sorted(set(found) - set(order))
    return [(seed, found[seed]) for seed in order]


def evaluation_files(folder: Path) -> list[Path]:
    """The files a seed's evaluation writes: its metrics, probability metrics and verdicts."""
    return [folder / EVALUATION_DIR / name for name in ("metrics.csv", "probability_metrics.csv", "verdicts.csv")]


def evaluated(folder) -> bool:
    """The seed's evaluation and verdicts exist (what ``summarise`` reads)."""
    return all(path.is_file() for path in evaluation_files(Path(folder)))
