"""Execute the notebook series with papermill, under a named profile, and record the run.

    python -m cxr_utils.run --profile sample --data-dir /path/to/COVID-19_Radiography_Dataset
    python -m cxr_utils.run --profile paper            # downloads the data and ImageNet weights
    python -m cxr_utils.run --profile paper -p weights=None -p epochs=5

Each notebook is executed in order into ``RESULTS_DIR/notebooks/``; the first failing cell stops
the series with the notebook and cell named. ``RESULTS_DIR/run.json`` records the profile, the
parameters, package versions, hardware, git commit, a hash of each notebook's code and the wall
time per notebook. With ``--book``, the executed notebooks and the run record are copied into
``book/executed/`` and the Jupyter Book is built from them. Explained in book/reproducibility.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from cxr_utils import MALLOC_ARENAS, command, config, model_card, publish
from cxr_utils.config import PROTOCOL
from cxr_utils.paths import BOOK_CONFIG, NOTEBOOKS_DIR, repository_url
from cxr_utils.series import PROFILES, SeriesError, code_hash, parse_value, profile_parameters, series

# The notebook that runs the whole series in one go (Colab's one click); not a chapter of the book.
RUN_ALL = "00_run_all"


def install_cell_source(config_path: Path = BOOK_CONFIG) -> str:
    """The first code cell of every notebook: on Google Colab, install this project from the
    repository that ``_config.yml`` names (the one place its address is written); everywhere,
    say which accelerator Keras sees. tests/test_notebooks.py keeps the notebooks in step."""
    url = repository_url(config_path)
    return (
        "# On Google Colab, install this project first; then say which accelerator Keras sees.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        "    import subprocess\n"
        "    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"-q\",\n"
        f"                    \"git+{url}.git\"], check=True)\n"
        "from cxr_utils import runtime\n"
        "print(runtime.accelerator_summary())"
    )


def _notebook_parameters(path: Path, parameters: dict) -> dict:
    import papermill

    declared = papermill.inspect_notebook(str(path))
    return {name: value for name, value in parameters.items() if name in declared}


# Parameters that say where things are kept, not what was computed: a run continued with
# ``--only`` from another checkout, or after its folder moved, may differ in them (the chapters
# check that the images they find are the run's: cxr_utils.chapters).
_PLACE_PARAMETERS = ("cache_dir", "drive_folder", "results_dir", "data_dir")


def _continued_record(results_dir: Path, parameters: dict) -> dict | None:
    """The record of the run already in ``results_dir``, to extend when only some notebooks
    run again; None when there is none. A run with other parameters is never mixed in."""
    path = results_dir / "run.json"
    if not path.is_file():
        return None
    previous = json.loads(path.read_text())
    def compared(settings):
        return {k: v for k, v in json.loads(json.dumps(settings, default=str)).items() if k not in _PLACE_PARAMETERS}
    before, now = compared(previous.get("settings", {})), compared(parameters)
    if before != now:
        differing = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        raise SeriesError(
            f"{results_dir} holds a run made with other parameters ({', '.join(differing)} differ), so "
            "its notebooks and these would not belong together: run the whole series (no --only) "
            "or choose another --results-dir"
        )
    return previous


class KernelMemory:
    """The highest resident memory of this process's descendants (a notebook's kernel and what it
    starts), summed, sampled on a thread every ``interval_s`` while the block runs: each notebook's
    host memory, recorded beside its wall time. A peak shorter than the interval can be missed."""

    def __init__(self, interval_s: float = 0.5):
        # Imported here, not in the sampling thread: a missing psutil must stop the run, not
        # leave a thread that died quietly and a peak of 0 MB in the record.
        import psutil

        self._psutil = psutil
        self.interval_s, self.peak_bytes = interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        this = self._psutil.Process()
        while True:
            total = 0
            for child in this.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except self._psutil.Error:  # ended between being listed and being read
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> "KernelMemory":
        self._thread.start()
        return self

    def __exit__(self, *exception) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> int:
        return round(self.peak_bytes / 2**20)


def kernel_environment(one_thread: bool = False) -> dict:
    """The environment ``execute_series`` gives the papermill kernels it starts."""
    from cxr_utils.runtime import ONE_THREAD_ENVIRONMENT  # runtime imports Keras: only when a series runs

    return {
        # The kernel must be this interpreter's, also when the virtual environment is not activated.
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        # Figures must land in the executed notebooks, whatever backend the caller's shell sets.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # TensorFlow's C++ log lines (start-up notes, harmless graph warnings) would land in every
        # executed notebook; Python errors still raise.
        "TF_CPP_MIN_LOG_LEVEL": "3",
        # glibc reads this as the kernel starts, before ipykernel's threads take their own heaps;
        # importing cxr_utils sets the same limit only for threads started after it (see there).
        "MALLOC_ARENA_MAX": str(MALLOC_ARENAS),
        **(ONE_THREAD_ENVIRONMENT if one_thread else {}),
    }


@contextlib.contextmanager
def _environment(values: dict):
    """``os.environ`` with ``values`` set inside the block, as it was after it."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute_series(
    parameters: dict, notebooks=None, progress: bool = True, log=print, one_thread: bool = False
) -> dict:
    """Execute ``notebooks`` (default: the whole ``series()``) in order with papermill; write
    and return the run record. Executing only some notebooks into a folder that holds a run with
    the same parameters extends that run's record (each later pass listed under "continued").
    ``one_thread``: every kernel's TensorFlow on one thread (``runtime.ONE_THREAD_ENVIRONMENT``):
    bit-identical weights on a CPU, without the other cores' help."""
    with _environment(kernel_environment(one_thread)):
        return _execute_series(parameters, notebooks, progress, log, one_thread)


