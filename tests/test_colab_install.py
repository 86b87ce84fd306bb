"""On Google Colab, installing this project keeps the runtime's own TensorFlow, Keras, NumPy, ...

Every notebook's first cell (``cxr_utils.run.install_cell_source``) runs
``pip install git+<repository>`` on Colab. pip leaves an installed package alone when it meets
every requirement, so that install replaces none of Colab's packages exactly when pip's resolver,
held to Colab's versions (``tests/colab_constraints.txt``, a recent Colab GPU image's
``pip freeze``), still finds a solution. This test asks pip that question without installing
anything: a dry run of this checkout, resolved for Colab's Python and platform.

It needs the package index (PyPI), as pip on Colab does; without it the test fails and says so.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "tests" / "colab_constraints.txt"
# The packages the install must never swap out: the TensorFlow and Keras, and the NumPy
# both are built against.
RUNTIME_CORE = ("tensorflow", "keras", "numpy")
# The extra notebooks/00_run_all installs on Colab: papermill and a kernel, to run the series.
RUN_ALL_EXTRA = "series"
# Resolve the extras too: Colab has TensorFlow already, and the project's tensorflow range and
# TensorFlow's own requirements must both admit Colab's versions for it to stay; the run-all
# notebook's extra must leave Colab's Jupyter (and Sphinx) packages as they are.
TARGET = f"{ROOT}[tensorflow,{RUN_ALL_EXTRA}]"


def colab_constraints(path: Path = CONSTRAINTS):
    """(pins, header): the ``name==version`` lines by canonical name, and the header's
    ``# key: value`` settings (Colab's python-version and platform)."""
    pins, header = {}, {}
    for line in path.read_text().splitlines():
        setting = re.fullmatch(r"#\s*(python-version|platform):\s*(\S+)\s*", line)
        if setting:
            header[setting.group(1)] = setting.group(2)
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            specifiers = list(requirement.specifier)
            assert len(specifiers) == 1 and specifiers[0].operator == "==", (
                f"{path.name}: {line!r} is not an exact pin; the file holds only name==version lines"
            )
            pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins, header


# The legacy names of three glibc versions; some wheels carry only these (libclang's,
# manylinux2010).
LEGACY_MANYLINUX = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}


def platform_tags(newest: str) -> list[str]:
    """``manylinux_2_35_x86_64`` and the tags of every older glibc: a wheel built for an older
    glibc installs on Colab too, and pip's --platform takes tags literally, without expanding a
    ``manylinux_2_35`` to them."""
    match = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", newest)
    assert match, f"platform {newest!r} is not a manylinux_2_<glibc minor>_<arch> tag"
    minor, arch = int(match.group(1)), match.group(2)
    tags = []
    for m in range(minor, 4, -1):
        tags.append(f"manylinux_2_{m}_{arch}")
        if m in LEGACY_MANYLINUX:
            tags.append(f"{LEGACY_MANYLINUX[m]}_{arch}")
    return tags


def pip_dry_run(header: dict, requirements: list[str], report: Path, *options: str):
    """``pip install --dry-run`` of ``requirements`` for Colab's Python and platform (not this
    machine's): pip then takes wheels only, so it builds no dependency from source either (pip
    still evaluates environment markers with this interpreter: see ``unmet_on_colab``). pip's
    own settings (index, certificates, timeouts) stay as they are: they are how this machine
    reaches the index."""
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        "--report", str(report), "--progress-bar", "off", *options,
        "--python-version", header["python-version"], "--only-binary=:all:",
        *[arg for tag in platform_tags(header["platform"]) for arg in ("--platform", tag)],
        *requirements,
    ]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def pip_said(result: subprocess.CompletedProcess) -> str:
    """pip's own explanation, without the progress and 'Location ... is ignored' chatter."""
    chatter = ("WARNING: Location", "Collecting ", "  Using cached", "  Downloading",
               "Processing ", "Looking in", "  Installing build", "  Getting requirements",
               "  Preparing metadata")
    lines = [line for line in (result.stdout + result.stderr).splitlines()
             if line.strip() and not line.startswith(chatter)]
    return "\n".join(lines[-40:])


def failure_cause(result, probe, probed: str) -> str:
    """Why the resolution failed, in a sentence. pip reports an index it cannot reach as
    'ResolutionImpossible' too (the pinned versions are then simply missing), so the cause is
    told by ``probe``: a dry run of one pinned package alone, ``probed``."""
    if probe.returncode != 0:
        return (f"pip could not get Colab's {probed} from the package index, so it could not "
                "resolve anything: this test needs the index (PyPI), as pip on Colab does; "
                f"pip said:\n{pip_said(probe)}")
    output = result.stdout + result.stderr
    if "ResolutionImpossible" in output:
        return ("pip cannot install this project on Colab without replacing one of Colab's "
                "packages: a requirement in pyproject.toml (or of a package it pulls in) "
                f"excludes the version Colab ships; pip said:\n{pip_said(result)}")
    return f"pip failed (exit status {result.returncode}); pip said:\n{pip_said(result)}"


