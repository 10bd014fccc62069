"""A new model kind plugs in through the registry alone: a tiny image-level classifier of its
own, registered here, goes through train -> evaluate -> predict -> export -> ONNX -> serve
without a line of the entry points knowing it exists."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, open_dict
from PIL import Image
from torch import nn

import defects
from defects.data.transforms import to_tensor
from defects.kinds import get_kind, register
from defects.kinds.base import ModelKind, Predictor, Report, bundle_meta, split_prefix
from defects.kinds.schedule import configure_optimizers
from defects.reports import write_metrics_json
from tests.conftest import compose_config, weld_overrides

CLASSES = ["porosity", "crack", "lack_of_fusion", "slag_inclusion"]


class ToyNet(nn.Module):
    """Image -> one presence logit per class."""

    def __init__(self, num_classes: int, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=4), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()
        )
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ToyModule(L.LightningModule):
    kind = "toy_presence"

    def __init__(
        self,
        class_names: list[str],
        optimizer: Any = None,
        scheduler: Any = None,
        monitor: str = "val/accuracy",
    ):
        super().__init__()
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler"])
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.net = ToyNet(len(class_names))

    @staticmethod
    def presence(targets: list[dict], k: int) -> torch.Tensor:
        out = torch.zeros(len(targets), k)
        for i, t in enumerate(targets):
            out[i, t["labels"] - 1] = 1.0
        return out

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, targets = batch
        x = torch.stack([F_resize(i) for i in images])
        logits = self.net(x)
        truth = self.presence(targets, logits.shape[1])
        return nn.functional.binary_cross_entropy_with_logits(logits, truth), logits, truth

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self._step(batch)
        self.log("train/loss", loss, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        _, logits, truth = self._step(batch)
        accuracy = ((logits > 0).float() == truth).float().mean()
        self.log("val/accuracy", accuracy, batch_size=len(batch[0]))

    def configure_optimizers(self) -> dict:
        return configure_optimizers(
            self, self.parameters(), self.optimizer_factory, self.scheduler_factory
        )


def F_resize(image: torch.Tensor) -> torch.Tensor:  # noqa: N802 - mirrors torch's F.*
    """Every image to 64x64, inside the network's view (the predictor does the same)."""
    return nn.functional.interpolate(image[None], size=(64, 64), mode="bilinear")[0]


@dataclass
class Presence:
    """Which classes the image shows, with their probabilities."""

    probs: np.ndarray
    class_names: list[str]
    threshold: float

    @property
    def present(self) -> list[str]:
        return [n for n, p in zip(self.class_names, self.probs, strict=True) if p >= self.threshold]

    def record(self) -> dict[str, Any]:
        return {"present": self.present, "probs": [float(p) for p in self.probs]}

    def table(self) -> tuple[list[str], list[tuple[int, list[Any]]]]:
        return ["class", "probability"], [
            (k, [n, f"{p:.3f}"])
            for k, (n, p) in enumerate(zip(self.class_names, self.probs, strict=True))
        ]

    def headline(self) -> str:
        return f"Present: {', '.join(self.present) or 'none'}."

    def overlay(self, image: np.ndarray) -> np.ndarray:
        return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image.copy()


class ToyPredictor(Predictor):
    kind = "toy_presence"
    main_threshold = "presence"

    def __init__(self, meta: dict[str, Any], runner: Any, backend: str = "eager"):
        super().__init__(meta, backend)
        self.runner = runner

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[Any]) -> list[Presence]:
        x = torch.stack([F_resize(to_tensor(self.decode(i))) for i in images])
        probs = torch.sigmoid(self.runner(x)).numpy()
        return [Presence(p, self.class_names, float(self.thresholds["presence"])) for p in probs]


class OnnxRunner:
    def __init__(self, path: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"image": x.numpy()})[0])


