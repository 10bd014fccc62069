"""Prepare a task's dataset: `python -m defects.prepare task=weld`.

With the default config this generates the task's synthetic dataset (the embedded default
that lets `dvc repro` run anywhere); `prepare=voc` imports Pascal VOC, `prepare=none` only
checks that data is already in place. The task's DataModule draws a preview of the data
(boxes or masks) into a plot.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from defects.config import validate_config
from defects.formats.errors import FormatError
from defects.runtime import has_target, offline_environment, run_entry
from defects.settings import start_app

log = logging.getLogger("defects")


def prepare(cfg: DictConfig) -> dict:
    offline_environment()
    validate_config(cfg, keys=("prepare", "data"))
    data_dir = Path(cfg.paths.data_dir)
    if has_target(cfg.get("prepare")):
        summary = instantiate(cfg.prepare, out_dir=str(data_dir), _convert_="all")
    elif data_dir.is_dir():
        summary = {"existing": str(data_dir)}
    else:
        raise FormatError(data_dir, "no data here and no prepare step configured (prepare=...)")
    datamodule = instantiate(cfg.data, _convert_="all")  # knows its own layout
    preview = datamodule.save_preview(Path(cfg.paths.plots_dir) / "data_samples.png")
    log.info("prepared %s: %s; preview %s", data_dir, json.dumps(summary), preview)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(prepare, cfg)


if __name__ == "__main__":
    start_app(main)
