"""notebooks/quickstart.ipynb: executed top to bottom with its tiny configuration (every task
prepared, trained, evaluated and loaded on a CPU, in a temporary folder), and kept stripped of
outputs in git, so an executed copy committed by mistake fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"
TASKS = ("weld", "steel", "winding", "pipe")


def read_notebook() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The cell tagged "parameters" (papermill's convention): exactly one, a code cell."""
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code", "one code cell tagged parameters"
    return tagged[0]


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_notebook_runs_top_to_bottom_with_tiny_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = read_notebook()
    cell = parameters_cell(nb)
    assert "TINY = False" in cell.source  # a reader's run is a real one
    cell.source += "\nTINY = True\n"  # what papermill's injected-parameters cell would do
    # The kernel imports this checkout's package (it runs outside the repository) and inherits
    # the tests' offline environment (tests/conftest.py).
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    before = git_status()
    client = NotebookClient(
        nb,
        timeout=1800,  # per cell: a hang fails; a shared, busy CI machine does not
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    assert git_status() == before, "the notebook wrote into the repository checkout"

    work = tmp_path / "defects-quickstart"
    for task in TASKS[:3]:
        assert (work / "models" / task / "bundle.pt").is_file(), task
        assert (work / "metrics" / task / "eval.json").is_file(), task
    assert (work / "models" / "pipe" / "segmenters" / "final" / "bundle.pt").is_file()
    assert (work / "metrics" / "pipe" / "pipe_iou.md").is_file()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    # per task: the data samples, the evaluation's figures, the prediction drawn on an image
    assert len(images) >= 3 * len(TASKS), len(images)
    text = "".join(o.get("text", "") for o in outputs)
    for task in TASKS:
        assert f"$ defects prepare task={task}" in text, task
    assert "trainer=cpu" in text or "trainer=gpu" in text


def test_outputs_are_stripped_in_git() -> None:
    nb = read_notebook()
    nbformat.validate(nb)
    parameters_cell(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {index} has outputs: strip them (nbstripout)"
            assert cell.execution_count is None, f"cell {index} has an execution count"
    verify = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", str(NOTEBOOK)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
