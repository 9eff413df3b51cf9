"""The docs build's configuration: what CI builds with warnings as errors."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_builds_the_docs_with_warnings_as_errors_and_executed_tutorials():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "sphinx-build -W --keep-going" in ci
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert 'nb_execution_mode = "force"' in conf and "nb_execution_raise_on_error = True" in conf
    index = (ROOT / "docs" / "index.md").read_text()
    for page in (
        "tutorials/overfitting",
        "tutorials/sweep",
        "tutorials/sharpness",
        "tutorials/ensembles",
        "api",
        "tour_report",
    ):
        assert page in index
    # The sharpness tutorial is the repository's notebook, not a copy that could drift.
    link = ROOT / "docs" / "tutorials" / "sharpness.ipynb"
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks" / "sharpness.ipynb")


def test_readme_links_the_docs_and_gives_the_build_command():
    readme = (ROOT / "README.md").read_text()
    assert "sphinx-build -W --keep-going -b html docs docs/_build/html" in readme
    assert "pip install -e '.[docs]'" in readme
