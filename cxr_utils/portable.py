"""Portable copies of a run: what ships with the book names no folder of the machine that made
it and carries no log lines. Folders become placeholders (DATA_DIR, RESULTS_DIR, ...), image paths
become paths within the dataset, stderr is stripped from the notebooks; the results folder itself
keeps everything. Explained in book/reproducibility.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import sys
import tempfile
import zlib
from pathlib import Path, PurePath

from cxr_utils.paths import REPO_ROOT

# -- portable copies: no folder of the machine that ran ----------------------------------------------

# Where a machine's own folders usually start; what is_machine_path looks for beyond the folders a
# run names (its settings, the repository, the Python environment, home and temporary folders).
MACHINE_PATH = re.compile(r"(?<![\w.~-])(?:/home/|/work/|/tmp/|/Users/|/root/|/private/var/|[A-Za-z]:\\)")
# Notebook outputs that are pictures: base64 text, never paths, and not to be rewritten.
BINARY_OUTPUT = re.compile(r"^(image/|application/pdf)")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"iTXt", b"zTXt")


def machine_folders(record: dict, notebooks=()) -> dict[str, str]:
    """The absolute folders a run's files may name, each with the placeholder that replaces it in
    the published copy, longest first: every absolute ``*_dir`` setting by its name in capitals
    (``data_dir`` -> ``DATA_DIR``; a file setting, such as a weights file, by its folder:
    ``WEIGHTS_DIR``), the repository the notebooks were executed from (``REPO_DIR``, also read
    from papermill's record in ``notebooks``), the Python environment (``PYTHON_ENV``), the home
    folder (``~``) and the temporary folder (``TMP``)."""
    found: dict[str, str] = {}

    def add(folder, placeholder):
        folder = str(folder).rstrip("/\\")
        if folder and os.path.isabs(folder) and len(PurePath(folder).parts) > 1:
            found.setdefault(folder, placeholder)

    for name, value in record.get("settings", {}).items():
        if isinstance(value, str) and os.path.isabs(value):
            if name.endswith("_dir"):
                add(value, name.upper())
            else:
                add(os.path.dirname(value), f"{name.upper()}_DIR")
    for path in notebooks:
        source = json.loads(Path(path).read_text()).get("metadata", {}).get("papermill", {}).get("input_path")
        if isinstance(source, str) and os.path.isabs(source) and PurePath(source).parent.name == "notebooks":
            add(PurePath(source).parent.parent, "REPO_DIR")
    add(REPO_ROOT, "REPO_DIR")
    if not any(os.path.commonpath([folder, sys.prefix]) == folder for folder in found):
        add(sys.prefix, "PYTHON_ENV")  # an environment outside the repository
    add(Path.home(), "~")
    add(tempfile.gettempdir(), "TMP")
    for folder in list(found):  # a folder also known by its real path (symbolic links)
        add(os.path.realpath(folder), found[folder])
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def portable_text(folders: dict[str, str]):
    """A function replacing each of ``folders`` (``machine_folders``) in a text with its placeholder:
    ``/work/shared/data/x/COVID/a.png`` -> ``DATA_DIR/COVID/a.png``. Only whole folder names are
    replaced (``/work/main`` never in ``/work/main2``)."""
    if not folders:
        return lambda text: text
    pattern = re.compile(r"(?<![\w.-])(" + "|".join(map(re.escape, folders)) + r")(?!\.?[\w-])")
    return lambda text: pattern.sub(lambda match: folders[match.group(1)], text)


def _map_strings(value, function, key: str = ""):
    """``value`` (parsed JSON) with ``function`` applied to every string, pictures left alone."""
    if isinstance(value, str):
        return value if BINARY_OUTPUT.match(key) else function(value)
    if isinstance(value, list):
        return [_map_strings(item, function, key) for item in value]
    if isinstance(value, dict):
        return {name: _map_strings(item, function, str(name)) for name, item in value.items()}
    return value


def _strings(value, key: str = ""):
    """Every string of parsed JSON, pictures left out."""
    if isinstance(value, str):
        if not BINARY_OUTPUT.match(key):
            yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _strings(item, str(name))


def _png_texts(data: bytes):
    """(start, end, text) of each text chunk of a PNG file's bytes, compressed ones inflated."""
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        length = int.from_bytes(data[position:position + 4], "big")
        kind, payload = data[position + 4:position + 8], data[position + 8:position + 8 + length]
        end = position + 12 + length
        if kind in PNG_TEXT_CHUNKS:
            text = payload.decode("latin-1")
            _, _, rest = payload.partition(b"\0")
            for start in range(0, min(len(rest), 64)):  # zTXt: method byte; iTXt: flags, language, keyword
                try:
                    text += zlib.decompress(rest[start:]).decode("utf-8", "replace")
                    break
                except zlib.error:
                    continue
            yield position, end, text
        position = end


def strip_notebook_logs(notebook: dict) -> dict:
    """The notebook without its stderr outputs (library log lines, warnings, progress bars): the
    page shows what the code computed; the results folder keeps the full record."""
    for cell in notebook.get("cells", []):
        if "outputs" in cell:
            cell["outputs"] = [output for output in cell["outputs"]
                               if not (output.get("output_type") == "stream" and output.get("name") == "stderr")]
    return notebook


RUN_VALUES_NOTE = "# The values this run used (papermill set them; the notebook's own defaults are the paper's)\n"


def show_run_parameters(notebook: dict) -> dict:
    """The notebook's parameters cell showing the values the run used, not the notebook's defaults:
    each ``name = value`` line papermill injected replaces the default's value (the line's comment
    kept), and papermill's own injected cell is hidden (``remove-cell``). A page then never shows
    ``epochs = 15`` above a run of 2 epochs. Parameters the notebook does not declare stay out."""
    cells = notebook.get("cells", [])
    injected = next((c for c in cells if "injected-parameters" in c.get("metadata", {}).get("tags", [])), None)
    defaults = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if injected is None or defaults is None:
        return notebook
    values = {}
    for line in "".join(injected["source"]).splitlines():
        name, sep, value = line.partition(" = ")
        if sep and name.isidentifier():
            values[name] = value.strip()
    lines = []
    for line in "".join(defaults["source"]).splitlines(keepends=True):
        name, sep, rest = line.partition(" = ")
        if sep and name in values:
            comment = rest[rest.index("  #"):] if "  #" in rest else ("\n" if line.endswith("\n") else "")
            line = f"{name} = {values[name]}{comment}"
        lines.append(line)
    if not lines or lines[0] != RUN_VALUES_NOTE:
        lines.insert(0, RUN_VALUES_NOTE)
    defaults["source"] = lines
    tags = injected.setdefault("metadata", {}).setdefault("tags", [])
    if "remove-cell" not in tags:
        tags.append("remove-cell")
    return notebook


def portable_notebook(path: Path, portable) -> None:
    notebook = show_run_parameters(strip_notebook_logs(json.loads(path.read_text())))
    path.write_text(json.dumps(_map_strings(notebook, portable), indent=1) + "\n")


def make_portable(folder: Path, folders: dict[str, str]) -> None:
    """Rewrite every file under ``folder`` so that none of ``folders`` (``machine_folders``) is
    named: JSON and notebooks string by string (pictures untouched), other text files as text,
    PNG files without the text chunks that name one."""
    portable = portable_text(folders)
    mentions = re.compile("|".join(map(re.escape, folders))) if folders else None
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            kept, position = [data[:len(PNG_SIGNATURE)]], len(PNG_SIGNATURE)
            for start, end, text in _png_texts(data):
                kept.append(data[position:start])
                if not ((mentions and mentions.search(text)) or MACHINE_PATH.search(text)):
                    kept.append(data[start:end])
                position = end
            kept.append(data[position:])
            if len(b"".join(kept)) != len(data):
                path.write_bytes(b"".join(kept))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # not text
        if path.suffix in (".json", ".ipynb"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if parsed is not None:
                rewritten = _map_strings(parsed, portable)
                if rewritten != parsed:
                    path.write_text(json.dumps(rewritten, indent=1 if path.suffix == ".ipynb" else 2) + "\n")
                continue
        new = portable(text)
        if new != text:
            path.write_text(new)


def machine_paths(folder: Path, folders=()) -> list[str]:
    """Each absolute path of a machine still named in a file under ``folder``, as "file: path":
    ``MACHINE_PATH``'s usual folders and any of ``folders``. Notebook pictures are not read (base64
    may hold any letters); PNG files are read in their text chunks. Empty: the copy is portable."""
    known = [re.escape(f) for f in folders]
    pattern = re.compile(MACHINE_PATH.pattern + ("|(?<![\\w.-])(?:" + "|".join(known) + ")(?!\\.?[\\w-])" if known else ""))
    found = []
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if data.startswith(PNG_SIGNATURE):
            texts = [text for _, _, text in _png_texts(data)]
        else:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue
            texts = [text]
            if path.suffix in (".json", ".ipynb"):
                try:
                    texts = list(_strings(json.loads(text)))
                except json.JSONDecodeError:
                    pass
        for text in texts:
            for match in pattern.finditer(text):
                line = text[match.start():].split("\n", 1)[0]
                found.append(f"{path.relative_to(folder)}: {line[:120]}")
    return found


def portable_record(record: dict, folders: dict[str, str]) -> dict:
    """The run record as published: every folder of the machine replaced by its placeholder, and
    ``placeholders`` saying what each stands for (a folder by its last part, as the book shows
    settings: ``summaries.shown_value``). Settings, versions, hardware, git commit and wall times
    are kept as they are."""
    from cxr_utils import summaries  # imports pandas; the rest of this module needs only the standard library

    published = _map_strings(record, portable_text(folders))
    meaning = {"REPO_DIR": "the repository", "PYTHON_ENV": "the Python environment", "~": "the home folder",
               "TMP": "the temporary folder"}
    used = json.dumps(published)
    order = [name.upper() for name in record.get("settings", {})]
    shown = sorted(folders.items(), key=lambda item: order.index(item[1]) if item[1] in order else len(order))
    published["placeholders"] = {**record.get("placeholders", {}), **{  # kept when published again
        placeholder: meaning.get(placeholder) or summaries.shown_value("folder_dir", folder)
        for folder, placeholder in shown if placeholder in used
    }}
    return published


def placeholder_note(record: dict) -> str:
    named = {k: v for k, v in record.get("placeholders", {}).items() if k.endswith("_DIR") and k != "REPO_DIR"}
    if not named:
        return ""
    listed = ", ".join(f"`{k}` ({v})" for k, v in named.items())
    return f"\nThe folders of the machine that ran are written as placeholders: {listed}.\n"


def results_of_published(book_dir: Path, target: Path) -> Path:
    """A results folder rebuilt from a published run (``book/executed/``): its tables, executed
    notebooks, figures, run record and verdict pages, laid out as ``python -m cxr_utils.run``
    writes them (no model weights). Publishing it again applies today's publishing code to a run
    made earlier, without retraining."""
    book_dir, target = Path(book_dir), Path(target)
    shutil.copytree(book_dir / "results", target)
    (target / "notebooks").mkdir(exist_ok=True)
    for notebook in book_dir.glob("*.ipynb"):
        shutil.copy2(notebook, target / "notebooks" / notebook.name)
    if (book_dir / "figures").is_dir():
        shutil.copytree(book_dir / "figures", target / "figures", dirs_exist_ok=True)
    shutil.copy2(book_dir / "run.json", target / "run.json")
    for name in ("report.md", "report_extended.md"):
        if (book_dir / name).is_file() and not (target / name).is_file():
            shutil.copy2(book_dir / name, target / name)
    return target


def dataset_relative_paths(results: Path) -> str | None:
    """Rewrite the image paths in every CSV under ``results`` relative to the dataset folder.

    A run's tables name each image by its absolute path on the machine that ran it; published
    copies name it by where it lies in the dataset ("COVID/images/COVID-1.png"), which is the
    same on every machine that has the dataset. The dataset folder is the deepest folder
    holding every image of ``manifest.csv`` (the whole dataset listing). Only the ``path``
    column changes: every other field is copied as text, so no number or hash is re-formatted.
    Returns the dataset folder, or None when there is no manifest (nothing is rewritten).
    """
    manifest = Path(results) / "manifest.csv"
    if not manifest.is_file():
        return None
    with manifest.open(newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    if not paths or not all(os.path.isabs(path) for path in paths):
        return None  # already relative (published before), or nothing to anchor on
    root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
    for table in sorted(Path(results).rglob("*.csv")):
        with table.open(newline="") as handle:
            rows = list(csv.reader(handle))
        if not rows or "path" not in rows[0]:
            continue
        column = rows[0].index("path")
        for row in rows[1:]:
            if os.path.isabs(row[column]) and os.path.commonpath([root, row[column]]) == root:
                row[column] = Path(os.path.relpath(row[column], root)).as_posix()
        with table.open("w", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerows(rows)
    return root
