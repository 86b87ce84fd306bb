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
lungs blanked in every image (``cxr_utils.study.blanked``; chapter 8 reads the results).
"""

from cxr_utils.study.blanked import blanked_results, train_blanked
from cxr_utils.study.cli import command_line, main
from cxr_utils.study.common import STUDY_RECORD, StudyError, duration_text, seed_dir
from cxr_utils.study.seeds import DEFAULT_OUT, run_seeds, seed_complete, seed_list, study_parameters, time_left
from cxr_utils.study.summary import (
    SUMMARY_FILES, SUMMARY_METRICS, metric_summary, plot_seed_curves, stability_table, summarise, summary_markdown,
    summary_tables, verdict_summary,
)

__all__ = [
    "DEFAULT_OUT", "STUDY_RECORD", "SUMMARY_FILES", "SUMMARY_METRICS", "StudyError", "blanked_results",
    "command_line", "duration_text", "main", "metric_summary", "plot_seed_curves", "run_seeds", "seed_complete",
    "seed_dir", "seed_list", "stability_table", "study_parameters", "summarise", "summary_markdown", "summary_tables",
    "time_left", "train_blanked", "verdict_summary",
]
