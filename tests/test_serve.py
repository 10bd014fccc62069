"""The Flask page and JSON API, through Flask's test client (no server, no network)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image

from defects.formats.severstal import rle_decode
from defects.kinds.gated.predictor import SegmentationPredictor
from defects.predict import load
from defects.results import Detections
from defects.serve import create_app
from tests.conftest import torch_threads
from tests.test_predict_segmentation import CLASS_NAMES, H, W, make_segmentation_bundle


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny images: extra threads only add sync overhead, and much more on a busy machine."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> SegmentationPredictor:
    predictor = load(make_segmentation_bundle(tmp_path_factory.mktemp("bundle") / "bundle.pt"))
    assert isinstance(predictor, SegmentationPredictor)
    return predictor


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W), dtype=np.uint8)


@pytest.fixture
def client(predictor: SegmentationPredictor) -> FlaskClient:
    return create_app(predictor, max_upload_mb=1).test_client()


def upload(client: FlaskClient, url: str, data: bytes, name: str = "strip.png") -> object:
    return client.post(
        url, data={"image": (io.BytesIO(data), name)}, content_type="multipart/form-data"
    )


def test_index_is_a_self_contained_upload_form(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "<form" in text and "name='image'" in text and "enctype='multipart/form-data'" in text
    assert "http://" not in text.replace("http://HOST", "") and "https://" not in text


def test_health(client: FlaskClient) -> None:
    assert client.get("/health").get_json() == {
        "status": "ok",
        "task": "steel",
        "dataset": "steel",  # the bundle's name: save_bundle's default is the task
        "kind": "gated",  # the bundle records "segmenter", an older name of it
        "backend": "eager",
    }


def test_api_predict_matches_predictor(
    client: FlaskClient, predictor: SegmentationPredictor, image: np.ndarray
) -> None:
    response = upload(client, "/api/predict", png_bytes(image))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    expected = predictor.predict(image)
    assert body["image"] == "strip.png"
    assert body["gate"] == pytest.approx(expected.gate, abs=1e-4)
    assert body["shape"] == [H, W]
    assert set(body["classes"]) == set(expected.present) == {"pits", "scratches"}
    for k, name in enumerate(CLASS_NAMES):
        if name in body["classes"]:
            entry = body["classes"][name]
            assert entry["area"] == expected.areas()[name] == H * W
            np.testing.assert_array_equal(rle_decode(entry["rle"], (H, W)), expected.masks[k])


def test_predict_page_shows_overlay_areas_and_gate(client: FlaskClient, image: np.ndarray) -> None:
    response = upload(client, "/predict", png_bytes(image), name="<i>x.png")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "<i>x" not in text and "&lt;i&gt;x.png" in text  # the client's file name is escaped
    assert "Gate probability" in text
    for name in CLASS_NAMES:
        assert name in text
    assert f"<td>{H * W}</td>" in text
    match = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert match
    overlay = Image.open(io.BytesIO(base64.b64decode(match.group(1))))
    assert overlay.size == (W, H) and overlay.mode == "RGB"


@pytest.mark.parametrize("url", ["/api/predict", "/predict"])
def test_bad_uploads_are_400_naming_the_upload(client: FlaskClient, url: str) -> None:
    missing = client.post(url, data={}, content_type="multipart/form-data")
    assert missing.status_code == 400
    assert "field" in missing.get_data(as_text=True) and "image" in missing.get_data(as_text=True)

    empty = upload(client, url, b"", name="empty.png")
    assert empty.status_code == 400
    assert "empty.png" in empty.get_data(as_text=True)
    assert "empty" in empty.get_data(as_text=True)

    garbage = upload(client, url, b"this is not a png" * 10, name="garbage.png")
    assert garbage.status_code == 400
    assert "garbage.png" in garbage.get_data(as_text=True)
    assert "not a recognised image format" in garbage.get_data(as_text=True)

    truncated = upload(client, url, png_bytes(np.full((H, W), 7, np.uint8))[:-40], "cut.png")
    assert truncated.status_code == 400
    assert "cut.png" in truncated.get_data(as_text=True)


def test_api_errors_are_json(client: FlaskClient) -> None:
    response = upload(client, "/api/predict", b"garbage", name="g.bin")
    assert response.status_code == 400
    assert "g.bin" in response.get_json()["error"]


def test_oversize_upload_is_413(client: FlaskClient) -> None:
    response = upload(client, "/api/predict", b"\0" * (1024 * 1024 + 1), name="big.png")
    assert response.status_code == 413
    assert "1 MB" in response.get_json()["error"]


class StubDetector:
    """Stands in for a DetectionPredictor: the app needs predict, channels, class_names, task,
    kind and backend."""

    channels = 1
    class_names = ["crack", "pore"]
    task, kind, backend = "detection", "fasterrcnn", "eager"

    def predict(self, image: np.ndarray) -> Detections:
        return Detections(
            boxes=np.array([[10.0, 5.0, 60.0, 30.0]], dtype=np.float32),
            labels=["pore"],
            class_ids=np.array([1]),
            scores=np.array([0.876], dtype=np.float32),
            class_names=self.class_names,
        )


def test_detection_bundle_gets_boxes(image: np.ndarray) -> None:
    client = create_app(StubDetector()).test_client()  # type: ignore[arg-type]
    assert client.get("/health").get_json()["task"] == "detection"
    body = upload(client, "/api/predict", png_bytes(image)).get_json()
    assert body == {
        "image": "strip.png",
        "detections": [
            {"label": "pore", "class_id": 1, "score": pytest.approx(0.876), "box": [10, 5, 60, 30]}
        ],
    }
    page = upload(client, "/predict", png_bytes(image))
    assert page.status_code == 200
    assert "pore" in page.get_data(as_text=True) and "data:image/png;base64," in page.get_data(
        as_text=True
    )
