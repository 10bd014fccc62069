"""`defects score` on Ray Data: the records equal `defects predict`'s, an undecodable file is
an error row, a job killed mid-way resumes without loss or duplicate, S3 in and out (moto).

One local Ray (2 CPUs) serves the module; the killed job is a second driver (a subprocess of
`defects score --address`) on it, so Ray starts once.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from defects.bundle import save_bundle
from defects.cli import predict
from defects.export import export_bundle
from defects.score.cluster import connect, size_pool
from defects.score.parts import RECORDS, part_paths
from defects.score.run import score
from defects.score.storage import location
from tests.servers import moto_server
from tests.test_dvc_remote import bucket_client
from tests.test_fasterrcnn_onnx import TINY, make_detector, scene
from tests.test_predict_segmentation import (
    CLASS_NAMES,
    SMALL_H,
    H,
    W,
    make_segmentation_bundle,
    write_grey,
)

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "archive"
KEY = "score-test-key"
TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local Ray with 2 CPUs for the module (as `defects score` starts one); its address
    lets a second driver join it."""
    import ray

    connect(num_cpus=2)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX export of a segmentation bundle (see make_segmentation_bundle)."""
    folder = tmp_path_factory.mktemp("segmenter")
    return export_bundle(make_segmentation_bundle(folder / "bundle.pt"), folder / "onnx")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Faster R-CNN bundle whose every proposal counts (score threshold 0)."""
    detector = make_detector()
    return save_bundle(
        tmp_path_factory.mktemp("detector") / "bundle.pt",
        task="weld",
        model={"kind": "fasterrcnn", "kwargs": {"num_classes": 3, **TINY}},
        state_dict=detector.state_dict(),
        class_names=["porosity", "crack"],
        thresholds={"score": 0.0},
        input={"channels": 1},
    )


