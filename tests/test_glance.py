"""What a reader sees first (cxr_utils.glance and cxr_utils.run_pages: results at a glance, compact
verdicts, readable tables, how to reproduce the run), written from a run's files; and the published copy of a run
(cxr_utils.publish), which names no folder of the machine that ran and carries no log lines."""

import json
import re
import shutil
import struct
import zlib
from pathlib import Path

import pandas as pd
import pytest

from cxr_utils import blanked, claims, glance, paths, portable, publish, report, run, run_pages

# -- formatting -----------------------------------------------------------------------------------


def test_numbers_intervals_and_p_values_are_formatted_for_reading():
    assert glance.number(0.83) == "0.83" and glance.number(0.5702, 3) == "0.570"
    assert glance.number(float("nan")) == glance.MISSING and glance.number(None) == glance.MISSING
    assert glance.interval(0.83, 0.7445199523239887, 0.8910643388594006) == "0.83 [0.74, 0.89]"
    assert glance.p_value(0.08715855330228806) == "0.087"
    assert glance.p_value(7.14727124045328e-39) == "7.1e-39"
    assert glance.p_value(5.9476122260093696e-05) == "5.9e-05"
    assert glance.p_value(0.0010650196345523) == "1.1e-03"  # below 0.01: no figure with four decimals
    table = glance.markdown_table(["a", "b"], [["x|y", 1]], ["l", "r"])
    assert table == "| a    |   b |\n|:-----|----:|\n| x\\|y |   1 |\n"  # pandas' to_markdown, columns aligned


def _verdicts(weights_scratch: bool) -> pd.DataFrame:
    reason = "the paper's accuracy lies above this run's 95% interval."
    rows = [{"claim": "1", "text": "ResNet50-LSTM reaches 95% accuracy", "paper": "0.95",
             "ours": "0.73 [0.64, 0.81]", "verdict": claims.CONTRADICTED, "reason": reason},
            {"claim": "2a", "text": "ResNet50-LSTM beats ResNet50 (this row: vs ResNet50)", "paper": "0.95 vs 0.93",
             "ours": "0.73 vs 0.83", "verdict": claims.INCONCLUSIVE, "reason": "p = 0.087: chance could give it."}]
    verdicts = pd.DataFrame(rows)
    if weights_scratch:
        verdicts["reason"] = [f"{claims.SETTING_NOTE} Taken alone, its numbers would indicate *{v}*: {r}"
                              for v, r in zip(verdicts["verdict"], verdicts["reason"])]
        verdicts["verdict"] = claims.NOT_PAPER_SETTING
    return verdicts


def test_verdicts_are_a_compact_table_with_the_reasons_below():
    text = glance.verdicts_markdown(_verdicts(weights_scratch=True))
    table, _, reasons = text.partition("Why:")
    header = re.sub(" +", " ", table.splitlines()[0])
    assert header == "| claim | verdict | this run | the paper |"
    assert "reason" not in header and "would indicate" not in table  # the long reasons are below
    assert "**not tested in the paper's setting** (its numbers alone: *contradicted*)" in table
    assert "(its numbers alone: *inconclusive*)" in table
    assert "- **Claim 1**: Setting differs from the paper" in reasons
    assert "- **Claim 2a**: " in reasons and reasons.rstrip().endswith(report.DISCLAIMER)
    assert "**contradicted**" in glance.verdicts_markdown(_verdicts(weights_scratch=False))


# -- results at a glance, from a run's files -------------------------------------------------------


