"""A sphinx-gallery image scraper for :mod:`permenrich.pl`.

The figure functions build ``matplotlib.figure.Figure`` objects without pyplot (they
change no global state), so the default scraper, which asks pyplot for its open figures,
sees none. This one saves every Figure newly bound to a name of the tutorial.
"""

from __future__ import annotations

from typing import Any

#: Figures already shown (kept alive, so that a new figure never reuses an old one's id).
_seen: dict[int, Any] = {}


def permenrich_figures(block: Any, block_vars: dict, gallery_conf: dict) -> str:
    """Save the tutorial's new figures and return the reST that shows them."""
    from matplotlib.figure import Figure
    from sphinx_gallery.scrapers import figure_rst

    paths = []
    for value in list(block_vars["example_globals"].values()):
        if isinstance(value, Figure) and id(value) not in _seen:
            _seen[id(value)] = value
            path = next(block_vars["image_path_iterator"])
            value.savefig(path, dpi=80)
            paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
