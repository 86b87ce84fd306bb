"""The benchmark's measured tables in the book are what its JSON record says, and --render
refuses what is not such a record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
    assert {row["model"] for row in results["throughput"]} == {"resnet50", "lstm", "resnet50_lstm"}


def test_render_rejects_a_file_that_is_not_a_benchmark_record(tmp_path):
    bogus = tmp_path / "speed.json"
    bogus.write_text('{"results": {}}')
    completed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--render", str(bogus)],
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
