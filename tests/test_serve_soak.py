"""`defects serve` on waitress under load for a minute: benchmarks/soak.py's soak, shortened.

The real command line in a child process with a tiny segmentation bundle (two
EfficientNet-B0s, ~80 ms a frame on one CPU thread: the stream and the uploads compete for
the model as in a factory) and a camera stand-in it streams over HTTP. Eight viewers come
and go, one client uploads strips in a loop, a burst of 16 uploads near the byte limit comes
during warm-up, and the camera is unplugged for 5 s and plugged back in. Afterwards: no 5xx,
every upload answered, RSS after warm-up within a generous bound, the drop seen in /metrics
and the stream live again with new frames for the viewers, SIGTERM ends the server with 0.

DEFECTS_SOAK_MINUTES changes the length while developing (CI runs 1).
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.soak import make_plan, print_table, run_soak, table

MINUTES = float(os.environ.get("DEFECTS_SOAK_MINUTES", "1"))
VIEWERS = 8
#: RSS growth allowed after warm-up: a leak of a frame or an upload per request would pass
#: it within seconds; glibc keeping freed arenas does not
GROWTH_MIB = 150


def test_soak_viewers_uploads_and_a_lost_camera(tmp_path: Path) -> None:
    report = run_soak(MINUTES, VIEWERS, workdir=tmp_path, upload_mb=8)
    print_table(table(report))
    s = report["summary"]
    plan = make_plan(MINUTES, VIEWERS)
    log = report["server_log_tail"]
    assert not report["failures"], (report["failures"], log)
    assert not s["server_5xx"] and s["client_5xx"] == 0, s
    assert s["client_4xx"] == 0, s["client_statuses"]
    # every upload answered with its own name, steadily: one every 10 s at least
    assert s["uploads_ok"] == s["uploads"] >= MINUTES * 6, s
    assert s["burst_uploads"] == 16 * len(plan.bursts)
    assert set(s["burst_statuses"]) <= {"200", "503"} and "0" not in s["burst_statuses"], s
    served = s["served"]["POST /api/predict"]
    assert served == s["uploads"] + s["burst_uploads"], s["served"]
    # memory: bounded after warm-up (the burst's buffers are in the warm-up)
    assert s["rss_growth_mib"] < GROWTH_MIB, s
    # the camera: lost (seen in /metrics: defects_stream_up 0, a loss counted), back live
    assert s["drops_seen_down_in_metrics"] and s["up_at_end"] == 1.0, report["samples"]
    assert s["source_losses"] == len(plan.drops), s
    assert all(r is not None and r < 15 for r in s["recovery_s"]), s["recovery_s"]
    assert s["fps_after"] and s["fps_after"] > 0.5 * s["fps_before"], s
    # the viewers: each saw new frames after the camera came back, and came back itself
    back = plan.drops[-1][1]
    assert all(any(t > back + 5 for t in times) for times in report["frames"]), s
    assert min(report["connections"]) >= 2 and s["viewer_max_gap_s"] < 10, s
    assert s["viewer_connections_server"] == s["viewer_connections"], s
    assert report["health"]["status"] == "ok" and report["health"]["stream"]["state"] == "live"
    assert report["exit_code"] == 0, log
    assert "SIGTERM: stopping" in log and "stopped" in log.splitlines()[-1], log[-2000:]
