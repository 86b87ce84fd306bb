"""The studies in the book (book/seeds.md, book/remedy.md): a seed study and the same seed with the BatchNorm remedy,
published portable (no weights, no folder of the machine), their pages written from the published
numbers; the committed copy in book/studies/ is what its own files say. The slow test runs two
tiny studies on the real images (ResNet50 and the hybrid from scratch, so BatchNorm trains)."""

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cxr_utils import config, paper, portable, remedy, report
from cxr_utils.study import StudyError, main, publish

COMMITTED = Path(__file__).resolve().parents[1] / "book" / "studies"
BOOK = COMMITTED.parent


def _committed():
    if not (COMMITTED / "seeds" / "study.json").is_file():
        pytest.fail(f"{COMMITTED} holds no published study: publish one with `python -m cxr_utils.study publish`")
    return COMMITTED


def test_committed_pages_are_what_the_published_numbers_say():
    studies = _committed()
    for name, text in publish.render_pages(studies, figures=False).items():
        assert (studies / name).read_text() == text, f"{name} differs from its numbers: publish again"
    _assert_summary_files_match_seeds(studies / "seeds")


def _assert_summary_files_match_seeds(seeds_dir):
    from cxr_utils.study.summary import summary_tables

    expected = summary_tables(seeds_dir)
    for name, table in (("summary_metrics.csv", "metrics"), ("summary_verdicts.csv", "verdicts")):
        published = pd.read_csv(seeds_dir / name, dtype={"claim": str})
        pd.testing.assert_frame_equal(published, expected[table].reset_index(drop=True), check_dtype=False)


def test_committed_studies_name_no_machine_folder_and_keep_no_weights():
    studies = _committed()
    assert portable.machine_paths(studies) == []
    assert not list(studies.rglob("*.keras")) and not list(studies.rglob("manifest.csv"))
    for path in studies.rglob("*.csv"):
        table = pd.read_csv(path, nrows=5)
        if "path" in table:
            assert not table["path"].str.startswith("/").any(), path


def test_committed_figures_exist_and_a_page_of_the_book_includes_each():
    studies = _committed()
    figures = {page: [line.split(maxsplit=1)[1] for line in (studies / page).read_text().splitlines()
                      if line.startswith("```{figure}")] for page in publish.PAGES.values()}
    for named in figures.values():
        assert all((BOOK / figure).is_file() for figure in named)  # as the including page sees them
    if publish.remedy_pairs(studies):
        assert figures[publish.PAGES["remedy"]], "a remedy pair is published but its page shows no figure"
    assert figures[publish.PAGES["seeds"]] == [f"{publish.INCLUDED_AS}/{publish.SEED_CURVES_FIGURE}"]
    # Each page is included once, by a page in book/ itself (its figures are named from there), a
    # page of the table of contents; its headings start at level 2, under that page's title.
    toc = yaml.safe_load((BOOK.parent / "_toc.yml").read_text())
    listed = {chapter["file"] for part in toc["parts"] for chapter in part["chapters"]} | {toc["root"]}
    for page in [*publish.PAGES.values(), publish.GLANCE_PAGE]:
        including = [path for path in BOOK.rglob("*.md") if f"```{{include}} studies/{page}" in path.read_text()]
        assert [path.parent for path in including] == [BOOK], (page, including)
        assert f"book/{including[0].stem}" in listed, including[0]
        text = including[0].read_text()
        assert text.startswith("# ") or re.match(r"\(.+\)=\n# ", text), including[0]
        levels = [len(line) - len(line.lstrip("#")) for line in (studies / page).read_text().splitlines()
                  if re.match(r"#+ ", line)]
        assert not levels or min(levels) == 2, (page, levels)
    assert f"```{{include}} studies/{publish.GLANCE_PAGE}" in (BOOK / "intro.md").read_text()


