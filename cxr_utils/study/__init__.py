"""Several seeds of the whole comparison: how much of each number and verdict is one seed's luck.

    python -m cxr_utils.study seeds --seeds 5 [--profile paper] [--data-dir DIR]
        [--out results/study/seeds] [-p NAME=VALUE ...] [--mixed-precision auto|on|off|bfloat16]
    python -m cxr_utils.study seeds --seed-list 42,7,1000 --data-dir DIR
    python -m cxr_utils.study summarise results/study/seeds
    python -m cxr_utils.study publish --seeds results/study/seeds --remedy results/study/remedy
    python -m cxr_utils.study adopt book/executed/results [--out book/studies/seeds]
    python -m cxr_utils.study blanked --run RESULTS_DIR [-p epochs=N] [--models lstm ...]

``seeds`` runs the first N seeds of 42, 43, 44, ... (the protocol's seed first; ``--seed-list``
names them instead). A seed sets the balanced sample, the train/val/test split and the initial
weights. The parameters are the profile's (``series.PROFILES``, "paper" by default: the paper's
protocol, ImageNet weights) with ``-p`` overrides, as ``python -m cxr_utils.run`` takes them.
Each seed gets a folder laid out like a notebook run's results folder::

    OUT/study.json            settings, versions, hardware, wall time of every model and session
    OUT/manifest.csv          the dataset listing, indexed once and copied into each seed folder
    OUT/seed-42/              sample.csv, split.csv, <model>/ (no weights kept: save_model=False),
                              evaluation/ (metrics, McNemar, verdicts.csv) and report.md
    OUT/summary_metrics.csv   per model and metric: mean, std, min, max over the seeds
    OUT/summary_verdicts.csv  per claim: how many seeds give each outcome
    OUT/summary.md            both as Markdown tables, and how steady each seed's training was

The command resumes: a model whose folder is complete (metrics.json) is not trained again, a
seed whose verdicts are newer than its models is skipped, and a run cut short (Ctrl-C, a lost
machine) goes on where it stopped when the same command runs again. It refuses a folder made
with other parameters or another dtype policy (compared with study.json). After each model it
prints the seed, the model, its wall time and the time left (the mean time of each model so far,
times the models left). ``--mixed-precision``: "auto" (mixed float16 on a GPU, float32 on a CPU),
"on", "off" or "bfloat16" (``runtime.use_mixed_precision``); a mixed policy keeps its backbone
features in a cache folder of its own. The study calls only the package's Keras 3 code (nothing
TensorFlow-specific), so it runs under KERAS_BACKEND=jax or torch as under TensorFlow.

``publish`` copies a seed study and the same seeds run with this project's BatchNorm remedy
(``-p recompute_batchnorm_images=320``) into ``book/studies/``, where the report renders them
(``cxr_utils.study.publish``).

``adopt`` makes a notebook-series run of the study's protocol the study's seed (its seed 42 for
the book's run), instead of a second training of that seed: one run behind every seed-42 number
(``cxr_utils.study.adopt``).

``blanked`` trains the models of a finished run again, on its split with its protocol, with the
lungs blanked in every image (the command: ``study.blanked``; the training: ``cxr_utils.blanked``, which chapter
8 calls; chapter 8 reads the results).
"""

import importlib

# Where each public name lives. Imported on use, not here: ``python -m cxr_utils.study summarise``
# need not import what ``seeds`` trains with, nor a test of one submodule all the others.
_HOMES = {
    "command_line": "cli", "main": "cli",
    "STUDY_RECORD": "common", "StudyError": "common", "seed_dir": "common",
    "DEFAULT_OUT": "seeds", "run_seeds": "seeds", "seed_complete": "seeds", "seed_list": "seeds",
    "study_parameters": "seeds", "time_left": "seeds",
    "SUMMARY_FILES": "summary", "SUMMARY_METRICS": "summary", "metric_summary": "summary",
    "plot_seed_curves": "summary", "stability_table": "summary", "summarise": "summary",
    "summary_markdown": "summary", "summary_tables": "summary", "verdict_summary": "summary",
}
_SUBMODULES = ("adopt", "cli", "common", "publish", "seeds", "summary")

__all__ = sorted(_HOMES)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
