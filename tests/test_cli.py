"""The command line as a person types it: list flags as `--help` shows them, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from defects.cli import as_list, help_request, split_fractions
from defects.progress import bars_disabled
from tests.test_formats_voc import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, home: Path | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    # this checkout's package, also when run from another folder (`cwd`)
    path = os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))
    env = {**os.environ, **({"HOME": str(home)} if home else {}), "PYTHONPATH": path, **env}
    return subprocess.run(
        [sys.executable, "-m", "defects", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        cwd=cwd,
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


def test_help_names_the_command_on_stdout() -> None:
    """`python -m defects --help` is `defects`, not `__main__.py`, and pipes like any help."""
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:2] == ["NAME", "defects"], result.stdout[:200]
    assert "__main__" not in result.stdout + result.stderr
    commands = result.stdout.split("COMMANDS")[1]
    assert all(verb in commands.split() for verb in ("prepare", "train", "evaluate", "pipe"))
    predict = run_cli("predict", "--help")
    assert predict.returncode == 0 and "defects predict MODEL INPUT" in predict.stdout


def test_help_request_in_fires_spelling() -> None:
    assert help_request(["--help"]) == ["--", "--help"]
    assert help_request(["predict", "--model", "m", "-h"]) == [
        "predict",
        "--model",
        "m",
        "--",
        "--help",
    ]
    assert help_request(["predict", "--", "--help"]) == ["predict", "--", "--help"]
    assert help_request(["predict", "--model", "m"]) is None


def test_hydra_verbs_pass_their_words_through(tmp_path: Path) -> None:
    """`defects prepare ARGS` is `python -m defects.prepare ARGS`, with progress bars."""
    data, plots = tmp_path / "data", tmp_path / "plots"
    result = run_cli(
        "prepare", "task=weld", "prepare.n_train=3", "prepare.n_valid=1", "prepare.n_test=1",
        "prepare.width=160", "prepare.height=128",
        f"paths.data_dir={data}", f"paths.plots_dir={plots}",
        cwd=tmp_path,
        TQDM_DISABLE="0",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    counts = {s: len(list((data / s / "images").glob("*.png"))) for s in ("train", "valid", "test")}
    assert counts == {"train": 3, "valid": 1, "test": 1}
    assert "data/train: 100%" in result.stderr  # the generator's bar, forced on in a pipe
    assert (tmp_path / "outputs" / "hydra" / "weld").is_dir()  # Hydra's own run folder

    helped = run_cli("train", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "powered by Hydra" in helped.stdout and "task: pipe, steel, weld" in helped.stdout


def test_progress_bars_follow_tqdm_disable(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, disabled in (("1", True), ("true", True), ("0", False), ("", None)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert bars_disabled() is disabled, value
    monkeypatch.delenv("TQDM_DISABLE")
    assert bars_disabled() is None  # tqdm's own rule: a bar where stderr is a terminal
    monkeypatch.setenv("TQDM_DISABLE", "maybe")
    with pytest.raises(ValueError, match="TQDM_DISABLE"):
        bars_disabled()
