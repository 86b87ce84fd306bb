"""Docstrings point to the book (STYLE: "Explained in notebooks/NN"): every such pointer on a
function names a chapter that calls it, and no docstring points outside the repository."""

import ast
import functools
import importlib
import inspect
import json
import pkgutil
import re

import pytest

import cxr_utils
from cxr_utils import run

CHAPTER = re.compile(r"\b(\d\d[a-z]?_[a-z0-9_]+)")
POINTER = re.compile(r"Explained in ([^.]*notebooks/[^.]*)\.")


def _modules():
    for info in pkgutil.walk_packages(cxr_utils.__path__, "cxr_utils."):
        yield importlib.import_module(info.name)


def _called_names(tree) -> set[str]:
    return {node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))}


@functools.cache
def _package_calls() -> dict[str, set[str]]:
    """Function name -> names it calls, over the whole package (names, not objects: enough here)."""
    calls = {}
    for module in _modules():
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.FunctionDef):
                calls.setdefault(node.name, set()).update(_called_names(node))
    return calls


@functools.cache
def _reached_from(chapter: str) -> set[str]:
    """Every package function a chapter calls, directly or through the package's own calls."""
    cells = json.loads((run.NOTEBOOKS_DIR / f"{chapter}.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    reached, frontier = set(), _called_names(ast.parse(code))
    while frontier:
        name = frontier.pop()
        if name not in reached:
            reached.add(name)
            frontier |= _package_calls().get(name, set()) - reached
    return reached


def _pointed_functions():
    for module in _modules():
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if function.__module__ != module.__name__ or not function.__doc__:
                continue
            match = POINTER.search(" ".join(function.__doc__.split()))
            if match:
                yield f"{module.__name__}.{name}", name, CHAPTER.findall(match.group(1))


POINTED = sorted(_pointed_functions())


def test_there_are_pointers_to_check():
    assert len(POINTED) > 20


@pytest.mark.parametrize("qualified, name, chapters", POINTED, ids=[p[0] for p in POINTED])
def test_pointer_names_a_chapter_that_calls_the_function(qualified, name, chapters):
    series = set(run.series())
    assert chapters and set(chapters) <= series, f"{qualified} points to {chapters}, not chapters of {sorted(series)}"
    callers = [chapter for chapter in chapters if name in _reached_from(chapter)]
    assert callers, f"{qualified} says it is explained in {chapters}, but none of them calls {name}(), even indirectly"


def test_no_docstring_points_outside_the_repository():
    for module in _modules():
        source = inspect.getsource(module)
        assert "../shared" not in source and "PAPER.md" not in source, module.__name__
