"""The toy kind: bundle <-> ToyNet <-> ToyPredictor <-> ONNX graph. Its name, toy_presence,
is this folder's: written nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from defects.kinds.base import EvalData, ModelKind, Report, bundle_meta, split_prefix
from defects.reports import write_metrics_json
from tests.toy_presence.export import export_toy
from tests.toy_presence.net import ToyNet
from tests.toy_presence.predictor import OnnxRunner, ToyPredictor


class ToyKind(ModelKind):
    def bundle_from_module(self, module: Any, cfg: Any) -> dict[str, Any]:
        names = list(module.hparams.class_names)
        return {
            "model": {"kwargs": {"num_classes": len(names)}},
            "state_dict": module.net.state_dict(),
            "class_names": names,
            "thresholds": {"presence": 0.5},
            "input": {"channels": 1},
        }

    def build_network(self, kwargs: dict[str, Any]) -> nn.Module:
        return ToyNet(**kwargs)

    def predictor(self, bundle: dict[str, Any], device: str = "cpu") -> ToyPredictor:
        return ToyPredictor(bundle_meta(bundle), self.network(bundle))

    def export_graphs(self, bundle: dict[str, Any], folder: Path) -> dict[str, Any]:
        export_toy(self.network(bundle), folder / "toy.onnx")
        return {"graphs": ["toy.onnx"]}

    def onnx_predictor(
        self, folder: Path, manifest: dict[str, Any], threads: int = 0
    ) -> ToyPredictor:
        return ToyPredictor(manifest["bundle"], OnnxRunner(folder / "toy.onnx"), "onnx")

    def evaluate(self, predictor: ToyPredictor, datamodule: EvalData, split: str) -> Report:  # type: ignore[override]
        """Exact-match accuracy: the classes shown are exactly the classes boxed."""
        samples = datamodule.eval_samples(split)
        results = predictor.predict_many([s.image for s in samples])
        correct = [
            set(r.present) == {predictor.class_names[c] for c in datamodule.truth(s)["class_ids"]}
            for s, (_, r) in zip(samples, results, strict=True)
        ]
        prefix = split_prefix(split)
        return Report({f"{prefix}/exact_match": float(np.mean(correct))}, prefix)

    def write_report(
        self, report: Report, class_names: list[str], metrics_json: Path, plots_dir: Path
    ) -> list[Path]:
        return [write_metrics_json(report.metrics, report.prefix, metrics_json)]


KIND = ToyKind()
