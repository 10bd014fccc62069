"""A new model kind plugs in through its folder alone: `tests/toy_presence/`, a tiny image-level
classifier in the built-in kinds' layout, goes through train -> evaluate -> predict -> export
-> ONNX -> serve -> stream without a line of the entry points knowing it exists and without
being registered by hand (its LightningModule's folder names it). The layout itself is
checked for every built-in kind."""

from __future__ import annotations

import io
import json
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf, open_dict
from PIL import Image

import defects
from defects import kinds
from defects.kinds import builtin_kinds, get_kind, kind_in_package, kind_of
from defects.kinds.base import KIND_PARTS
from defects.stream import LiveStream, StreamConfig
from defects.video.frames import write_video
from tests.conftest import compose_config, weld_overrides

TOY = "tests.toy_presence"
KIND_PACKAGES = {**builtin_kinds(), "toy_presence": TOY}


@pytest.mark.parametrize("name", sorted(KIND_PACKAGES))
def test_every_kind_folder_has_the_same_parts_and_its_name(name: str) -> None:
    package = KIND_PACKAGES[name]
    folder = Path(__import__(package, fromlist=["kind"]).__file__).parent
    missing = [p for p in KIND_PARTS if not (folder / f"{p}.py").is_file()]
    assert not missing, f"{folder} lacks {missing}"
    kind = kind_in_package(package)
    assert kind.name == folder.name == name
    modules = __import__(f"{package}.module", fromlist=["*"])
    lightning = [
        v
        for v in vars(modules).values()
        if isinstance(v, type) and v.__module__ == modules.__name__ and hasattr(v, "training_step")
    ]
    assert len(lightning) == 1, f"{package}.module: one LightningModule, found {lightning}"
    assert kind_of(lightning[0]) is kind


def test_builtin_kinds_are_found_without_a_table() -> None:
    assert set(builtin_kinds()) == {"fasterrcnn", "gated", "yolo"}
    assert "detection" not in builtin_kinds()  # the box kinds' shared parts, not a kind


def test_older_bundles_names_are_aliases() -> None:
    assert get_kind("detector") is get_kind("fasterrcnn")
    assert get_kind("gated_segmentation") is get_kind("segmenter") is get_kind("gated")


def test_a_module_outside_a_kind_folder_is_refused() -> None:
    with pytest.raises(ValueError, match="lives in <kind folder>/module.py"):
        kind_of(Image.Image())


def test_an_installed_package_names_its_kind_by_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plugin = EntryPoint(name="toy_presence", value=TOY, group=kinds.ENTRY_POINT_GROUP)
    monkeypatch.setattr(kinds, "entry_points", lambda group: [plugin])
    monkeypatch.delitem(kinds._KINDS, "toy_presence", raising=False)
    assert get_kind("toy_presence").name == "toy_presence"
    monkeypatch.setattr(kinds, "entry_points", lambda group: [])
    monkeypatch.delitem(kinds._KINDS, "toy_presence")
    with pytest.raises(ValueError, match="unknown model kind 'toy_presence'"):
        get_kind("toy_presence")


@pytest.fixture(scope="module")
def toy_run(weld_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("toy")
    cfg = compose_config(weld_overrides(weld_root, out))
    with open_dict(cfg):
        cfg.model = OmegaConf.create(
            {
                "_target_": f"{TOY}.module.ToyModule",
                "class_names": "${class_names}",
                "optimizer": "${optimizer}",
                "scheduler": "${scheduler}",
                "monitor": "val/accuracy",
            }
        )
    from defects.train import train

    metrics = train(cfg)
    return {"out": out, "cfg": cfg, "metrics": metrics}


def test_a_kind_folder_goes_through_every_entry_point(
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

    # The live stream: the toy's results draw and count themselves (a failure is a lost frame).
    frame = np.repeat(np.asarray(Image.open(path).convert("L"))[:, :, None], 3, axis=2)
    video = write_video(tmp_path / "line.mp4", [frame] * 12, fps=12.0)
    with LiveStream(onnx, StreamConfig(source=str(video), loop=False, realtime=False)) as live:
        deadline = time.monotonic() + 30
        while live.stats.published < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats, latest = live.snapshot(), live.latest()
    assert stats["frames"]["published"] >= 5 and stats["frames"]["errors"] == 0, stats
    assert set(stats["detections"]["total"]) <= set(onnx.class_names)
    assert latest is not None and Image.open(io.BytesIO(latest.jpeg)).size == Image.open(path).size


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'nope'.*fasterrcnn"):
        get_kind("nope")
