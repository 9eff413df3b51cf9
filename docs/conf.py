"""Sphinx configuration: MyST pages, executed MyST-markdown notebooks, API pages from docstrings.

Build: ``pip install -e '.[docs]' && sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import os

os.environ.setdefault("JAXREG_NOTEBOOK_QUICK", "1")

project = "jaxreg"
author = "the jaxreg developers"
copyright = "2026, the jaxreg developers"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

autosummary_generate = True
autosummary_ignore_module_all = False  # a module's public names are its __all__
autodoc_default_options = {"members": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # every tutorial runs on every build (a failing cell fails it)
nb_execution_timeout = 600
nb_execution_raise_on_error = True

html_theme = "furo"
html_title = "jaxreg"


# --- API reference: one page per public name, generated from each module's __all__ ---------

API_MODULES = [
    "jaxreg.data",
    "jaxreg.training",
    "jaxreg.training.batch_transforms",
    "jaxreg.training.early_stopping",
    "jaxreg.training.checkpoints",
    "jaxreg.tasks",
    "jaxreg.calling",
    "jaxreg.losses",
    "jaxreg.penalties",
    "jaxreg.prox",
    "jaxreg.transforms",
    "jaxreg.averaging",
    "jaxreg.jacobian",
    "jaxreg.masks",
    "jaxreg.noise",
    "jaxreg.labels",
    "jaxreg.augment.image",
    "jaxreg.augment.signal",
    "jaxreg.augment.text",
    "jaxreg.augment.audio",
    "jaxreg.augment.mix",
    "jaxreg.augment.compose",
    "jaxreg.nn",
    "jaxreg.nn.dropout",
    "jaxreg.ensembles",
    "jaxreg.metrics",
    "jaxreg.sharpness",
    "jaxreg.sharpness.hvp",
    "jaxreg.spectra",
    "jaxreg.generalization",
    "jaxreg.curvature",
    "jaxreg.laplace",
    "jaxreg.landscape",
    "jaxreg.sweeps",
    "jaxreg.stats",
    "jaxreg.io",
    "jaxreg.compilation",
    "jaxreg.progress",
    "experiments.study",
    "experiments.study.runner",
    "experiments.study.spec",
    "experiments.study.models",
    "experiments.study.bayes",
    "experiments.tour",
    "jaxreg.plots",
    "jaxreg.solvers",
]


def public_names(module_name: str) -> list[str]:
    """``__all__``; for a package without one, the public names its submodules export
    that it re-exports (``jaxreg.nn.MLP``)."""
    import importlib
    import pkgutil

    module = importlib.import_module(module_name)
    if hasattr(module, "__all__"):
        return sorted(module.__all__)
    names = set()
    for info in pkgutil.iter_modules(module.__path__, module_name + "."):
        if info.name.rsplit(".", 1)[-1].startswith("_"):
            continue
        sub = importlib.import_module(info.name)
        names.update(n for n in getattr(sub, "__all__", ()) if hasattr(module, n))
    return sorted(names)


def defining_module(module_name: str, name: str) -> str:
    """The module whose source assigns ``name`` (its ``#:`` comment is the documentation):
    ``module_name`` itself, or for a package the submodule that exports the name."""
    import importlib
    import pkgutil

    module = importlib.import_module(module_name)
    if name in getattr(module, "__all__", ()) or not hasattr(module, "__path__"):
        return module_name
    for info in pkgutil.iter_modules(module.__path__, module_name + "."):
        if name in getattr(importlib.import_module(info.name), "__all__", ()):
            return info.name
    return module_name


def is_documented_object(obj) -> bool:
    """Functions and classes defined in jaxreg or its research scripts (``experiments``)
    carry their own docstring (an autosummary page); anything else (a dict, a number, a
    typing alias) is documented by the ``#:`` comment above its assignment."""
    return callable(obj) and getattr(obj, "__module__", "").startswith(("jaxreg", "experiments"))


def _write_api_page() -> None:
    import importlib
    from pathlib import Path

    lines = [
        "# API reference",
        "",
        "Every public name, one page each, rendered from its docstring (with its example).",
        "Constants and type aliases are documented where their module is.",
        "",
        "Every example runs as a doctest in the test suite. They assume "
        "`import jax, jax.numpy as jnp, numpy as np, optax`, `from flax import nnx` and the "
        "names of the module they are in (e.g. `from jaxreg.metrics import *`).",
        "",
    ]
    for module_name in API_MODULES:
        module = importlib.import_module(module_name)
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
        public = [
            n for n in public_names(module_name) if not isinstance(getattr(module, n), type(module))
        ]
        names = [n for n in public if is_documented_object(getattr(module, n))]
        data = [n for n in public if n not in names]
        if not public:
            continue
        lines += [f"## `{module_name}`", "", summary, ""]
        if names:
            lines += [
                "```{eval-rst}",
                f".. currentmodule:: {module_name}",
                "",
                ".. autosummary::",
                "   :toctree: generated",
                "",
                *[f"   {n}" for n in names],
                "```",
                "",
            ]
        for n in data:
            lines += [
                "```{eval-rst}",
                f".. autodata:: {defining_module(module_name, n)}.{n}",
                "   :no-value:",
                "```",
                "",
            ]
    Path(__file__).with_name("api.md").write_text("\n".join(lines))


_write_api_page()
