"""Live video inspection: a video file, camera or URL through a predictor to many viewers.

    reader thread --(slot of one frame)--> inference thread --(broadcaster)--> viewers

One reader (source.py) and one inference loop (inference.py) per source, whatever the
number of viewers; the app (`defects.serve.create_app(..., stream=StreamConfig(...))`)
serves the frames as MJPEG at /video_feed and the figures (stats.py) at /api/stats.
"""

from defects.stream.config import Backoff, SourceSpec, StreamConfig, parse_source
from defects.stream.live import BOUNDARY, MJPEG_MIMETYPE, LiveStream, mjpeg_part
from defects.stream.source import SourceStatus, check_frame

__all__ = [
    "BOUNDARY",
    "MJPEG_MIMETYPE",
    "Backoff",
    "LiveStream",
    "SourceSpec",
    "SourceStatus",
    "StreamConfig",
    "check_frame",
    "mjpeg_part",
    "parse_source",
]
