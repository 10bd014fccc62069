"""Video files: one reader and writer for the generators, the live stream and the CVAT tools."""

from __future__ import annotations

from defects.video.frames import VideoInfo, iter_frames, read_video_info, write_video

__all__ = ["VideoInfo", "iter_frames", "read_video_info", "write_video"]
