"""Pack what benchmarks/gpu_check.sh needs on a GPU machine that has no network and no Keras.

    python3 benchmarks/pack_for_gpu.py            # what `bash benchmarks/gpu_check.sh prepare` runs
    python3 benchmarks/pack_for_gpu.py --check     # only check the wheels and sizes already packed

Three things, each into a folder that git ignores (``.git/info/exclude``) and the device call
carries:

1. ``.whl/``: wheels of the Python packages the check needs that the GPU machine lacks (Keras
   and its pure helpers, ImageHash, papermill and the Jupyter kernel stack), at the versions
   ``requirements.txt`` pins, for CPython 3.12 on x86-64 Linux (the machine's interpreter).
   TensorFlow is not among them: the check runs Keras 3 on JAX or PyTorch, which are there.
2. ``.gpu_data/covid19-radiography-224/``: a seeded subset of the real images of
   ``../shared/data/covid19-radiography-224`` (copied byte for byte, checked against its
   MANIFEST.sha256, same layout): 500 per class by default, enough for the tests, the
   ``sample`` profile and the whole protocol (800 + 100 + 100 images) in benchmarks/speed.py.
   The source folder is only read.
3. A check: every requirement of every packed wheel (for Python 3.12 on Linux) is packed, on
   the GPU machine already (DEVICE_PACKAGES, read from gpu_machine_packages.txt beside this
   script) or knowingly left out (LEFT_OUT); one version of each package; and the working tree
   plus the packed folders stay under the 64 MiB that travels with a call. Anything missing or
   too large is printed and the exit status is 1.

Standard library only (plus ``packaging``, from pip's own copy when it is not installed).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
except ImportError:  # pragma: no cover - pip always brings a copy
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "covid19-radiography-224"
WHEELS_DIR = REPO_ROOT / ".whl"
DATA_DIR = REPO_ROOT / ".gpu_data"
DATASET_NAME = "covid19-radiography-224"
TRAVEL_LIMIT_MIB = 64  # the working tree plus carried folders, per device call

# Missing on the GPU machine and needed by the check; versions come from requirements.txt.
CARRIED = (
    # Keras 3 (its other needs, absl-py, h5py, ml-dtypes, numpy, rich, packaging, are there)
    "keras", "namex", "optree",
    # cxr_utils.data's near-duplicate hashing
    "ImageHash", "PyWavelets",
    # papermill and the Jupyter kernel that executes the notebooks (the sample profile)
    "papermill", "nbformat", "nbclient", "jupyter_client", "jupyter_core", "ipykernel",
    "ipython", "ipython_pygments_lexers", "jedi", "parso", "matplotlib-inline", "pexpect",
    "ptyprocess", "prompt_toolkit", "wcwidth", "stack-data", "executing", "asttokens",
    "pure_eval", "traitlets", "comm", "pyzmq", "tornado", "nest-asyncio2", "platformdirs",
    "fastjsonschema", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
    "entrypoints", "tenacity",
)

# Required by a packed wheel's metadata but not needed at run time; left out to save room.
LEFT_OUT = {
    "debugpy": "ipykernel imports it inside try/except and runs without a debugger (5 MB)",
}

# The GPU machine's Python packages, one name a line, with where the list came from.
DEVICE_PACKAGES_FILE = Path(__file__).resolve().parent / "gpu_machine_packages.txt"


def read_package_list(path: Path) -> list[str]:
    """The package names of a list file: one a line; blank lines and '#' comments skipped."""
    return [name for line in path.read_text().splitlines() if (name := line.split("#")[0].strip())]


DEVICE_PACKAGES = read_package_list(DEVICE_PACKAGES_FILE)

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_26_x86_64",
             "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    versions = {}
    for line in (REPO_ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            versions[normalize(name)] = version.strip()
    return versions


def wheel_name_version(path: Path) -> tuple[str, str]:
    name, version = path.name.split("-")[:2]
    return normalize(name), version


def download_wheels(wheels_dir: Path, python_version: str, log=print) -> None:
    """pip download the CARRIED wheels at their pinned versions; remove any other version."""
    versions = pins()
    wanted = {normalize(name): f"{name}=={versions[normalize(name)]}" for name in CARRIED}
    wheels_dir.mkdir(exist_ok=True)
    for wheel in wheels_dir.glob("*.whl"):
        name, version = wheel_name_version(wheel)
        if name not in wanted or normalize(wanted[name].split("==")[1]) != normalize(version):
            log(f"removing {wheel.name} (not wanted at this version)")
            wheel.unlink()
    present = {wheel_name_version(w)[0] for w in wheels_dir.glob("*.whl")}
    missing = [spec for name, spec in wanted.items() if name not in present]
    if not missing:
        log(f"{len(wanted)} wheels already in {wheels_dir}")
        return
    platform_args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", *platform_args,
               "-d", str(wheels_dir), *missing]
    log(f"downloading {len(missing)} wheels for CPython {python_version} into {wheels_dir}")
    subprocess.run(command, check=True)


def check_wheels(wheels_dir: Path, python_version: str, log=print) -> list[str]:
    """Problems with the packed wheel set (empty: complete)."""
    wheels = sorted(wheels_dir.glob("*.whl"))
    problems = []
    packed: dict[str, str] = {}
    for wheel in wheels:
        name, version = wheel_name_version(wheel)
        if name in packed:
            problems.append(f"two versions of {name}: {packed[name]} and {version} (pip install stops)")
        packed[name] = version
    if not wheels:
        return [f"no wheels in {wheels_dir}"]
    device = {normalize(name) for name in DEVICE_PACKAGES}
    environment = default_environment()
    environment.update(python_version=python_version, python_full_version=f"{python_version}.3",
                       sys_platform="linux", platform_system="Linux", platform_machine="x86_64",
                       os_name="posix", implementation_name="cpython",
                       platform_python_implementation="CPython")
    left_out_used = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
            metadata = archive.read(metadata_name).decode("utf-8", "replace")
        for line in metadata.splitlines():
            if line.startswith("Requires-Python:"):
                spec = line.split(":", 1)[1].strip()
                if spec and not SpecifierSet(spec).contains(f"{python_version}.3", prereleases=True):
                    problems.append(f"{wheel.name} needs Python {spec}")
            if not line.startswith("Requires-Dist:"):
                continue
            requirement = Requirement(line.split(":", 1)[1].strip())
            if requirement.marker and not requirement.marker.evaluate({**environment, "extra": ""}):
                continue  # an extra, or another platform's need
            needed = normalize(requirement.name)
            if needed in packed:
                if requirement.specifier and not requirement.specifier.contains(packed[needed], prereleases=True):
                    problems.append(f"{wheel.name} needs {requirement}, packed {needed} {packed[needed]}")
            elif needed in LEFT_OUT:
                left_out_used.add(needed)
            elif needed not in device:
                problems.append(f"{wheel.name} needs {requirement}: neither packed nor on the GPU machine")
    for name in sorted(left_out_used):
        log(f"left out on purpose: {name} ({LEFT_OUT[name]})")
    log(f"{len(wheels)} wheels, {mib(wheels_dir):.1f} MiB; requirements checked for CPython {python_version} "
        f"on Linux x86-64 against the packed set and the GPU machine's {len(device)} packages")
    return problems


def copy_images(source: Path, dest_root: Path, per_class: int, seed: int = 0, log=print) -> Path:
    """A seeded ``per_class`` subset of each class, byte for byte, in the source's layout."""
    manifest_path = source / "MANIFEST.sha256"
    digests = {}
    if manifest_path.is_file():
        for line in manifest_path.read_text().splitlines():
            digest, _, relative = line.partition("  ")
            digests[relative.strip().lstrip("./").lstrip("*")] = digest
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    if not classes:
        raise SystemExit(f"no class folders in {source}")
    dest = dest_root / DATASET_NAME
    staging = dest_root / f".{DATASET_NAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    chosen_lines = []
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*.png"))
        if len(files) < per_class:
            raise SystemExit(f"{class_dir} has {len(files)} images, fewer than --per-class {per_class}")
        for path in sorted(random.Random(f"{seed}-{class_dir.name}").sample(files, per_class)):
            relative = path.relative_to(source).as_posix()
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            actual = hashlib.sha256(target.read_bytes()).hexdigest()
            if digests and digests.get(relative) != actual:
                raise SystemExit(f"{relative}: copy does not match {manifest_path} (expected "
                                 f"{digests.get(relative)}, got {actual})")
            chosen_lines.append(f"{actual}  {relative}")
    (staging / "MANIFEST.sha256").write_text("\n".join(chosen_lines) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    log(f"{per_class} images per class of {source} ({len(classes)} classes) copied to {dest}, "
        f"{mib(dest):.1f} MiB{', checked against MANIFEST.sha256' if digests else ''}")
    return dest


def mib(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**20
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def travelling_tree_mib() -> float:
    """Tracked files plus untracked files git does not ignore: what a device call sends."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO_ROOT, capture_output=True, check=True).stdout
    paths = {REPO_ROOT / p for p in out.decode().split("\0") if p}
    return sum(p.stat().st_size for p in paths if p.is_file()) / 2**20


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the real images (read only)")
    parser.add_argument("--per-class", type=int, default=500,
                        help="images per class to carry (speed.py --images 1000 needs 500)")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.12)")
    parser.add_argument("--wheels-dir", type=Path, default=WHEELS_DIR)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--check", action="store_true", help="check what is packed; download and copy nothing")
    args = parser.parse_args(argv)

    if not args.check:
        download_wheels(args.wheels_dir, args.python_version)
        copy_images(args.source, args.data_dir, args.per_class)
    problems = check_wheels(args.wheels_dir, args.python_version)
    tree, wheels, data = travelling_tree_mib(), mib(args.wheels_dir), mib(args.data_dir)
    total = tree + wheels + data
    print(f"travels with the call: working tree {tree:.1f} MiB + {args.wheels_dir.name}/ {wheels:.1f} MiB + "
          f"{args.data_dir.name}/ {data:.1f} MiB = {total:.1f} MiB (limit {TRAVEL_LIMIT_MIB} MiB)")
    if total > TRAVEL_LIMIT_MIB - 1:
        problems.append(f"{total:.1f} MiB would travel, over the {TRAVEL_LIMIT_MIB} MiB limit (less 1 MiB "
                        "margin): lower --per-class or ignore large untracked files")
    excluded = (REPO_ROOT / ".git" / "info" / "exclude")
    ignored = excluded.read_text().split() if excluded.is_file() else []
    for folder in (args.wheels_dir, args.data_dir):
        if folder.parent == REPO_ROOT and f"/{folder.name}/" not in ignored:
            problems.append(f"/{folder.name}/ is not in .git/info/exclude: it would travel twice or be committed")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("ready: carry", [args.wheels_dir.name, args.data_dir.name] if not problems else "NOT ready")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
