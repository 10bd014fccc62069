"""The server's figures in Prometheus' text format, for `/metrics` (what operations scrape).

Each app has its own `CollectorRegistry` (never prometheus_client's global one), so two apps
in one process, as in the tests, count apart. Requests and their latency are counted as they
are answered; the live stream's figures are read from `LiveStream.snapshot()` at scrape
time (the numbers of /api/stats, under Prometheus names), so nothing is counted twice.

    defects_model_info{task,dataset,kind,backend,classes}        1
    defects_http_requests_total{endpoint,method,status}          counter
    defects_http_request_duration_seconds{endpoint}              histogram (to the response's
                                                                 start: a stream's headers)
    defects_upload_detections_total{class}                       findings in uploaded images
    defects_stream_*                                             with a live source: fps,
        latency / model time quantiles (last frames), frames, detections per class, viewers
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from defects.stream import LiveStream

__all__ = ["CONTENT_TYPE", "ServeMetrics", "StreamCollector"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: request latency buckets (seconds): a CPU model answers in tens of ms to a few seconds
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: /api/stats' frame counters under their Prometheus label
FRAME_OUTCOMES = ("read", "garbage", "inferred", "published", "errors", "dropped")


class StreamCollector(Collector):
    """The live stream's figures, read from its snapshot each time Prometheus scrapes."""

    def __init__(self, live: LiveStream, class_names: Sequence[str]) -> None:
        self.live = live
        self.class_names = list(class_names)

    def collect(self) -> Iterator[Metric]:
        s = self.live.snapshot()
        yield _gauge(
            "defects_stream_up", "1 while the source delivers frames", s["state"] == "live"
        )
        info = GaugeMetricFamily(
            "defects_stream_source_info", "The streamed source", labels=["source", "kind"]
        )
        info.add_metric([str(s["source"]), str(s["source_kind"])], 1)
        yield info
        fps = GaugeMetricFamily(
            "defects_stream_fps", "Frames per second over the last seconds", labels=["stage"]
        )
        for stage, value in s["fps"].items():
            fps.add_metric([stage], value)
        yield fps
        for name, key, text in (
            ("latency", "latency_ms", "Capture to published"),
            ("model", "model_ms", "Model time per frame"),
        ):
            quantiles = GaugeMetricFamily(
                f"defects_stream_{name}_seconds",
                f"{text}, quantiles over the last frames",
                labels=["quantile"],
            )
            for label, q in (("p50", "0.5"), ("p95", "0.95")):
                if s[key][label] is not None:
                    quantiles.add_metric([q], s[key][label] / 1000.0)
            yield quantiles
        frames = CounterMetricFamily(
            "defects_stream_frames", "Frames of the source by outcome", labels=["outcome"]
        )
        for outcome in FRAME_OUTCOMES:
            frames.add_metric([outcome], s["frames"][outcome])
        yield frames
        totals: dict[str, int] = s["detections"]["total"]
        last: dict[str, int] = s["detections"]["last_frame"]
        names = self.class_names + sorted(set(totals) - set(self.class_names))
        detections = CounterMetricFamily(
            "defects_stream_detections", "Findings in the stream per class", labels=["class"]
        )
        last_frame = GaugeMetricFamily(
            "defects_stream_last_frame_detections",
            "Findings in the last published frame per class",
            labels=["class"],
        )
        for name in names:
            detections.add_metric([name], totals.get(name, 0))
            last_frame.add_metric([name], last.get(name, 0))
        yield detections
        yield last_frame
        yield _gauge("defects_stream_viewers", "Open /video_feed connections", s["viewers"])
        yield CounterMetricFamily(
            "defects_stream_viewer_connections", "Viewers since start", value=s["viewers_total"]
        )
        yield CounterMetricFamily(
            "defects_stream_source_losses",
            "Times the live source was lost",
            value=s["source_losses"],
        )
        yield _gauge(
            "defects_stream_uptime_seconds", "Seconds since the stream started", s["uptime_s"]
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


class ServeMetrics:
    """One app's registry: request counters and latency, upload findings, model, stream."""

    def __init__(
        self,
        *,
        task: str,
        dataset: str,
        kind: str,
        backend: str,
        class_names: Sequence[str],
        live: LiveStream | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        Info("defects_model", "The served model", registry=self.registry).info(
            {
                "task": task,
                "dataset": dataset,
                "kind": kind,
                "backend": backend,
                "classes": ",".join(class_names),
            }
        )
        self.requests = Counter(
            "defects_http_requests",
            "HTTP requests answered, by endpoint (the route), method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "defects_http_request_duration_seconds",
            "Time to the response's start (a stream's: its headers), by endpoint",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upload_detections = Counter(
            "defects_upload_detections",
            "Findings in uploaded images (/predict, /api/predict) per class",
            ["class"],
            registry=self.registry,
        )
        for name in class_names:  # every class reported from the start, 0 until seen
            self.upload_detections.labels(name)
        if live is not None:
            self.registry.register(StreamCollector(live, class_names))

    def request_done(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def uploaded(self, counts: dict[str, Any]) -> None:
        for name, count in counts.items():
            self.upload_detections.labels(name).inc(count)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
