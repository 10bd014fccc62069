"""The split writer every synthetic generator writes its train/valid/test splits with."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from defects.data.synthetic.common import SPLITS, split_writer

COUNTS = {"train": 3, "valid": 1, "test": 0}


def test_splits_in_order_with_their_folders(tmp_path: Path) -> None:
    seen = []
    with split_writer(tmp_path / "ds", COUNTS, ("{split}/images", "videos/{split}")) as writer:
        assert not (tmp_path / "ds").exists()  # written aside until the body succeeds
        for split in writer.splits():
            assert split.dir == writer.root / split.name
            assert (split.dir / "images").is_dir()
            assert (writer.root / "videos" / split.name).is_dir()
            seen.append((split.index, split.name, split.count))
            (split.dir / "images" / "a.txt").write_text(split.name)
    assert seen == [(0, "train", 3), (1, "valid", 1), (2, "test", 0)]
    assert (tmp_path / "ds" / "valid" / "images" / "a.txt").read_text() == "valid"
    assert sorted(p.name for p in (tmp_path / "ds" / "videos").iterdir()) == sorted(SPLITS)


def test_map_runs_on_two_threads_and_keeps_job_order(tmp_path: Path) -> None:
    threads = set()

    def slow_first(job: int) -> int:
        threads.add(threading.get_ident())
        time.sleep(0.05 if job == 0 else 0.0)  # job 0 finishes last
        return job * 10

    with split_writer(tmp_path / "ds", COUNTS, ()) as writer:
        assert list(writer.map(slow_first, range(6))) == [0, 10, 20, 30, 40, 50]
    assert len(threads) == 2


def test_failure_leaves_nothing_and_keeps_the_old_dataset(tmp_path: Path) -> None:
    old = tmp_path / "ds"
    old.mkdir()
    (old / "keep.txt").write_text("old")

    def boom(job: int) -> int:
        if job == 2:
            raise RuntimeError("boom")
        return job

    writing = split_writer(old, COUNTS, ("{split}/images",))
    with pytest.raises(RuntimeError, match="boom"), writing as writer:
        for _ in writer.splits():
            list(writer.map(boom, range(4)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert [p.name for p in old.iterdir()] == ["keep.txt"]
