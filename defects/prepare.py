"""Prepare a task's dataset: `python -m defects.prepare task=weld`.

With the default config this generates the task's synthetic dataset (the embedded default
that lets `dvc repro` run anywhere); `prepare=voc` imports Pascal VOC, `prepare=none` only
checks that data is already in place. A preview of the data with its boxes is saved as a plot.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from defects.config import validate_config
from defects.data.synthetic import save_preview, save_steel_preview
from defects.formats.errors import FormatError
from defects.runtime import has_target, offline_environment, run_entry

log = logging.getLogger("defects")


def prepare(cfg: DictConfig) -> dict:
    offline_environment()
    validate_config(cfg, keys=("prepare",))
    data_dir = Path(cfg.paths.data_dir)
    if has_target(cfg.get("prepare")):
        summary = instantiate(cfg.prepare, out_dir=str(data_dir), _convert_="all")
    elif data_dir.is_dir():
        summary = {"existing": str(data_dir)}
    else:
        raise FormatError(data_dir, "no data here and no prepare step configured (prepare=...)")
    out_png = Path(cfg.paths.plots_dir) / "data_samples.png"
    train_dir = data_dir / "train"
    if (train_dir / "train.csv").is_file() or (train_dir / "masks").is_dir():
        preview = save_steel_preview(data_dir, out_png, class_names=list(cfg.class_names))
    else:
        preview = save_preview(data_dir, out_png, split="train")
    log.info("prepared %s: %s; preview %s", data_dir, json.dumps(summary), preview)
    return summary


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    run_entry(prepare, cfg)


if __name__ == "__main__":
    main()
