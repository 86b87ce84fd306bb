"""The benchmark's measured tables in the book are what its JSON record says, the prose cites
no measured figure by hand, and --render refuses what is not such a record."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cxr_utils import config

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "book" / "measured"


@pytest.mark.parametrize("name", ["speed_cpu"])
def test_committed_tables_are_rendered_from_their_json(name, benchmark_module):
    json_path, markdown_path = MEASURED / f"{name}.json", MEASURED / f"{name}.md"
    if not json_path.is_file():
        pytest.skip(f"no measured benchmark committed at {json_path}")
    record = json.loads(json_path.read_text())
    assert benchmark_module("speed").render(record) == markdown_path.read_text()
    results = record["results"]
    for row in results["paper_way_vs_fast_path"]:
        assert row["speedup"] == pytest.approx(row["paper_way_s"] / row["fast_path_s"], rel=0.01)
    assert {row["model"] for row in results["throughput"]} == set(config.REGISTRY)


def test_rendered_summary_states_the_measured_figures(benchmark_module):
    """The figures the book's prose needs are rendered from the JSON, above the tables."""
    record = json.loads((MEASURED / "speed_cpu.json").read_text())
    text = benchmark_module("speed").render(record)
    assert text.index("**In short**") < text.index("| model")
    names = config.paper_names()
    for row in record["results"]["paper_way_vs_fast_path"]:
        assert f"{names[row['model']]} {row['speedup']}x faster" in text
        features, head = row["fast_path_features_s"], row["fast_path_head_s"]
        assert f"{head / features:.0%} of its backbone pass" in text
    pipeline = record["results"]["data_pipeline"]
    assert f"{pipeline['loader_overhead_pct_load_once']}% of the LSTM's training time" in text
    assert f"{pipeline['cache_speedup']}x longer" in text
    record = json.loads((MEASURED / "head_profile_cpu.json").read_text())
    text = benchmark_module("profile_head").render(record)
    ratios = {row["variant"]: row["vs_paper_head"] for row in record["results"]["variants"]}
    assert text.index("**In short**") < text.index("| variant")
    assert f"`steps_per_execution` {ratios['steps_per_execution']}" in text


def test_prose_types_no_measured_speedup_or_time_by_hand(benchmark_module):
    """README and the book cite measured speed-ups and times through book/measured/ (rendered
    from the JSON) and the run record: a figure typed into the prose goes stale. The one
    exception is a README line that a benchmark renders from its committed record, which
    tests/test_benchmark_scripts.py compares with that record."""
    typed = re.compile(r"\b\d+\.\d+x\b|\b\d+(\.\d+)? ?(s|seconds|minutes?|hours?)\b")
    record = MEASURED / "extended_memory_cpu.json"
    rendered = {benchmark_module("extended_memory").readme_sentence(json.loads(record.read_text()))} \
        if record.is_file() else set()
    for page in [ROOT / "README.md", *sorted((ROOT / "book").glob("*.md"))]:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line in rendered:
                continue
            assert not typed.search(line), f"{page.name}:{number} types a measured figure by hand: {line}"
    assert "```{include} measured/speed_cpu.md" in (ROOT / "book" / "appendix_benchmarks.md").read_text()


@pytest.mark.parametrize("script", ["speed", "profile_head"])
def test_render_rejects_a_file_that_is_not_a_benchmark_record(tmp_path, script):
    bogus = tmp_path / "speed.json"
    bogus.write_text('{"results": {}}')
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--render", str(bogus)],
                               capture_output=True, text=True)
    assert completed.returncode == 2
    assert f"{bogus} is not a benchmark JSON" in completed.stderr


