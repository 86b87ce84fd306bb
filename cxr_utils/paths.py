"""Where the project's own files are: the repository, its notebooks, the book's folders that a run
and the studies are published into, and the repository's address (``_config.yml``, the one place
it is written). No import beyond the standard library: every module may import this one.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BOOK_EXECUTED_DIR = REPO_ROOT / "book" / "executed"  # a published run (cxr_utils.publish)
BOOK_STUDIES_DIR = REPO_ROOT / "book" / "studies"  # the published studies (cxr_utils.study.publish)
BOOK_CONFIG = REPO_ROOT / "_config.yml"


def repository_url(config_path: Path = BOOK_CONFIG) -> str:
    """The repository's address, as the book's ``_config.yml`` names it."""
    import yaml  # read only here: importing this module stays free of third-party packages

    return yaml.safe_load(Path(config_path).read_text())["repository"]["url"]