def test_the_glance_gives_test_accuracy_over_the_seeds_beside_the_papers(tmp_path):
    studies = _committed()
    text = publish.glance_page(studies)
    seeds = json.loads((studies / "seeds" / "study.json").read_text())["settings"]["seeds"]
    folders = [studies / "seeds" / f"seed-{seed}" for seed in seeds if (studies / "seeds" / f"seed-{seed}").is_dir()]
    assert f"{len(folders)} seed" in text and "from scratch, so not the paper's ImageNet setting" in text
    assert "What no seed of this study could test: the paper's ImageNet weights." in text

    def mean_and_range(values):
        return f"{np.mean(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    header = re.search(r"^\| model +\|(.*)\|$", text, re.MULTILINE)
    assert [cell.strip() for cell in header.group(1).split("|")] == [
        "the paper's accuracy", "kept epoch: mean (range)", "last epoch: mean (range)",
        "seeds with validation near chance in some epoch"]
    for model_id, spec in config.REGISTRY.items():
        tested = [json.loads((folder / model_id / "metrics.json").read_text()) for folder in folders]
        unsteady = sum((pd.read_csv(folder / model_id / "history.csv")["val_accuracy"] <= report.NEAR_CHANCE + 1e-6).any()
                       for folder in folders)
        paper_accuracy = paper.table6().loc[spec.paper_name, "accuracy"]
        row = re.search(rf"^\| {re.escape(spec.paper_name)} +\|(.*)\|$", text, re.MULTILINE)
        assert [cell.strip() for cell in row.group(1).split("|")] == [
            f"{paper_accuracy:.2f}", mean_and_range([record["test"]["accuracy"] for record in tested]),
            mean_and_range([record["test_last_epoch"]["accuracy"] for record in tested]),
            f"{unsteady} of {len(folders)}"], spec.paper_name

    # Records without the last epoch's test (older runs): the kept epoch's column only.
    older = shutil.copytree(studies, tmp_path / "older")
    for path in (older / "seeds").glob("seed-*/*/metrics.json"):
        record = json.loads(path.read_text())
        record.pop("test_last_epoch", None)
        path.write_text(json.dumps(record))
    older_text = publish.glance_page(older)
    assert "kept epoch: mean (range)" in older_text and "last epoch" not in older_text

    # A study with ImageNet weights is not said to be outside the paper's setting.
    copy = shutil.copytree(studies, tmp_path / "studies")
    record = json.loads((copy / "seeds" / "study.json").read_text())
    record["settings"]["weights"] = "imagenet"
    (copy / "seeds" / "study.json").write_text(json.dumps(record))
    imagenet = publish.glance_page(copy)
    assert "ImageNet weights)" in imagenet and "not the paper's" not in imagenet and "no seed" not in imagenet


def test_remedy_seeds_are_those_both_studies_complete():
    studies = _committed()
    for seed, model_ids in publish.remedy_pairs(studies).items():
        table = remedy.remedy_table(*(studies / study / f"seed-{seed}" for study in publish.STUDIES))
        assert set(table["model_id"]) == set(model_ids)
        assert (table.loc[table.protocol == "remedy", remedy.OPTION] > 0).all()


def test_a_model_missing_from_the_remedy_study_is_named_not_compared(tmp_path):
    studies = shutil.copytree(_committed(), tmp_path / "studies")
    seed, model_ids = next(iter(publish.remedy_pairs(studies).items()), (None, None))
    if seed is None:
        pytest.fail("the committed remedy study has no model complete in both studies")
    dropped = model_ids[-1]
    (studies / "remedy" / f"seed-{seed}" / dropped / "metrics.json").unlink()
    assert publish.remedy_pairs(studies).get(seed, []) == model_ids[:-1]
    page = publish.remedy_page(studies, figures=False)
    missing = [line for line in page.splitlines() if line.startswith("Not compared yet for this seed")]
    assert len(missing) == 1 and config.model_spec(dropped).paper_name in missing[0].split(": ", 1)[1]
    assert f"seed-{seed}_{dropped}_remedy.png" not in page


def test_the_published_copy_published_again_gives_the_same_pages(tmp_path):
    """Publishing is a function of the numbers: the committed copy (relative image paths, no dataset
    listing) published again writes the same pages, figures and all."""
    studies = _committed()
    again = publish.publish_studies(studies / "seeds", studies / "remedy", tmp_path / "studies", log=lambda _: None)
    for name in [*publish.PAGES.values(), publish.GLANCE_PAGE]:
        assert (again / name).read_text() == (studies / name).read_text()
    assert sorted(p.name for p in (again / publish.FIGURES_DIR).iterdir()) == \
        sorted(p.name for p in (studies / publish.FIGURES_DIR).iterdir())
    assert portable.machine_paths(again) == []


def test_a_seed_without_a_finished_model_is_not_published(tmp_path):
    """A study still running holds the next seed's sample and split before any of its models: that
    seed is left out; a seed with a finished model is published and its page says it is not evaluated."""
    studies = _committed()
    seeds = shutil.copytree(studies / "seeds", tmp_path / "seeds")
    started = seeds / "seed-1001"
    started.mkdir()
    shutil.copy2(seeds / "seed-42" / "split.csv", started / "split.csv")
    halfway = shutil.copytree(seeds / "seed-42", seeds / "seed-1002", ignore=shutil.ignore_patterns("evaluation"))
    book = publish.publish_studies(seeds, studies / "remedy", tmp_path / "book", log=lambda _: None)
    assert not (book / "seeds" / "seed-1001").exists() and (book / "seeds" / halfway.name).is_dir()
    page = (book / publish.PAGES["seeds"]).read_text()
    assert "Left out, not evaluated yet: seed 1002." in page and "1001" not in page