def test_render_writes_markdown_without_measuring(tmp_path, benchmark_module):
    speed = benchmark_module("speed")
    record = {
        "created_utc": "2026-01-01T00:00:00+00:00", "wall_time_s": 12.0,
        "hardware": {"cpu": "Test CPU", "cpu_count": 2, "accelerator": "CPU only", "keras_backend": "tensorflow"},
        "versions": {"keras": "3"},
        "results": {"mixed_precision": False, "peak_memory_mb": 100,
                    "throughput": [{"model": "lstm", "train_images_per_s": 200.0}]},
    }
    source, target = tmp_path / "speed.json", tmp_path / "out" / "speed.md"
    source.write_text(json.dumps(record))
    assert speed.main(["--render", str(source), "--markdown", str(target)]) == 0
    text = target.read_text()
    assert "Test CPU (2 cores)" in text and "| lstm  | 200.0" in text


def test_committed_head_profile_is_rendered_from_its_json(benchmark_module):
    json_path, markdown_path = MEASURED / "head_profile_cpu.json", MEASURED / "head_profile_cpu.md"
    if not json_path.is_file():
        pytest.skip(f"no head profile committed at {json_path}")
    record = json.loads(json_path.read_text())
    profile_head = benchmark_module("profile_head")
    assert profile_head.render(record) == markdown_path.read_text()
    rows = {row["variant"]: row for row in record["results"]["variants"]}
    assert rows["paper"]["vs_paper_head"] == 1.0
    for row in rows.values():
        assert row[profile_head.time_key()] == min(row["rounds_s"])


def test_hoisted_head_computes_the_paper_heads_function_and_the_check_can_fail(benchmark_module, monkeypatch):
    profile_head = benchmark_module("profile_head")
    assert profile_head.check_hoisted_matches_lstm(lambda message: None) < 1e-4
    # Without the paper head's weights the hoisted head is a different function: caught.
    monkeypatch.setattr(profile_head, "copy_lstm_weights_to_hoisted", lambda paper, hoisted: None)
    with pytest.raises(AssertionError, match="does not compute the paper head's function"):
        profile_head.check_hoisted_matches_lstm(lambda message: None)


def test_head_profile_runs_and_prints_ratios_to_the_paper_head(tmp_path, benchmark_module, capsys):
    out = tmp_path / "profile.json"
    assert benchmark_module("profile_head").main(
        ["--epochs", "1", "--rounds", "1", "--variants", "no_lstm,paper", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = {row["variant"]: row for row in record["results"]["variants"]}
    assert set(rows) == {"no_lstm", "paper"} and rows["paper"]["vs_paper_head"] == 1.0
    key = f"head_s_per_{config.PROTOCOL.epochs}_epochs"
    assert rows["no_lstm"]["vs_paper_head"] == pytest.approx(rows["no_lstm"][key] / rows["paper"][key], abs=0.01)
    assert record["hardware"]["cpu_count"] >= 1 and "keras" in record["versions"]
    assert "| paper " in capsys.readouterr().out


def test_head_profile_refuses_variants_without_the_paper_head(benchmark_module):
    with pytest.raises(SystemExit):
        benchmark_module("profile_head").main(["--variants", "no_lstm"])


def test_committed_records_name_no_folder_of_the_machine():
    from cxr_utils import portable

    for path in sorted(MEASURED.iterdir()):
        match = portable.MACHINE_PATH.search(path.read_text())
        assert not match, f"{path.name} names a machine's folder: {path.read_text()[match.start():][:80]}"


def test_a_record_is_written_with_placeholders_for_the_machines_folders(tmp_path, benchmark_module):
    from cxr_utils import runtime

    data_dir = tmp_path / "data" / "covid19-radiography-224"
    record = runtime.run_record({"data_dir": str(data_dir), "out": "book/measured/x.json"}, 1.0,
                                results={"first_image": str(data_dir / "COVID" / "images" / "COVID-1.png")})
    written = benchmark_module("rendering").write_record(record, tmp_path / "record.json")
    assert json.loads((tmp_path / "record.json").read_text()) == written
    assert written["settings"]["data_dir"] == "DATA_DIR"
    assert written["results"]["first_image"] == "DATA_DIR/COVID/images/COVID-1.png"
    assert written["placeholders"]["DATA_DIR"].endswith("covid19-radiography-224")
    assert str(tmp_path) not in (tmp_path / "record.json").read_text()