def _fake_results(folder: Path, weights=None, hybrid_accuracy=0.73) -> Path:
    """The files glance_markdown reads: run.json, the metrics of both test sets, the verdicts."""
    (folder / "evaluation").mkdir(parents=True)
    (folder / "extended" / "evaluation").mkdir(parents=True)
    settings = {"n_per_class": 500, "epochs": 15, "batch_size": 32, "seed": 42, "weights": weights,
                "profile": "paper"}
    (folder / "run.json").write_text(json.dumps({"settings": settings}))
    for path, n, shift in ((folder / "evaluation", 100, 0.0), (folder / "extended" / "evaluation", 983, 0.02)):
        rows = [{"model": model, "metric": "accuracy", "value": value + shift, "low": value + shift - 0.1,
                 "high": value + shift + 0.1, "n": n}
                for model, value in (("ResNet50", 0.83), ("LSTM", 0.61), ("ResNet50-LSTM", hybrid_accuracy))]
        pd.DataFrame(rows).to_csv(path / "metrics.csv", index=False)
    verdicts = _verdicts(weights_scratch=weights is None)
    verdicts.to_csv(folder / "evaluation" / "verdicts.csv", index=False)
    verdicts.to_csv(folder / "evaluation" / "verdicts_extended.csv", index=False)
    return folder


def test_results_at_a_glance_are_written_from_the_run(tmp_path):
    text = re.sub(" +", " ", run_pages.glance_markdown(_fake_results(tmp_path / "a")))  # table cells unpadded
    assert "500 + 500 images" in text and "seed 42" in text and "**trained from scratch**" in text
    # Each model's accuracy beside the paper's, with intervals on both test sets.
    assert "| ResNet50-LSTM | 0.95 | 0.73 [0.63, 0.83] | 0.75 [0.65, 0.85] |" in text
    assert "test set (n=100)" in text and "extended test set (n=983)" in text
    # The claims, the verdicts on both test sets, and what the verdicts mean.
    assert "**1** ResNet50-LSTM reaches 95% accuracy" in text
    assert text.count("(its numbers alone: *contradicted*)") == 2
    explained = {line.partition(": ")[0]: line for line in text.splitlines() if line.startswith("- *")}
    for outcome, meaning in ((claims.NOT_PAPER_SETTING, "cannot test a claim about the paper's ImageNet"),
                             (claims.CONTRADICTED, "numbers disagree with the claim"),
                             (claims.INCONCLUSIVE, "too wide to say either")):
        assert meaning in explained[f"- *{outcome}*"]
    assert f"*{claims.SUPPORTED}*:" not in text  # only the outcomes that occur are explained
    # No number is typed: another run's files give another page.
    other = re.sub(" +", " ", run_pages.glance_markdown(_fake_results(tmp_path / "b", weights="imagenet", hybrid_accuracy=0.91)))
    assert "| ResNet50-LSTM | 0.95 | 0.91 [0.81, 1.01] | 0.93 [0.83, 1.03] |" in other
    assert "ResNet50 with ImageNet weights, as in the paper." in other and "from scratch" not in other
    assert "**contradicted**" in other


def test_results_at_a_glance_say_what_is_missing(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"settings": {"weights": None}}))
    assert "notebook 06 did not run" in run_pages.glance_markdown(tmp_path)


def test_blanked_models_trained_beside_the_run_are_counted_apart(tmp_path):
    def chapter_8_took(seconds):
        (tmp_path / "run.json").write_text(json.dumps({"notebooks": {"08_shortcuts": {"wall_time_s": seconds}}}))

    chapter_8_took(17.0)
    assert blanked.trained_beside(tmp_path) is None  # none trained
    folder = tmp_path / blanked.BLANKED_DIR
    folder.mkdir(parents=True)
    (folder / blanked.RECORD).write_text(json.dumps({"runs": {"lstm": {"wall_time_s": 300.0},
                                                              "resnet50": {"wall_time_s": 4000.0}}}))
    assert blanked.trained_beside(tmp_path) == 4300.0
    chapter_8_took(4400.0)  # chapter 8 trained them itself
    assert blanked.trained_beside(tmp_path) is None


