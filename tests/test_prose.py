"""The pages' words in cxr_utils/templates: every template is rendered (or imported) by some page
of the published run, and each names exactly the values its Python passes. StrictUndefined fails a
page only on a run that reaches the branch naming a value never passed; comparing the names with
jinja2.meta catches that on any run, and a template no page renders is stale text."""

import json
import shutil
from pathlib import Path

import pytest
from jinja2 import meta

import pandas as pd

from cxr_utils import batchnorm_check, config, model_card, prose, run_pages, shortcut_run, summaries
from cxr_utils.study import publish as study_publish

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT / "book" / "executed" / "results"
STUDIES = REPO_ROOT / "book" / "studies"

# Every page the package writes, as a function of the published run's folder and the published
# studies' folder.
PAGES = (
    lambda run, studies: model_card.markdown(run),
    lambda run, studies: run_pages.glance_markdown(run),
    lambda run, studies: run_pages.reproduce_markdown(json.loads((run / "run.json").read_text())),
    lambda run, studies: shortcut_run.summary_markdown(run),
    lambda run, studies: run_pages.findings_markdown(run),
    lambda run, studies: study_publish.render_pages(studies, figures=False),
    lambda run, studies: summaries.settings_markdown(json.loads((run / "run.json").read_text())["settings"]),
    lambda run, studies: run_pages.run_record_markdown(json.loads((run / "run.json").read_text())),
    lambda run, studies: summaries.dataset_statement(pd.read_csv(run / "manifest.csv")),
    lambda run, studies: [summaries.training_summary(run, model_id) for model_id in config.REGISTRY],
    lambda run, studies: [batchnorm_check.check_markdown(run, model_id) for model_id in config.REGISTRY
                          if batchnorm_check.has_check(run, model_id)],
)


@pytest.fixture
def published_copy(tmp_path):
    """A copy of the run published in the book (no model weights, dataset-relative image paths)."""
    if not (PUBLISHED / "run.json").is_file():
        pytest.skip("no published run in book/executed/results")
    return Path(shutil.copytree(PUBLISHED, tmp_path / "published"))


@pytest.fixture
def studies_copy(tmp_path):
    """A copy of the seed and remedy studies published in the book."""
    if not (STUDIES / "remedy" / "study.json").is_file():
        pytest.skip("no published studies in book/studies")
    return Path(shutil.copytree(STUDIES, tmp_path / "studies"))


def _parsed_templates() -> dict:
    environment = prose.ENVIRONMENT
    return {name: environment.parse(environment.loader.get_source(environment, name)[0])
            for name in environment.list_templates()}


def test_every_template_is_used_and_given_exactly_the_values_it_names(published_copy, studies_copy, monkeypatch):
    passed = {}
    render = prose.render

    def recording(template, **values):
        assert passed.setdefault(template, set(values)) == set(values), f"{template} is given different values"
        return render(template, **values)

    monkeypatch.setattr(prose, "render", recording)
    for page in PAGES:
        page(published_copy, studies_copy)
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


def test_the_remedy_page_without_a_pair_says_what_to_run(studies_copy):
    """The branch the published studies do not reach: no model complete in both studies."""
    shutil.rmtree(studies_copy / "remedy" / "seed-42")
    assert study_publish.remedy_page(studies_copy, figures=False).startswith("No model of the remedy study")
