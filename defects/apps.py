"""The Hydra apps as verbs of the one command: `defects train ARGS` is `python -m defects.train
ARGS`, word for word (overrides, `-m` sweeps, `--help`, `--cfg job`).

Each app runs as `python -m` would run it (`runpy`, as `__main__`), so what the module does
under ``if __name__ == "__main__"`` happens too (the pipe's leading STAGE word), Hydra finds
its config folder beside the module, and Lightning's DDP launcher restarts the workers as
`python -m defects.train ARGS`.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence

# verb -> the module `python -m` runs
APPS = {
    "prepare": "defects.prepare",
    "train": "defects.train",
    "evaluate": "defects.evaluate",
    "pipe": "defects.pipe",
}

__all__ = ["APPS", "run_app"]


def run_app(verb: str, args: Sequence[str]) -> None:
    """Run the app of `verb` with `args` as its command line; sys.argv is restored after."""
    if verb not in APPS:
        raise ValueError(f"'{verb}' is not one of {', '.join(APPS)}")
    argv = sys.argv
    sys.argv = [f"defects {verb}", *args]
    try:
        runpy.run_module(APPS[verb], run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
