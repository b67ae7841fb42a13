"""MkDocs hook: ship MathJax inside the built site, so that math renders without a network.

MathJax 3 comes from a Python package (``django-static-mathjax``, in the ``docs`` extra: an
unmodified copy of MathJax's ``es5`` build). After every build this hook copies its single-file
``tex-svg-full`` component (every TeX extension, SVG output: no font files to fetch) to
``javascripts/vendor/mathjax/`` in the site, where ``mkdocs.yml``'s ``extra_javascript`` loads
it. Nothing is fetched at build time or when a page is read.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

COMPONENT = "tex-svg-full.js"
TARGET = Path("javascripts/vendor/mathjax") / COMPONENT


def mathjax_component() -> Path:
    """The installed MathJax component, or a PluginError saying what to install."""
    spec = importlib.util.find_spec("mathjax")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "static/mathjax/es5" / COMPONENT
        if path.is_file():
            return path
    raise PluginError(
        f"MathJax's {COMPONENT} was not found: install the docs extra "
        '(pip install -e ".[docs]", which brings django-static-mathjax)'
    )


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    mathjax_component()  # fail before building, not after
    return config


def on_post_build(config: MkDocsConfig) -> None:
    target = Path(config.site_dir) / TARGET
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(mathjax_component(), target)