def _execute_series(parameters: dict, notebooks, progress: bool, log, one_thread: bool) -> dict:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from cxr_utils import runtime  # imports Keras: only when a series runs

    results_dir = Path(parameters["results_dir"])
    # Made inside the kernels' environment, so that its hardware names their thread settings.
    record = runtime.run_record(parameters, notebooks={}, profile=parameters.get("profile"), one_thread=one_thread,
                                protocol=config.protocol_record(parameters.get("weights", PROTOCOL.weights),
                                                                parameters.get("image_size", PROTOCOL.image_size),
                                                                parameters.get("seed", PROTOCOL.seed)))
    earlier_s = 0.0
    if notebooks and set(notebooks) != set(series()):
        previous = _continued_record(results_dir, parameters)
        if previous is not None:
            earlier_s = float(previous.get("wall_time_s") or 0.0)
            pass_record = {k: record[k] for k in ("created_utc", "git_commit", "command", "one_thread")}
            previous.setdefault("continued", []).append({**pass_record, "notebooks": list(notebooks)})
            record = previous
    notebooks = list(notebooks or series())
    executed_dir = results_dir / "notebooks"
    executed_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        for index, name in enumerate(notebooks, 1):
            source = NOTEBOOKS_DIR / f"{name}.ipynb"
            if not source.is_file():
                raise SeriesError(f"notebook {source} is missing; restore it from git")
            log(f"[{index}/{len(notebooks)}] {name} ...")
            notebook_start = time.perf_counter()
            entry = {"code_sha256": code_hash(source), "status": "running"}
            record["notebooks"][name] = entry
            memory = KernelMemory()
            try:
                with memory:
                    papermill.execute_notebook(
                        str(source),
                        str(executed_dir / f"{name}.ipynb"),
                        parameters=_notebook_parameters(source, parameters),
                        kernel_name="python3",
                        cwd=str(NOTEBOOKS_DIR),
                        progress_bar=progress,
                    )
            except PapermillExecutionError as error:
                entry.update(status="failed", wall_time_s=round(time.perf_counter() - notebook_start, 1),
                             peak_memory_mb=memory.peak_mb)
                raise SeriesError(
                    f"{name}.ipynb failed in cell {error.cell_index} (execution count "
                    f"{error.exec_count}): {error.ename}: {error.evalue}. The executed notebook "
                    f"with the traceback is {executed_dir / f'{name}.ipynb'}"
                ) from None
            entry.update(status="ok", wall_time_s=round(time.perf_counter() - notebook_start, 1),
                         peak_memory_mb=memory.peak_mb)
            log(f"    done in {entry['wall_time_s']:.0f} s, peak memory {memory.peak_mb:,} MB")
    finally:
        record["wall_time_s"] = round(earlier_s + time.perf_counter() - start, 1)
        runtime.write_json(record, results_dir / "run.json")
    if record["notebooks"].get("07_comparison", {}).get("status") == "ok":
        # The run holds the comparison: the model card, from the run's files (run.json included).
        try:
            log(f"model card: {model_card.write(results_dir)}")
        except (OSError, ValueError) as error:
            raise SeriesError(
                f"the notebooks ran, but the model card could not be written: {error}. Write it with "
                f"`python -m cxr_utils.model_card {results_dir}` once the cause is fixed"
            ) from None
    return record




def main(argv: list[str] | None = None) -> int:
    parser = command.parser(
        "cxr_utils.run", "Execute the notebook series with papermill, each notebook in a kernel of its own, into one "
        "results folder with its run record (run.json).",
        "0 every notebook ran; 1 a notebook failed or the book could not be published (the run record says "
        "which notebook); 2 bad arguments, nothing ran.",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="paper",
                        help="the protocol's settings: paper (the paper's) or sample (a small, fast run); default paper")
    parser.add_argument("--data-dir", help="dataset folder (default: download from Kaggle)")
    parser.add_argument("--results-dir", help="where results go (default: results/<profile>)")
    parser.add_argument(
        "-p", "--parameter", action="append", default=[], metavar="NAME=VALUE",
        help="override a profile parameter, e.g. -p epochs=5 -p weights=None",
    )
    parser.add_argument("--only", nargs="+", choices=series(), help="execute only these notebooks")
    parser.add_argument("--book", action="store_true", help="publish the run into the book and build it")
    parser.add_argument("--one-thread", action="store_true",
                        help="TensorFlow on one thread in every notebook: the same weights on every run on a CPU, "
                        "without the other cores' help (see book/reproducibility)")
    args = parser.parse_args(argv)

    try:
        overrides = {}
        for item in args.parameter:
            name, sep, value = item.partition("=")
            if not sep:
                raise config.ParameterError(f"-p {item!r}: write NAME=VALUE, e.g. -p epochs=5")
            overrides[name.strip()] = parse_value(value.strip())
        parameters = profile_parameters(args.profile, args.data_dir, args.results_dir, overrides)
    except (config.ParameterError, ValueError) as error:  # a usage error: nothing has run
        return command.fail(error, command.EXIT_USAGE)
    try:
        record = execute_series(parameters, notebooks=args.only, one_thread=args.one_thread)
        print(f"executed notebooks and run.json in {parameters['results_dir']} "
              f"({record['wall_time_s']:.0f} s)")
        if args.book:
            publish.publish_to_book(Path(parameters["results_dir"]))
            html = publish.build_book()
            print(f"book: {html / 'index.html'}")
    except (SeriesError, ValueError) as error:
        return command.fail(error, command.EXIT_FAILED)
    return command.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