def test_reproduce_names_the_command_commit_seed_and_time_of_the_run():
    record = {"settings": {**run.PROFILES["paper"].parameters(), "weights": None, "data_dir": "DATA_DIR", "profile": "paper"},
              "git_commit": "abc123", "wall_time_s": 4778.6,
              "hardware": {"cpu": "Test CPU", "cpu_count": 2, "accelerator": "CPU only"},
              "notebooks": {"03_resnet50": {"wall_time_s": 2568.9}, "04_lstm": {"wall_time_s": 43.5},
                            "05_resnet50_lstm": {"wall_time_s": 2070.4}}}
    text = run_pages.reproduce_markdown(record)
    assert "make run DATA_DIR=/path/to/COVID-19_Radiography_Dataset WEIGHTS=None\n" in text
    assert "git checkout abc123" in text and "(seed 42)" in text
    assert "took 80 minutes in all, most of it in 03_resnet50 (43 minutes) and 05_resnet50_lstm (35 minutes)" in text
    assert "Test CPU, CPU only (2 cores)" in text and "beside the run" not in text
    assert "(`python -m cxr_utils.study blanked`, 2.0 hours more, not in that figure)" in run_pages.reproduce_markdown(
        record, beside_s=7200)
    record["settings"].update(epochs=5, data_dir=None, weights="imagenet")
    text = run_pages.reproduce_markdown(record)
    assert "python -m cxr_utils.run --profile paper -p epochs=5 --book" in text and "DATA_DIR=" not in text
    record["one_thread"] = True  # no make target for it: the run command, with the option
    text = run_pages.reproduce_markdown(record)
    assert "python -m cxr_utils.run --profile paper -p epochs=5 --one-thread --book" in text
    assert "TensorFlow on one thread" in text


# -- the report's tables from the committed run ---------------------------------------------------


def test_report_tables_are_readable():
    results = publish.BOOK_EXECUTED_DIR / "results"
    if not (results / "evaluation" / "metrics.csv").is_file():
        pytest.skip("no run published in book/executed/ yet")
    text = run_pages.tables_markdown(results)
    for title in ("Table 2", "Tables 3-5", "Table 6", "Table 7", "Paired comparisons"):
        assert f"**{title}" in text, title
    assert not re.search(r"^\|\s*(0\s*)?\|", text, re.MULTILINE)  # no index column (blank, or 0, 1, ...)
    assert "nan" not in text
    metrics = pd.read_csv(results / "evaluation" / "metrics.csv")
    row = metrics[(metrics["model"] == "ResNet50-LSTM") & (metrics["metric"] == "accuracy")].iloc[0]
    assert f"0.95 / {glance.interval(row['value'], row['low'], row['high'])}" in text
    for p in pd.read_csv(results / "evaluation" / "mcnemar.csv")["p_value"]:
        assert f"p = {glance.p_value(p)}" in text
    # Numbers are rounded: no figure with more than three decimals.
    assert not re.search(r"\d\.\d{4,}", text)


# -- the published copy: portable, without log lines ----------------------------------------------

def _png_text_chunk(keyword: str, text: str) -> bytes:
    payload = keyword.encode("latin-1") + b"\0" + text.encode("latin-1")
    return struct.pack(">I", len(payload)) + b"tEXt" + payload + struct.pack(">I", zlib.crc32(b"tEXt" + payload))


