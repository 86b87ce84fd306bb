"""The pages' words in cxr_utils/templates: every template is rendered (or imported) by some page
of the published run, and each names exactly the values its Python passes. StrictUndefined fails a
page only on a run that reaches the branch naming a value never passed; comparing the names with
jinja2.meta catches that on any run, and a template no page renders is stale text."""

import shutil
from pathlib import Path

import pytest
from jinja2 import meta

from cxr_utils import model_card, prose, shortcut_run

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT / "book" / "executed" / "results"

# Every page the package writes from a run, as a function of the published run's folder.
PAGES = (model_card.markdown, shortcut_run.summary_markdown)


@pytest.fixture
def published_copy(tmp_path):
    """A copy of the run published in the book (no model weights, dataset-relative image paths)."""
    if not (PUBLISHED / "run.json").is_file():
        pytest.skip("no published run in book/executed/results")
    return Path(shutil.copytree(PUBLISHED, tmp_path / "published"))


def _parsed_templates() -> dict:
    environment = prose.ENVIRONMENT
    return {name: environment.parse(environment.loader.get_source(environment, name)[0])
            for name in environment.list_templates()}


def test_every_template_is_used_and_given_exactly_the_values_it_names(published_copy, monkeypatch):
    passed = {}
    render = prose.render

    def recording(template, **values):
        assert passed.setdefault(template, set(values)) == set(values), f"{template} is given different values"
        return render(template, **values)

    monkeypatch.setattr(prose, "render", recording)
    for page in PAGES:
        page(published_copy)
    parsed = _parsed_templates()
    imported = {other for name in passed for other in meta.find_referenced_templates(parsed[name])}
    assert set(passed) | imported == set(parsed), "templates no page renders or imports"
    for name, values in passed.items():
        assert meta.find_undeclared_variables(parsed[name]) == values, name


def test_the_shortcut_summary_without_any_table_names_what_is_missing():
    """The branches the published run does not reach still render: every table missing."""
    from cxr_utils import shortcuts

    text = shortcuts.shortcut_summary(None)
    assert "No baselines yet" in text and "No lungs-blanked runs yet" in text and "no Grad-CAM shares" in text
