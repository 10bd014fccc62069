"""The command line as a person types it: list flags as `--help` shows them, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from defects.cli import as_list, split_fractions
from tests.test_formats_voc import make_dataset


def run_cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"HOME": str(home)} if home else {})}
    return subprocess.run(
        [sys.executable, "-m", "defects", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_import_voc_split_flag_as_help_prints_it(tmp_path: Path) -> None:
    images, annotations = make_dataset(tmp_path / "voc", n=10)
    out = tmp_path / "yolo"
    result = run_cli(
        "import_voc", str(images), str(annotations), str(out), "--split", "0.8,0.1,0.1"
    )
    assert result.returncode == 0, result.stderr
    counts = {s: len(list((out / s / "images").iterdir())) for s in ("train", "valid", "test")}
    assert counts == {"train": 8, "valid": 1, "test": 1}


@pytest.mark.parametrize(
    ("flag", "needle"),
    [("0.8,0.2", "--split: expected three fractions"), ("a,b,c", "--split: expected three")],
)
def test_a_user_error_is_one_line_naming_the_argument(
    tmp_path: Path, flag: str, needle: str
) -> None:
    images, annotations = make_dataset(tmp_path / "voc", n=4)
    result = run_cli(
        "import_voc", str(images), str(annotations), str(tmp_path / "o"), "--split", flag
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("defects: ") and needle in last
    assert not (tmp_path / "o").exists()


def test_predict_names_a_missing_model_in_one_line(tmp_path: Path) -> None:
    result = run_cli("predict", "--model", str(tmp_path / "none.pt"), "--input", str(tmp_path))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "none.pt" in result.stderr.strip().splitlines()[-1]


def test_list_flags_take_what_fire_hands_over() -> None:
    assert as_list((0.7, 0.2, 0.1)) == [0.7, 0.2, 0.1]
    assert as_list("a,b") == ["a", "b"]
    assert split_fractions("0.5,0.25,0.25") == (0.5, 0.25, 0.25)
    with pytest.raises(ValueError, match="--split"):
        split_fractions((0.5, 0.5))