def strips(folder: Path, count: int, start: int = 0) -> list[Path]:
    """Grey strips, alternately full height (defective for the segmenter) and small."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_grey(folder / f"s{i:03d}.png", H if i % 2 else SMALL_H, W, i)
        for i in range(start, start + count)
    ]


def rows(output: Path) -> dict[str, dict[str, Any]]:
    table = pq.read_table(output / RECORDS)
    found = {row["path"]: row for row in table.to_pylist()}
    assert len(found) == table.num_rows, "a path written twice"
    return found


def test_detection_records_equal_predicts(ray_address: str, detector: Path, tmp_path: Path) -> None:
    """A bundle scored on ONNX Runtime (exported once by the driver) gives, per image, the
    very entry `defects predict --backend onnx` writes into detections.json."""
    import torch

    images = tmp_path / "images"
    images.mkdir()
    generator = torch.Generator().manual_seed(2)
    for name, (h, w) in {"a.png": (128, 160), "b.png": (96, 200)}.items():
        pixels = (scene(h, w, generator)[0].numpy() * 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / name)
    report = Path(
        predict(str(detector), str(images), str(tmp_path / "p"), overlays=False, backend="onnx")
    )
    expected = json.loads(report.read_text())

    summary = score(str(detector), str(images), str(tmp_path / "s"), actors=1)
    found = rows(tmp_path / "s")
    assert sorted(found) == [str(images / "a.png"), str(images / "b.png")]
    for path, row in found.items():
        record = json.loads(row["record"])
        assert record == expected[Path(path).name]
        assert len(record["detections"]) > 0  # the comparison is about boxes, not two []
        assert (row["width"], row["height"]) == Image.open(path).size
        assert row["model"] == "weld" and row["error"] is None
    assert summary["model"]["kind"] == "fasterrcnn" and summary["model"]["backend"] == "onnx"
    assert summary["images"] == 2 and summary["errors"] == 0 and summary["defective"] == 2


def test_segmentation_records_and_error_rows(
    ray_address: str, segmenter: Path, tmp_path: Path
) -> None:
    """Gate, class areas and RLE masks equal predict's summary.json and submission.csv; a
    file that does not decode is a row with its error, counted, and the job goes on."""
    images = tmp_path / "images"
    strips(images, 3)
    strips(images / "line2", 1, start=3)
    (images / "line2" / "broken.png").write_bytes(b"not a png")
    (images / "line2" / "empty.jpg").write_bytes(b"")
    (images / "notes.txt").write_text("not an image")
    predicted = Path(predict(str(segmenter), str(images), str(tmp_path / "p"), overlays=False))
    gates = json.loads((predicted.parent / "summary.json").read_text())
    with predicted.open() as handle:
        submission = {
            (r["ImageId"], r["ClassId"]): r["EncodedPixels"] for r in csv.DictReader(handle)
        }

    summary = score(str(segmenter), str(images), str(tmp_path / "s"), overlays=True, part_size=2)
    found = rows(tmp_path / "s")
    assert len(found) == 6
    for name, expected in gates.items():
        row = found[str(images / name)]
        record = json.loads(row["record"])
        assert round(record["gate"], 4) == expected["gate"]
        areas = {cls: mask["area"] for cls, mask in record["classes"].items()}
        assert areas == {cls: area for cls, area in expected["areas"].items() if area}
        for cls, mask in record["classes"].items():
            assert mask["rle"] == submission[(name, str(CLASS_NAMES.index(cls) + 1))]
        assert record["shape"] == [row["height"], row["width"]]
        assert row["defective"] == bool(areas)
        assert (tmp_path / "s" / "overlays" / f"{name}.png").is_file()
    assert sum(bool(json.loads(r["record"])["classes"]) for r in found.values() if r["record"]) == 2
    broken = found[str(images / "line2" / "broken.png")]
    assert broken["record"] is None and broken["width"] is None
    assert "broken.png: cannot decode image" in broken["error"]
    assert "empty.jpg: empty (0 bytes)" in found[str(images / "line2" / "empty.jpg")]["error"]
    assert found[str(images / "line2" / "s003.png")]["defective"] is True
    assert (tmp_path / "s" / "overlays" / "line2" / "s003.png.png").is_file()
    assert summary["images"] == 6 and summary["errors"] == 2 and summary["defective"] == 2
    assert summary["per_class"]["pits"] == {"images": 2, "findings": 2}
    assert summary["per_class"]["inclusion"] == {"images": 0, "findings": 0}
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["images"] == 6
    assert len(part_paths(location(str(tmp_path / "s" / RECORDS), "out"))) >= 3


def test_a_killed_job_resumes_without_loss_or_duplicate(
    ray_address: str, segmenter: Path, detector: Path, tmp_path: Path
) -> None:
    """SIGKILL the driver once a part is written; the restart scores only the rest, and a
    half-written part left behind never counts. Another model's scores never join them."""
    images = tmp_path / "images"
    everything = {str(p) for p in strips(images, 40)}
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "defects", "score", "--model", str(segmenter),
        "--input", str(images), "--output", str(out), "--address", ray_address,
        "--actors", "1", "--batch-size", "2", "--part-size", "2",
    ]  # fmt: skip
    log = (tmp_path / "driver.log").open("wb")
    driver = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    records = location(str(out / RECORDS), "out")
    deadline = time.monotonic() + TIMEOUT_S
    while not part_paths(records):
        assert driver.poll() is None, (tmp_path / "driver.log").read_text()
        assert time.monotonic() < deadline, "no part written"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    settled = settle(records)  # Ray ends the dead driver's workers
    written = {
        p for part in settled for p in pq.read_table(part, columns=["path"])["path"].to_pylist()
    }
    assert 0 < len(written) < len(everything), "the kill came after the job finished"
    half = out / RECORDS / ".part-0123.parquet.tmp-cafe.parquet"
    half.write_bytes(b"PAR1 half a part")

    summary = score(str(segmenter), str(images), str(out), actors=1, part_size=4)
    assert summary["run"]["images"] == len(everything) - len(written)
    assert set(rows(out)) == everything
    assert summary["images"] == len(everything) and summary["duplicates"] == 0
    assert not half.exists()
    again = score(str(segmenter), str(images), str(out), actors=1)
    assert again["run"]["images"] == 0 and again["images"] == len(everything)
    with pytest.raises(ValueError, match="holds scores of steel version"):
        score(str(detector), str(images), str(out), backend="eager")


