"""Sphinx configuration: the API reference from the numpydoc docstrings, the executed
tutorials (sphinx-gallery runs docs/tutorials/*.py at build time) and the migration page.

Built with warnings as errors by ``make docs`` (and so by CI); see README "Documentation".
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Figures are drawn off screen (no display on CI).
os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).parent))

import permenrich  # noqa: E402

project = "permenrich"
author = "permenrich contributors"
release = version = permenrich.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_gallery.gen_gallery",
]

# The tutorials' sources: sphinx-gallery turns them into auto_tutorials/.
exclude_patterns = ["_build", "tutorials"]
autosummary_generate = True
autodoc_default_options = {"members": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/tutorial_",
    # By name (docs/_figures.py), so that the configuration stays picklable.
    "image_scrapers": ("_figures.permenrich_figures",),
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "show_memory": False,
    "write_computation_times": False,
    "plot_gallery": "True",
}

html_theme = "alabaster"
html_static_path: list[str] = []
