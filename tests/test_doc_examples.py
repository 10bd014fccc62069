"""Every Python and shell example in README.md and docs/ runs, with tiny settings, so the docs
cannot rot. A block that truly cannot run here (a GPU, a cluster, a server that runs until
stopped, a dataset outside the repository) carries a visible reason right before its fence:

    <!-- not-run: needs a CUDA GPU -->

and a new example without one is run. How a block runs:

- `python -m defects.VERB ARGS`, `python -m defects VERB ARGS` and `defects VERB ARGS` run in
  this process through `defects.cli.main` (one import of torch for all of them), the tiny
  overrides of `TINY` for the command's task replacing the same keys of the example; a
  `train` example runs the whole training path once (`trainer.fast_dev_run=true`), and one
  that resumes (`ckpt_path=...`) trains one more tiny epoch on the workspace's checkpoint;
- any other shell line runs in bash; `A=b cmd` sets the variable for that command;
- Python blocks run with `exec`.

All of it happens in one workspace per module, prepared once: tiny weld and steel datasets and
bundles where the docs' default paths put them (`data/<task>`, `models/<task>/bundle.pt`), an
image named `radiograph.png` and a short video `line3.mp4`. Blocks run in file order and a
command line already run in the workspace is not run again (README and docs share examples).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import TINY_STEEL, TINY_WELD, steel_overrides, weld_overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN = {"python", "bash", "shell", "console"}
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*)-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
HYDRA_VERBS = ("prepare", "train", "evaluate", "pipe")


def _prepare(sizes: dict[str, int]) -> list[str]:
    return [
        f"prepare.{key}={sizes[key]}" for key in ("n_train", "n_valid", "n_test", "width", "height")
    ]


def _fit(overrides: list[str]) -> list[str]:
    """conftest's tiny training overrides less its paths: the docs' default paths are used."""
    return [o for o in overrides if not o.startswith("paths.")]


_NOWHERE = Path("unused")
TINY_EPOCHS = 1  # the workspace's models: one epoch of `debug=tiny`'s two batches
# task -> verb -> the overrides that make the example tiny (they replace the example's own)
TINY: dict[str, dict[str, list[str]]] = {
    "weld": {
        "prepare": _prepare(TINY_WELD),
        "train": [*_fit(weld_overrides(_NOWHERE, _NOWHERE)), f"trainer.max_epochs={TINY_EPOCHS}"],
        "evaluate": ["logger=none"],
    },
    "steel": {
        "prepare": _prepare(TINY_STEEL),
        "train": [*_fit(steel_overrides(_NOWHERE, _NOWHERE)), f"trainer.max_epochs={TINY_EPOCHS}"],
        "evaluate": [
            "logger=none",
            *(
                o
                for o in steel_overrides(_NOWHERE, _NOWHERE)
                if o.startswith(("data.shape=", "data.crop="))
            ),
        ],
    },
}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page: where it is, its language, its code, and the reason
    it is not run (None: it is run)."""

    page: Path
    line: int
    lang: str
    code: str
    reason: str | None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of `page`, each with the `not-run` reason right before it, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, lang = match.groups()
        end = next(
            (j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)),
            None,
        )
        if end is None:
            raise AssertionError(f"{page}:{i + 1}: a code fence that never closes")
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.match(before)
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        found.append(Block(page, i + 1, lang.lower(), code, marker and marker.group(1).strip()))
        i = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
RUNNABLE = [block for block in ALL if block.lang in RUN and block.reason is None]


def test_every_example_is_run_or_says_why_not() -> None:
    """A shell or Python example is run unless a `not-run` marker gives a reason; a marker
    before a block that is never run anyway (text, yaml), an empty reason or a fence with no
    language is a mistake in the page."""
    assert len(RUNNABLE) >= 10, "the docs' examples were not found"
    problems = []
    for block in ALL:
        if not block.lang:
            problems.append(f"{block.name}: a fence without a language (text, bash, python, ...)")
        elif block.reason is not None and block.lang not in RUN:
            problems.append(
                f"{block.name}: 'not-run' before a {block.lang} block, which never runs"
            )
        elif block.reason is not None and len(block.reason) < 8:
            problems.append(f"{block.name}: 'not-run' needs a reason ({block.reason!r})")
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        markers = len(re.findall(r"^<!--\s*not-run:", text, re.MULTILINE))
        marked = sum(1 for b in ALL if b.page == page and b.reason is not None)
        if markers != marked:
            problems.append(
                f"{page.name}: {markers - marked} 'not-run' marker(s) not right before a fence"
            )
    assert not problems, "\n".join(problems)


# The blocks that are not run, all of them deployments (a server, a cluster, S3, Docker, a
# GPU, a package index) or runs of minutes on data outside the repository. A new one raises
# this on purpose, in the same commit, with its reason in the page.
NOT_RUN_LIMIT = 29


