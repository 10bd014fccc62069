"""The page in a real browser: headless Chromium shows the live video with the overlay.

Two screenshots of `/` taken a moment apart must show different frames, each with the red
box of class 0 around the bright square; the DOM after the inline script ran must show the
figures it polled from /api/stats. Skipped when `chromium` is not installed (CI installs
Debian's package, see .ci/run); the browser only ever talks to 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.test_stream import H, W, boxed_square, serving, stream_app, write_square_video

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (CI: apt-get install chromium; see .ci/run)",
)


def chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess[str]:
    """One headless run on a fresh profile; no sync, updates or other calls home."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1000,760",
        "--virtual-time-budget=3000",
        *mode,
        url,
    ]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish within 60 s")
    assert run.returncode == 0, run.stderr[-2000:]
    return run


def screenshot(url: str, folder: Path, name: str) -> np.ndarray:
    path = folder / f"{name}.png"
    chromium(url, folder / f"profile-{name}", f"--screenshot={path}")
    assert path.is_file(), f"chromium wrote no screenshot {path}"
    return np.asarray(Image.open(path).convert("RGB"))


def video_in(page: np.ndarray) -> np.ndarray:
    """The video as shown on the page, cropped from the screenshot and scaled back to WxH."""
    dark = (page.max(axis=2) < 70).astype(np.uint8)  # the strip's background; text is small
    count, _, boxes, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    assert count > 1, "nothing dark on the page"
    x, y, w, h, area = max(boxes[1:], key=lambda b: b[4])
    assert area > 5000, "no video on the page"
    crop = page[y : y + h, x : x + w]
    ratio = crop.shape[1] / crop.shape[0]
    assert abs(ratio - W / H) < 0.05, f"video shown at {crop.shape[1]}x{crop.shape[0]}"
    return cv2.resize(np.ascontiguousarray(crop), (W, H), interpolation=cv2.INTER_AREA)


def test_page_shows_live_frames_with_the_overlay(tmp_path: Path) -> None:
    video = write_square_video(tmp_path / "line.mp4")
    with serving(stream_app(video, confidence=0.6)) as base:
        first = video_in(screenshot(f"{base}/", tmp_path, "first"))
        box_first = boxed_square(first)
        time.sleep(0.7)
        second = video_in(screenshot(f"{base}/", tmp_path, "second"))
        box_second = boxed_square(second)
        if box_second == box_first:  # landed on the same place of the looped video: once more
            second = video_in(screenshot(f"{base}/", tmp_path, "third"))
            box_second = boxed_square(second)
        assert box_second[0] != box_first[0], "the page shows the same frame twice"
        assert np.abs(first.astype(int) - second.astype(int)).max() > 100

        dom = chromium(f"{base}/", tmp_path / "profile-dom", "--dump-dom").stdout
        assert '<img id="feed" src="/video_feed"' in dom
        assert 'id="status" class="state">live</span>' in dom, dom[:3000]
        assert 'id="last">defect: 1</td>' in dom  # the inline script filled the figures
        assert 'id="fps-model">-</td>' not in dom
