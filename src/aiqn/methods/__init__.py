"""One folder per method (a paper's models, objectives, train steps, figures and verbs).

A method's folder holds a `verbs.py` with `add_verbs(verb)`; `aiqn.cli` finds every such folder
here (`method_names`), so a new method needs no edit outside its folder, its rules file, its
params and schema sections (docs/adding-a-method.md). A method imports the core layers
(`aiqn.core`, `data`, `metrics`, `report`, `nets`, `pipeline`), never another method or the CLI.
"""

from __future__ import annotations

import pkgutil
from pathlib import Path


def method_names() -> list[str]:
    """The method folders beside this file, sorted."""
    return sorted(info.name for info in pkgutil.iter_modules([str(Path(__file__).parent)]) if info.ispkg)