def test_few_examples_are_not_run() -> None:
    skipped = [f"{b.name}: {b.reason}" for b in ALL if b.reason is not None]
    assert len(skipped) <= NOT_RUN_LIMIT, (
        f"{len(skipped)} examples are not run (at most {NOT_RUN_LIMIT}): run the new one with"
        " tiny settings, or raise NOT_RUN_LIMIT with a reason\n" + "\n".join(skipped)
    )


def test_the_parser_sees_markers_and_fences(tmp_path: Path) -> None:
    """The checks above only hold if the parser reads pages as written: a marked block gets
    its reason, an unmarked one none, and an indented fence is found."""
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- not-run: needs a CUDA GPU -->\n```bash\ngpu\n```\n\n```python\nx = 1\n```\n"
        "- item\n\n    ```text\n    out\n    ```\n"
    )
    found = blocks(page)
    assert [(b.lang, b.code, b.reason) for b in found] == [
        ("bash", "gpu", "needs a CUDA GPU"),
        ("python", "x = 1", None),
        ("text", "out", None),
    ]


# ---------------------------------------------------------------------------- running them


def commands(code: str) -> Iterator[str]:
    """The command lines of a shell block: continuations joined, comments and prompts dropped."""
    for line in code.replace("\\\n", " ").splitlines():
        line = line.strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            yield line


def defects_call(words: list[str]) -> list[str] | None:
    """`[VERB, *ARGS]` of a `defects` command in any of its three spellings, else None."""
    if words[:2] in (["python", "-m"], ["python3", "-m"]) and len(words) > 2:
        module = words[2]
        if module == "defects":
            return words[3:]
        if module.startswith("defects."):
            return [module.removeprefix("defects."), *words[3:]]
    if words[:1] == ["defects"]:
        return words[1:]
    return None


def tiny(call: list[str], once: bool = True) -> list[str]:
    """The call with the tiny overrides of its task and verb replacing the same keys; a doc's
    `train` runs the whole path once (`trainer.fast_dev_run`: one batch, no bundle written),
    `once=False` trains the tiny model for real (the workspace's bundles)."""
    verb, args = call[0], call[1:]
    task = next((a.split("=", 1)[1] for a in args if a.startswith("task=")), None)
    extra = TINY.get(task or "", {}).get(verb, [])
    if verb == "train" and any(a.startswith("ckpt_path=") for a in args):
        # a resume: one more tiny epoch on top of the workspace's checkpoint (one batch of
        # `fast_dev_run` would find the run finished, with nothing to train or validate)
        extra = [*extra, f"trainer.max_epochs={TINY_EPOCHS + 1}"]
    elif verb == "train" and once:
        # one batch instead of `debug=tiny`'s epochs, so an example's own `debug=...` stays
        extra = [*(o for o in extra if not o.startswith("debug=")), "trainer.fast_dev_run=true"]
    keys = {o.split("=", 1)[0] for o in extra}
    return [verb, *(a for a in args if a.split("=", 1)[0].lstrip("+") not in keys), *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """A working folder with tiny data and bundles where the docs put them, made current for
    the module's tests; what ran there is remembered so shared examples run once."""
    import numpy as np

    from defects.video.frames import write_video

    folder = tmp_path_factory.mktemp("doc_examples")
    state: dict[str, object] = {"folder": folder, "done": set()}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("TQDM_DISABLE", "1")
        for task in ("weld", "steel"):
            for verb in ("prepare", "train"):
                run_defects([verb, f"task={task}"], state, once=False)
        shutil.copy(sorted(Path("data/weld/test/images").iterdir())[0], "radiograph.png")
        rng = np.random.default_rng(0)
        write_video(
            "line3.mp4", (rng.integers(0, 255, (96, 128, 3), np.uint8) for _ in range(30)), 10.0
        )
        yield state


def run_defects(call: list[str], state: dict[str, object], once: bool = True) -> None:
    """One `defects` command, tiny, in this process; a non-zero exit fails the example."""
    from defects.cli import main

    call = tiny(call, once)
    done = state["done"]
    assert isinstance(done, set)
    if tuple(call) in done:
        return
    try:
        main(call)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise AssertionError(f"defects {shlex.join(call)} exited with {exc.code}") from None
    done.add(tuple(call))


def run_shell(line: str, state: dict[str, object]) -> None:
    """One command line: `defects` parts in this process, the rest in bash."""
    words = shlex.split(line, comments=True)
    while words:
        part = words[: words.index("&&")] if "&&" in words else words
        words = words[len(part) + 1 :]
        env = {}
        while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", part[0]):
            key, value = part.pop(0).split("=", 1)
            env[key] = value
        call = defects_call(part)
        if call is None:
            path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
            done = subprocess.run(
                ["bash", "-c", shlex.join(part)],
                env={**os.environ, "PATH": path, **env},
                timeout=120,
            )
            assert done.returncode == 0, f"{shlex.join(part)!r} exited with {done.returncode}"
            continue
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            run_defects(call, state)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_example_runs(block: Block, workspace: dict[str, object]) -> None:
    if block.lang == "python":
        exec(compile(block.code, block.name, "exec"), {"__name__": "__doc_example__"})
        return
    for line in commands(block.code):
        run_shell(line, workspace)
