"""`python -m defects.pipe STAGE [overrides]`: one stage of the pipe task (see stages.py).

STAGE is import, clean, layouts, baselines, refine, final, evaluate or all (the same as the
override ``stage=STAGE``); ``task=pipe`` is implied unless a task or experiment is given.
Like `defects.train`, a Hydra app on the shared config tree.
"""

import sys

import hydra
from omegaconf import DictConfig

from defects.pipe.stages import STAGES, run_stage
from defects.runtime import run_entry
from defects.settings import start_app


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(run_stage, cfg)


def _args(argv: list[str]) -> list[str]:
    """A leading STAGE becomes ``stage=STAGE``; ``task=pipe`` unless a task is chosen."""
    args = list(argv)
    if args and args[0] in (*STAGES, "all"):
        args[0] = f"stage={args[0]}"
    if not any(a.split("=", 1)[0].lstrip("+~") in ("task", "experiment") for a in args):
        args.insert(0, "task=pipe")
    return args


if __name__ == "__main__":
    sys.argv[1:] = _args(sys.argv[1:])
    start_app(main)