def unmet_on_colab(report: dict, python_version: str, pins: dict[str, str]) -> list[str]:
    """The requirements of the resolved packages that apply on Colab's Python but that neither
    the resolution nor Colab's own packages (``pins``) meet. pip's --python-version picks wheels
    and checks Requires-Python for that version, yet evaluates markers such as
    ``numpy>=1.26; python_version >= "3.12"`` with the interpreter running it; this evaluates them
    again for Colab's. A package the resolution left out because its marker was false here is
    met on Colab when Colab already has it at a version that satisfies the requirement."""
    major_minor = ".".join(python_version.split(".")[:2])
    colab = {**report["environment"], "python_version": major_minor,
             "python_full_version": python_version, "implementation_version": python_version}
    resolved = {canonicalize_name(item["metadata"]["name"]): Version(item["metadata"]["version"])
                for item in report["install"]}
    unmet = []
    for item in report["install"]:
        extras = [""] + list(item.get("requested_extras") or [])
        for text in item["metadata"].get("requires_dist") or []:
            requirement = Requirement(text)
            if requirement.marker is not None and not any(
                    requirement.marker.evaluate({**colab, "extra": extra}) for extra in extras):
                continue
            name = canonicalize_name(requirement.name)
            version = resolved.get(name, Version(pins[name]) if name in pins else None)
            if version is None or not requirement.specifier.contains(version, prereleases=True):
                unmet.append(f"{item['metadata']['name']} needs {text} (resolved: {version})")
    return unmet


def test_constraints_pin_colab_runtime():
    """The constraints file reads as Colab's runtime: exact pins, TensorFlow and Keras among
    them, and the interpreter and platform the resolver must target."""
    pins, header = colab_constraints()
    assert set(RUNTIME_CORE) <= set(pins), f"missing pins: {set(RUNTIME_CORE) - set(pins)}"
    assert re.fullmatch(r"3\.\d+\.\d+", header.get("python-version", "")), header
    assert platform_tags(header.get("platform", ""))


def test_install_keeps_colab_packages(tmp_path):
    pins, header = colab_constraints()
    report_path = tmp_path / "report.json"
    result = pip_dry_run(header, [TARGET], report_path, "--constraint", str(CONSTRAINTS))
    if result.returncode != 0:
        probed = f"keras=={pins['keras']}"
        probe = pip_dry_run(header, [probed], tmp_path / "probe.json", "--no-deps")
        pytest.fail(failure_cause(result, probe, probed), pytrace=False)

    report = json.loads(report_path.read_text())
    resolved = {canonicalize_name(item["metadata"]["name"]): item for item in report["install"]}

    # The project itself, from this checkout (the git URL would fetch the published one).
    project = resolved.get("cxr-utils")
    assert project is not None and project["is_direct"], sorted(resolved)
    assert project["download_info"]["url"] == ROOT.as_uri(), project["download_info"]

    # What the check is about is actually part of the resolution.
    missing = [name for name in RUNTIME_CORE if name not in resolved]
    assert not missing, f"{missing} not in the resolution; the check would prove nothing about them"

    # Every package Colab ships stays at Colab's version (the rest are new installs).
    changed = {
        name: f"{item['metadata']['version']} instead of Colab's {pins[name]}"
        for name, item in resolved.items()
        if name in pins and Version(item["metadata"]["version"]) != Version(pins[name])
    }
    assert not changed, f"the install would replace Colab's packages: {changed}"

    # Requirements that only Colab's Python switches on are met as well.
    unmet = unmet_on_colab(report, header["python-version"], pins)
    assert not unmet, f"on Colab's Python {header['python-version']}: {unmet}"

    # The wheels chosen install on Colab's Python and platform: the resolution was Colab's,
    # not this machine's.
    python = tuple(int(part) for part in header["python-version"].split("."))[:2]
    platforms = platform_tags(header["platform"])
    colab_tags = set(cpython_tags(python, platforms=platforms)) | set(
        compatible_tags(python, platforms=platforms))
    wrong = [
        name for name, item in resolved.items() if name != "cxr-utils"
        and not colab_tags & parse_wheel_filename(item["download_info"]["url"].rsplit("/", 1)[-1])[3]
    ]
    assert not wrong, f"wheels that do not install on Colab's Python {header['python-version']}: {wrong}"


def test_the_run_all_notebook_installs_the_extra_checked_here():
    """The install cell of notebooks/00_run_all is the one this check resolves: the ``series``
    extra (not ``book``, whose jupyter-book 1.x would replace Colab's Sphinx)."""
    notebook = json.loads((ROOT / "notebooks" / "00_run_all.ipynb").read_text())
    code = "".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    installs = re.findall(r'"pip", "install",[^\]]*?"([^"]*cxr-replication[^"]*)"', code)
    assert installs == [f"/content/cxr-replication[{RUN_ALL_EXTRA}]"], installs