def _plant_machine_paths(results: Path, data_dir: Path) -> dict:
    """Make a copy of a published run look as ``python -m cxr_utils.run`` leaves it on a machine:
    absolute folders in the run record, the notebooks' parameters and papermill record, stdout
    lines, image paths and a figure's metadata; stderr log lines in every notebook."""
    record = json.loads((results / "run.json").read_text())
    record["settings"].update(data_dir=str(data_dir), results_dir=str(results),
                              cache_dir=str(results.parent / ".cache" / "images"))
    record["command"] = f"run.py --profile paper -p weights=None --data-dir {data_dir} --results-dir {results}"
    record.pop("placeholders", None)
    (results / "run.json").write_text(json.dumps(record, indent=2))
    model_record = json.loads((results / "lstm" / "run.json").read_text())
    model_record["command"] = f"ipykernel_launcher.py -f {results.parent / 'tmpkernel.json'}"
    (results / "lstm" / "run.json").write_text(json.dumps(model_record, indent=2))
    for path in sorted((results / "notebooks").glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        notebook["metadata"]["papermill"] = {
            "input_path": str(run.NOTEBOOKS_DIR / path.name), "output_path": str(path),
            "parameters": {name: record["settings"][name] for name in ("data_dir", "results_dir", "cache_dir")}}
        for cell in notebook["cells"]:
            if "injected-parameters" in cell["metadata"].get("tags", []):
                cell["source"] = [f'{name} = "{record["settings"][name]}"\n'
                                  for name in ("data_dir", "results_dir", "cache_dir")]
            if cell["cell_type"] == "code":
                cell.setdefault("outputs", []).extend([
                    {"output_type": "stream", "name": "stderr",
                     "text": [f"{shutil.which('python') or '/usr/lib/python3'}: UserWarning: something\n"]},
                    {"output_type": "stream", "name": "stdout", "text": [f" Normal: {data_dir}/Normal/images\n"]}])
                break
        path.write_text(json.dumps(notebook, indent=1))
    for table in sorted(results.rglob("*.csv")):
        frame = pd.read_csv(table, dtype=str, keep_default_na=False)
        if "path" in frame:
            frame["path"] = [str(data_dir / p) for p in frame["path"]]
            frame.to_csv(table, index=False)
    figure = sorted((results / "figures").glob("*.png"))[0]
    data = figure.read_bytes()
    end_of_header = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    figure.write_bytes(data[:end_of_header] + _png_text_chunk("Source", f"{data_dir}/figure.py")
                       + data[end_of_header:])
    return record


@pytest.fixture(scope="module")
def portable_run(tmp_path_factory):
    """The committed run, published again (so that it names no folder of the machine that made it,
    also before book/executed/ is re-published with this code)."""
    if not (publish.BOOK_EXECUTED_DIR / "run.json").is_file():
        pytest.skip("no run published in book/executed/ yet")
    scratch = tmp_path_factory.mktemp("portable-run")
    results = portable.results_of_published(publish.BOOK_EXECUTED_DIR, scratch / "results")
    return publish.publish_to_book(results, scratch / "executed")


@pytest.fixture
def planted_run(portable_run, tmp_path):
    machine = tmp_path / "machine"
    results = portable.results_of_published(portable_run, machine / "results" / "paper")
    record = _plant_machine_paths(results, machine / "data" / "covid19-radiography-224")
    return machine, results, record


def test_published_copy_names_no_folder_of_the_machine(planted_run, tmp_path):
    machine, results, record = planted_run
    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    published = publish.publish_to_book(results, tmp_path / "book" / "executed")

    # No file that ships names a folder of the machine: neither the test's nor this computer's.
    folders = portable.machine_folders(record)
    assert str(machine) in folders or any(f.startswith(str(machine)) for f in folders)
    assert portable.machine_paths(published, folders) == []
    for path in published.rglob("*"):
        if path.is_file() and path.suffix not in (".png", ".npz"):  # pictures; Grad-CAM cells (names only)
            text = path.read_text()
            assert str(machine) not in text and str(paths.REPO_ROOT) not in text, path
    # The run record keeps what matters, its folders as placeholders saying what they stand for.
    shipped = json.loads((published / "run.json").read_text())
    for key in ("versions", "hardware", "git_commit", "created_utc", "wall_time_s", "notebooks"):
        assert shipped[key] == record[key], key
    assert {k: shipped["settings"][k] for k in ("data_dir", "results_dir", "cache_dir")} == {
        "data_dir": "DATA_DIR", "results_dir": "RESULTS_DIR", "cache_dir": "CACHE_DIR"}
    assert shipped["settings"]["seed"] == record["settings"]["seed"]
    assert shipped["placeholders"]["DATA_DIR"] == "…/covid19-radiography-224"
    assert "--data-dir DATA_DIR --results-dir RESULTS_DIR" in shipped["command"]
    assert "`DATA_DIR` (…/covid19-radiography-224)" in (published / "run_record.md").read_text()
    # Notebooks: parameters and papermill's record as placeholders, stdout kept, pictures untouched.
    for path in sorted(published.glob("*.ipynb")):
        notebook = json.loads(path.read_text())
        papermill = notebook["metadata"]["papermill"]
        assert papermill["input_path"] == f"REPO_DIR/notebooks/{path.name}"
        assert papermill["output_path"] == f"RESULTS_DIR/notebooks/{path.name}"
        assert papermill["parameters"]["data_dir"] == "DATA_DIR"
        injected = next(c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", []))
        assert "remove-cell" in injected["metadata"]["tags"] and 'data_dir = "DATA_DIR"\n' in injected["source"]
        original = json.loads((results / "notebooks" / path.name).read_text())
        pictures = [o["data"]["image/png"] for c in original["cells"] for o in c.get("outputs", [])
                    if "image/png" in o.get("data", {})]
        assert pictures == [o["data"]["image/png"] for c in notebook["cells"] for o in c.get("outputs", [])
                            if "image/png" in o.get("data", {})]
    # Image paths relative to the dataset; a figure's metadata naming a folder is dropped, the picture kept.
    assert pd.read_csv(published / "results" / "split.csv")["path"].str.match(r"(COVID|Normal)/").all()
    figure = sorted((published / "figures").glob("*.png"))[0]
    assert b"Source" not in figure.read_bytes() and b"Matplotlib" in figure.read_bytes()
    from PIL import Image

    with Image.open(figure) as image:
        image.load()
    # The run's own folder is left as it was.
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


def test_published_notebooks_carry_no_log_lines(planted_run, tmp_path):
    _, results, _ = planted_run
    published = publish.publish_to_book(results, tmp_path / "executed")
    for path in sorted(published.glob("*.ipynb")):
        outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
        assert not [o for o in outputs if o.get("name") == "stderr"], path.name
        assert not [o for o in outputs if o["output_type"] == "error"], path.name
        source = json.loads((results / "notebooks" / path.name).read_text())
        assert [o for c in source["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"]
    first = json.loads((published / "01_data_collection.ipynb").read_text())
    stdout = "".join("".join(o["text"]) for c in first["cells"] for o in c.get("outputs", [])
                     if o.get("name") == "stdout")
    assert " Normal: DATA_DIR/Normal/images" in stdout


def test_publishing_writes_the_pages_a_reader_sees_first(planted_run, tmp_path):
    _, results, record = planted_run
    published = publish.publish_to_book(results, tmp_path / "executed")
    glance_page = (published / "glance.md").read_text()
    assert glance_page == run_pages.glance_markdown(results)
    assert "this run: test set (n=" in glance_page
    assert "| the paper's claim | verdict: test set (n=" in re.sub(" +", " ", glance_page)
    assert "Why:" in (published / "report.md").read_text()
    assert "| claim | verdict | this run | the paper |" in re.sub(" +", " ", (published / "report_extended.md").read_text())
    assert "**Paired comparisons**" in (published / "tables.md").read_text()
    last_pass = run_pages.passes(record)[-1]["git_commit"]  # a run made in passes: the last one's commit
    assert f"git checkout {last_pass}" in (published / "reproduce.md").read_text()
    # Publishing the published copy again changes nothing that matters.
    again = publish.publish_to_book(portable.results_of_published(published, tmp_path / "again"),
                                    tmp_path / "executed-again")
    for name in ("glance.md", "tables.md", "report.md", "run_record.md", "reproduce.md", "run.json"):
        assert (again / name).read_text() == (published / name).read_text(), name


def test_portable_text_replaces_whole_folders_only():
    to_portable = portable.portable_text({"/work/main/results/paper": "RESULTS_DIR", "/work/main": "REPO_DIR"})
    assert to_portable("/work/main/results/paper/notebooks/a.ipynb") == "RESULTS_DIR/notebooks/a.ipynb"
    assert to_portable('"/work/main/notebooks", /work/main.') == '"REPO_DIR/notebooks", REPO_DIR.'
    assert to_portable("/work/main2/x /work/main.old /x/work/main") == "/work/main2/x /work/main.old /x/work/main"
    assert portable.machine_folders({"settings": {"weights": "/opt/keras/w.h5"}})["/opt/keras"] == "WEIGHTS_DIR"