def test_the_published_summary_files_are_those_of_the_published_seeds(tmp_path):
    """A study's summary files are written when its command ends; published halfway through a
    study, they would lag behind its seeds: the published ones are written from the seeds published."""
    studies = _committed()
    seeds = shutil.copytree(studies / "seeds", tmp_path / "seeds")
    stale = pd.read_csv(seeds / "summary_metrics.csv")
    stale.iloc[:0].to_csv(seeds / "summary_metrics.csv", index=False)  # as if written before any seed
    (seeds / "summary_verdicts.csv").unlink()
    book = publish.publish_studies(seeds, studies / "remedy", tmp_path / "book", log=lambda _: None)
    _assert_summary_files_match_seeds(book / "seeds")
    assert len(pd.read_csv(book / "seeds" / "summary_metrics.csv")) == len(stale)
    assert (seeds / "summary_metrics.csv").read_text().count("\n") == 1  # the study's own folder untouched


def test_publish_refuses_a_folder_that_is_no_study(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["publish", "--seeds", str(tmp_path / "empty"), "--remedy", str(tmp_path / "empty"),
                 "--book-dir", str(tmp_path / "book")]) == 2
    assert "holds no seed-N folder" in capsys.readouterr().err
    assert not (tmp_path / "book").exists()


# -- two tiny studies on the real images (slow) ---------------------------------------------------


def _study(out, real_data, *overrides):
    argv = ["seeds", "--seed-list", "42", "--data-dir", str(real_data), "--out", str(out)]
    for item in ("n_per_class=8", "epochs=2", "batch_size=8", "image_size=32", "weights=None", *overrides):
        argv += ["-p", item]
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(argv) == 0, stdout.getvalue()


@pytest.mark.slow
def test_two_tiny_studies_publish_portable_with_pages_from_their_numbers(real_subset, tmp_path, monkeypatch):
    _study(tmp_path / "seeds", real_subset)
    _study(tmp_path / "remedy", real_subset, "recompute_batchnorm_images=8")
    book = tmp_path / "book" / "studies"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    assert main(["publish", "--seeds", str(tmp_path / "seeds"), "--remedy", str(tmp_path / "remedy"),
                 "--book-dir", str(book)]) == 0
    assert all(path.read_bytes() == data for path, data in before.items())  # the studies are not touched
    assert portable.machine_paths(book, [str(tmp_path), str(real_subset)]) == []
    assert not list(book.rglob("*.keras"))
    split = pd.read_csv(book / "seeds" / "seed-42" / "split.csv")
    assert len(split) == 16 and not split["path"].str.startswith("/").any()

    pages = publish.render_pages(book, figures=False)
    assert all((book / name).read_text() == text for name, text in pages.items())
    seeds_page, remedy_page = pages[publish.PAGES["seeds"]], pages[publish.PAGES["remedy"]]
    assert seeds_page.startswith("## Seed study: 1 seed") and "\n### Test metrics over the seeds" in seeds_page
    assert "\n## Seed 42\n" in remedy_page and "from 8 training images" in remedy_page
    for model_id in ("resnet50", "resnet50_lstm"):  # BatchNorm trains from scratch: both figures
        for name in (f"seed-42_{model_id}_paper_protocol.png", f"seed-42_{model_id}_remedy.png"):
            assert (book / publish.FIGURES_DIR / name).stat().st_size > 0
            assert f"```{{figure}} {publish.INCLUDED_AS}/{publish.FIGURES_DIR}/{name}" in remedy_page
    assert not (book / publish.FIGURES_DIR / "seed-42_lstm_remedy.png").exists()  # the LSTM has no BatchNorm
    record = json.loads((book / "seeds" / "study.json").read_text())
    assert record["settings"]["seeds"] == [42] and set(record["runs"]["42"]) == set(config.REGISTRY)

    # Published again over itself, the earlier copy is replaced whole; a remedy study whose runs
    # differ in more than the option is refused and leaves the published copy as it was.
    shutil.copytree(tmp_path / "remedy", tmp_path / "other")
    run_json = tmp_path / "other" / "seed-42" / "resnet50" / "run.json"
    record = json.loads(run_json.read_text())
    record["settings"]["training"]["epochs"] = 3
    run_json.write_text(json.dumps(record))
    published = {p: p.read_bytes() for p in book.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="differ in training.epochs"):
        publish.publish_studies(tmp_path / "seeds", tmp_path / "other", book)
    assert {p: p.read_bytes() for p in book.rglob("*") if p.is_file()} == published

    # A published study copied back resumes: no model is trained again, the verdicts are the same.
    from cxr_utils import training

    def must_not_train(*args, **kwargs):
        raise AssertionError("a model of the published study was trained again")

    monkeypatch.setattr(training, "run_experiment", must_not_train)
    resumed = shutil.copytree(book / "seeds", tmp_path / "resumed")
    _study(resumed, real_subset)
    for name in ("verdicts.csv", "metrics.csv"):
        assert (resumed / "seed-42" / "evaluation" / name).read_bytes() == \
            (book / "seeds" / "seed-42" / "evaluation" / name).read_bytes()


def test_no_study_record_is_a_clear_error(tmp_path):
    (tmp_path / "seeds" / "seed-42").mkdir(parents=True)
    with pytest.raises(StudyError, match="study.json not found"):
        publish.publish_studies(tmp_path / "seeds", tmp_path / "seeds", tmp_path / "book")