def settle(records: Any, quiet_s: float = 2.0) -> list[str]:
    """The committed parts once none has appeared for `quiet_s`."""
    parts, since = part_paths(records), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = part_paths(records)
        if now != parts:
            parts, since = now, time.monotonic()
    return parts


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's S3 on loopback, reached through the settings DVC uses (DEFECTS_S3_*)."""
    with moto_server(tmp_path) as endpoint:
        monkeypatch.setenv("DEFECTS_S3_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("DEFECTS_S3_ACCESS_KEY_ID", KEY)
        monkeypatch.setenv("DEFECTS_S3_SECRET_ACCESS_KEY", KEY)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        yield bucket_client(endpoint, BUCKET)


def test_s3_in_and_out(ray_address: str, segmenter: Path, s3: Any, tmp_path: Path) -> None:
    local = tmp_path / "images"
    for path in strips(local, 3):
        s3.upload_file(str(path), BUCKET, f"in/day1/{path.name}")
    s3.put_object(Bucket=BUCKET, Key="in/broken.png", Body=b"nope")
    summary = score(
        str(segmenter), f"s3://{BUCKET}/in", f"s3://{BUCKET}/out", overlays=True, part_size=2
    )
    assert summary["summary"] == f"s3://{BUCKET}/out/summary.json"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    parts = sorted(k for k in keys if k.startswith(f"out/{RECORDS}/part-"))
    assert parts and {"out/summary.json", "out/overlays/day1/s001.png.png"} <= keys
    out = location(f"s3://{BUCKET}/out", "out")
    table = pq.read_table(out.join(RECORDS), filesystem=out.fs)
    assert sorted(table["path"].to_pylist()) == [
        f"s3://{BUCKET}/in/broken.png",
        *(f"s3://{BUCKET}/in/day1/s{i:03d}.png" for i in range(3)),
    ]
    stored = json.loads(s3.get_object(Bucket=BUCKET, Key="out/summary.json")["Body"].read())
    assert stored["images"] == 4 and stored["errors"] == 1 and stored["defective"] == 1


def test_pool_fits_the_cores() -> None:
    assert size_pool(2) == size_pool(2, 1, 1)
    assert size_pool(2).actor_cpus == 1.0  # 1 of 2 CPUs stays for reading and decoding
    assert size_pool(16, threads=2).actors == 7  # 14 CPUs to actors, 2 to reading
    two = size_pool(2, actors=2)  # asked for: both fit, each reserving what is left
    assert two.actors == 2 and two.actor_cpus == 0.5
    with pytest.raises(ValueError, match="--actors must be at least 1"):
        size_pool(2, actors=0)


def test_bad_arguments_are_named(segmenter: Path, tmp_path: Path) -> None:
    images = tmp_path / "images"
    strips(images, 1)
    with pytest.raises(FileNotFoundError, match="--input: .* is not a folder"):
        score(str(segmenter), str(tmp_path / "nowhere"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--output: .* lies inside --input"):
        score(str(segmenter), str(images), str(images / "scores"))
    with pytest.raises(ValueError, match="only local folders and s3://"):
        score(str(segmenter), "gs://bucket/x", str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="--model: .* does not exist"):
        score(str(tmp_path / "none.pt"), str(images), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="--part-size must be at least 1"):
        score(str(segmenter), str(images), str(tmp_path / "out"), part_size=0)
    assert not (tmp_path / "out").exists()
