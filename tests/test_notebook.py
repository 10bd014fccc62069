"""notebooks/quickstart.ipynb: executed top to bottom with its tiny configuration (every task
prepared, trained, evaluated and loaded on a CPU, in a temporary folder), and kept stripped of
outputs in git, so an executed copy committed by mistake fails here."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
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


def print_cell_times(nb: nbformat.NotebookNode) -> None:
    """Each executed code cell's wall time (nbclient's timing metadata), for a slow CI run:
    shown with the test's output (`pytest -rP`, or on failure)."""
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "shell.execute_reply" in timing:
            start = datetime.fromisoformat(timing["iopub.execute_input"].replace("Z", "+00:00"))
            end = datetime.fromisoformat(timing["shell.execute_reply"].replace("Z", "+00:00"))
            first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
            print(f"cell {index:2d}: {(end - start).total_seconds():7.1f} s  {first_line[:60]}")


def stripping_problems(path: Path) -> list[str]:
    """Why the notebook at `path` is not stripped of outputs: each code cell with outputs or
    an execution count, and nbstripout's own verdict (it also checks the metadata that a run
    leaves). Empty when the notebook is as git should hold it."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    problems = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.outputs:
            problems.append(f"{path}: cell {index} has outputs")
        if cell.cell_type == "code" and cell.execution_count is not None:
            problems.append(f"{path}: cell {index} has an execution count")
    verify = subprocess.run(
        [sys.executable, "-m", "nbstripout", "--verify", str(path)],
        capture_output=True,
        text=True,
    )
    if verify.returncode != 0:
        problems.append(f"nbstripout --verify {path}: {verify.stdout}{verify.stderr}".strip())
    return problems


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
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback
    finally:
        print_cell_times(nb)
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
    parameters_cell(read_notebook())
    problems = stripping_problems(NOTEBOOK)
    assert problems == [], "strip the notebook (`nbstripout notebooks/quickstart.ipynb`): " + (
        "; ".join(problems)
    )


def test_the_stripping_check_fails_on_an_executed_notebook(tmp_path: Path) -> None:
    """The check above can fail: a copy with one cell's output and execution count, as a run
    in Jupyter leaves it, is reported by both the cell check and nbstripout."""
    nb = read_notebook()
    index, cell = next((i, c) for i, c in enumerate(nb.cells) if c.cell_type == "code")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="defects 0.1.0\n")]
    cell.execution_count = 1
    executed = tmp_path / "quickstart.ipynb"
    nbformat.write(nb, executed)

    problems = stripping_problems(executed)
    assert f"{executed}: cell {index} has outputs" in problems
    assert f"{executed}: cell {index} has an execution count" in problems
    assert any(p.startswith(f"nbstripout --verify {executed}") for p in problems), problems
    assert stripping_problems(NOTEBOOK) == []  # the same check passes the committed one