class ToyKind(ModelKind):
    name = "toy_presence"
    predictor_class = ToyPredictor

    def bundle_from_module(self, module: Any, cfg: Any) -> dict[str, Any]:
        names = list(module.hparams.class_names)
        return {
            "model": {"kind": self.name, "kwargs": {"num_classes": len(names)}},
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
        torch.onnx.export(
            self.network(bundle),
            (torch.rand(1, 1, 64, 64),),
            str(folder / "toy.onnx"),
            input_names=["image"],
            dynamic_axes={"image": {0: "batch"}},
            dynamo=False,
        )
        return {"graphs": ["toy.onnx"]}

    def onnx_predictor(self, folder: Path, manifest: dict[str, Any], threads: int = 0) -> Any:
        return ToyPredictor(manifest["bundle"], OnnxRunner(folder / "toy.onnx"), "onnx")

    def evaluate(self, predictor: Any, datamodule: Any, split: str) -> Report:
        samples = datamodule.eval_samples(split)
        results = predictor.predict_batch([s.image for s in samples])
        correct = [
            set(r.present) == {predictor.class_names[c] for c in datamodule.truth(s)["class_ids"]}
            for s, r in zip(samples, results, strict=True)
        ]
        prefix = split_prefix(split)
        return Report({f"{prefix}/exact_match": float(np.mean(correct))}, prefix)

    def write_report(self, report: Report, class_names, metrics_json, plots_dir) -> list[Path]:
        return [write_metrics_json(report.metrics, report.prefix, metrics_json)]


@pytest.fixture(scope="module")
def toy_run(weld_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    register(ToyKind())
    out = tmp_path_factory.mktemp("toy")
    cfg = compose_config(weld_overrides(weld_root, out))
    with open_dict(cfg):
        cfg.model = OmegaConf.create(
            {
                "_target_": f"{__name__}.ToyModule",
                "class_names": "${class_names}",
                "optimizer": "${optimizer}",
                "scheduler": "${scheduler}",
                "monitor": "val/accuracy",
            }
        )
    from defects.train import train

    metrics = train(cfg)
    return {"out": out, "cfg": cfg, "metrics": metrics}


def test_a_registered_kind_goes_through_every_entry_point(
    toy_run: dict, weld_root: Path, tmp_path: Path
) -> None:
    from defects.cli import export, predict
    from defects.evaluate import evaluate
    from defects.serve import create_app

    out, cfg = toy_run["out"], toy_run["cfg"]
    assert "val/accuracy" in toy_run["metrics"] and "val/exact_match" in toy_run["metrics"]
    bundle = out / "model_dir" / "bundle.pt"
    assert get_kind("toy_presence").name == "toy_presence"

    with open_dict(cfg):
        cfg.ckpt_path = str(bundle)
    reported = evaluate(cfg)
    assert json.loads((out / "metrics_dir" / "eval.json").read_text()) == {
        "exact_match": round(reported["test/exact_match"], 6)
    }

    images = weld_root / "test" / "images"
    report = Path(predict(str(bundle), str(images), str(tmp_path / "pred"), overlays=False))
    rows = json.loads(report.read_text())
    assert set(rows) == {p.name for p in images.glob("*.png")}

    folder = Path(export(str(bundle), output=str(tmp_path / "onnx")))
    onnx = defects.load(folder)
    eager = defects.load(bundle)
    assert onnx.backend == "onnx" and eager.backend == "eager"
    for path in sorted(images.glob("*.png")):
        np.testing.assert_allclose(onnx.predict(path).probs, eager.predict(path).probs, atol=1e-5)
    assert defects.load(bundle, backend="onnx").predict(path).present == eager.predict(path).present

    client = create_app(onnx).test_client()
    assert client.get("/health").get_json()["kind"] == "toy_presence"
    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    body = client.post(
        "/api/predict",
        data={"image": (io.BytesIO(buffer.getvalue()), path.name)},
        content_type="multipart/form-data",
    ).get_json()
    assert body["image"] == path.name and body["present"] == rows[path.name]["present"]
    assert body["probs"] == pytest.approx(rows[path.name]["probs"], abs=1e-5)  # ONNX vs eager
    page = client.post(
        "/predict",
        data={"image": (io.BytesIO(buffer.getvalue()), path.name)},
        content_type="multipart/form-data",
    )
    assert page.status_code == 200 and "probability" in page.get_data(as_text=True)


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'nope'.*fasterrcnn"):
        get_kind("nope")
