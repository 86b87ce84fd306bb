"""One pinned environment: pyproject, requirements.txt and environment.yml agree; imports stay offline."""

import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins():
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            pins[requirement.name.lower().replace("_", "-")] = next(iter(requirement.specifier)).version
    return pins


def test_every_dependency_is_pinned_within_its_range():
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = list(project["dependencies"]) + extras["book"] + extras["test"]
    for text in wanted:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        if name == project["name"]:  # an extra that names others (book = series + jupyter-book): check theirs
            wanted += [dependency for extra in sorted(requirement.extras) for dependency in extras[extra]]
            continue
        assert name in pins, f"{name} is a dependency but not pinned in requirements.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"
    assert pins["tensorflow-cpu"] and pins["keras"].startswith("3.")
    assert int(pins["jupyter-book"].split(".")[0]) < 2  # 2.x needs the network to build


def test_environment_yml_installs_the_same_pins():
    text = (ROOT / "environment.yml").read_text()
    assert "-r requirements.txt" in text and "-e ." in text and "python=3.11" in text


def test_importing_the_package_loads_no_deep_learning_framework():
    code = "import sys, cxr_utils, cxr_utils.data; print(sorted(m for m in ('keras', 'tensorflow', 'kagglehub') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tests_that_share_a_costly_fixture_run_on_one_worker_which_builds_it_once(tmp_path):
    """`make test`'s two xdist workers with --dist loadgroup: conftest's groups must reach xdist, or
    each worker builds the series (ten minutes) for itself, as happened unnoticed until 2026-12."""
    (tmp_path / "conftest.py").write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('project_conftest', {str(ROOT / 'tests' / 'conftest.py')!r})\n"
        "project = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(project)\n"
        "pytest_collection_modifyitems = project.pytest_collection_modifyitems\n")
    log = tmp_path / "setups.log"
    (tmp_path / "test_grouped.py").write_text(
        "import os, pytest\n"
        "@pytest.fixture(scope='module')\n"
        "def sample_run():\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(os.environ['PYTEST_XDIST_WORKER'] + '\\n')\n"
        + "".join(f"def test_shared_{i}(sample_run): pass\n" for i in range(6))
        + "".join(f"def test_alone_{i}(): pass\n" for i in range(6)))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--numprocesses=2",
                           "--dist=loadgroup", str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert len(log.read_text().split()) == 1, "the series fixture was built on each worker: groups are not honoured"
