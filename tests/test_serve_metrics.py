"""/metrics in Prometheus' text format and /health's model description, through the test
client: the exposition parses with prometheus_client's own parser, the counters move with
the requests made, and the stream's figures are those of /api/stats."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from defects.serve import STREAM_EXTENSION, create_app
from defects.serve_metrics import CONTENT_TYPE
from tests.test_serve import png_bytes
from tests.test_stream import (
    SquareDetector,
    square_frame,
    stream_app,
    wait_until,
    write_square_video,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: FlaskClient) -> Samples:
    """Every sample of /metrics by (name, sorted labels), through prometheus' parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE
    samples: Samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def requests_total(samples: Samples, endpoint: str, method: str, status: int) -> float:
    key = (
        "defects_http_requests_total",
        (("endpoint", endpoint), ("method", method), ("status", str(status))),
    )
    return samples.get(key, 0.0)


class NamedDetector(SquareDetector):
    """The toy with a bundle name, as a bundle trained on NEU-DET for the weld task has."""

    def __init__(self) -> None:
        super().__init__()
        self.meta = {**self.meta, "task": "weld", "name": "neu_det"}


def upload(client: FlaskClient, data: bytes, name: str = "sq.png") -> int:
    response = client.post(
        "/api/predict",
        data={"image": (io.BytesIO(data), name)},
        content_type="multipart/form-data",
    )
    return response.status_code


@pytest.fixture
def client() -> FlaskClient:
    return create_app(NamedDetector()).test_client()


def test_health_names_task_and_dataset(client: FlaskClient) -> None:
    assert client.get("/health").get_json() == {
        "status": "ok",
        "task": "weld",
        "dataset": "neu_det",
        "kind": "toy_square",
        "backend": "eager",
    }
    page = client.get("/").get_data(as_text=True)
    assert "Task: weld. Dataset: neu_det." in page


def test_metrics_parse_and_count_requests(client: FlaskClient) -> None:
    before = scrape(client)
    info = (
        "defects_model_info",
        tuple(
            sorted(
                {
                    "task": "weld",
                    "dataset": "neu_det",
                    "kind": "toy_square",
                    "backend": "eager",
                    "classes": "defect,other",
                }.items()
            )
        ),
    )
    assert before[info] == 1.0
    assert before[("defects_upload_detections_total", (("class", "other"),))] == 0.0
    assert not any(name.startswith("defects_stream_") for name, _ in before)  # no source

    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert upload(client, png_bytes(square_frame(7))) == 200
    assert upload(client, png_bytes(square_frame(9))) == 200
    assert upload(client, b"not an image", name="bad.png") == 400
    assert client.get("/no/such/page").status_code == 404
    after = scrape(client)

    assert requests_total(after, "/health", "GET", 200) == 3
    assert requests_total(after, "/api/predict", "POST", 200) == 2
    assert requests_total(after, "/api/predict", "POST", 400) == 1
    assert requests_total(after, "(unmatched)", "GET", 404) == 1
    assert requests_total(after, "/metrics", "GET", 200) == 1  # the first scrape
    count = ("defects_http_request_duration_seconds_count", (("endpoint", "/api/predict"),))
    total = ("defects_http_request_duration_seconds_sum", (("endpoint", "/api/predict"),))
    assert after[count] == 3 and after[total] > 0
    inf = (
        "defects_http_request_duration_seconds_bucket",
        (("endpoint", "/api/predict"), ("le", "+Inf")),
    )
    assert after[inf] == 3
    assert after[("defects_upload_detections_total", (("class", "defect"),))] == 2
    assert after[("defects_upload_detections_total", (("class", "other"),))] == 0


def test_each_app_counts_apart() -> None:
    one = create_app(SquareDetector()).test_client()
    two = create_app(SquareDetector()).test_client()
    for _ in range(4):
        one.get("/health")
    assert requests_total(scrape(one), "/health", "GET", 200) == 4
    assert requests_total(scrape(two), "/health", "GET", 200) == 0


@pytest.fixture
def stream_client(tmp_path: Path) -> Iterator[FlaskClient]:
    app = stream_app(write_square_video(tmp_path / "line.mp4"), confidence=0.6)
    try:
        yield app.test_client()
    finally:
        app.extensions[STREAM_EXTENSION].close()


def test_stream_figures_are_those_of_api_stats(stream_client: FlaskClient) -> None:
    client = stream_client
    wait_until(lambda: client.get("/api/stats").get_json()["seq"] > 5, 10, "frames")
    stats = client.get("/api/stats").get_json()
    samples = scrape(client)
    later = client.get("/api/stats").get_json()

    def sample(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert sample("defects_stream_up") == 1.0
    for outcome in ("read", "inferred", "published"):
        value = sample("defects_stream_frames_total", outcome=outcome)
        assert stats["frames"][outcome] <= value <= later["frames"][outcome], outcome
    assert sample("defects_stream_frames_total", outcome="garbage") == 0
    defects = sample("defects_stream_detections_total", **{"class": "defect"})
    assert stats["detections"]["total"]["defect"] <= defects
    assert defects <= later["detections"]["total"]["defect"]
    assert sample("defects_stream_detections_total", **{"class": "other"}) == 0
    assert sample("defects_stream_last_frame_detections", **{"class": "defect"}) == 1
    assert 5 < sample("defects_stream_fps", stage="read") < 40  # the file's 20 fps
    p50 = sample("defects_stream_latency_seconds", quantile="0.5")
    p95 = sample("defects_stream_latency_seconds", quantile="0.95")
    assert 0 < p50 <= p95 < 1
    assert 0 < sample("defects_stream_model_seconds", quantile="0.5") < 1
    assert sample("defects_stream_viewers") == 0
    assert sample("defects_stream_source_losses_total") == 0
    source = [labels for name, labels in samples if name == "defects_stream_source_info"]
    assert source == [(("kind", "file"), ("source", stats["source"]))]
