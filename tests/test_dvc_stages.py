"""dvc.yaml: every task in params.yaml has its prepare/train/evaluate stages, each stage's
command composes as a Hydra config for its task, and each stage depends on what it reads and
no more (never serve.py, the CLI, a README or another task's model kind).

No training: dvc.yaml is read as YAML and its `${...}` resolved from params.yaml; only the
dvc.lock check asks DVC itself which stage names dvc.yaml declares.
"""

from __future__ import annotations

import ast
import inspect
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from defects.config import validate_config
from defects.kinds import builtin_kinds
from tests.conftest import CONFIG_DIR, compose_config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
RAW_STAGES: dict[str, dict] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
TASKS = sorted(PARAMS["tasks"])
STEPS = ("prepare", "train", "evaluate")
CONFIGS = CONFIG_DIR.relative_to(ROOT).as_posix()  # the real folder, not the `configs` link
# What each step reads of the composed config: the nodes it instantiates or uses, and the
# groups whose chosen option fills them. (train/evaluate also *validate* `prepare`, but their
# outputs do not depend on it; `debug`/`experiment` are off in the pipeline.)
TRAIN_KEYS = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger")
STEP_KEYS = {
    "prepare": ("prepare", "data"),
    "train": TRAIN_KEYS,
    "evaluate": ("data", "model", "logger"),
    # the pipe task's own stages (defects.pipe): data stages build nothing from the config,
    # training stages all that training builds, refine loads bundles only
    "import": (),
    "clean": (),
    "layouts": (),
    "baselines": TRAIN_KEYS,
    "refine": (),
    "final": TRAIN_KEYS,
}
# A task whose models come from its own stage entry (`python -m defects.pipe stage=...`)
# trains in those stages; every task prepares and evaluates.
TRAINING_STEPS = ("train", "final")
STEP_GROUPS = {step: ("paths", "task", *keys) for step, keys in STEP_KEYS.items()}
# Never a dep of a pipeline stage, whatever the task.
UNRELATED = [
    "README.md",
    "notebooks",
    "benchmarks",
    "tests",
    "defects/serve.py",
    "defects/cli.py",
    "defects/__main__.py",
    f"{CONFIGS}/local",
]
INTERPOLATION = re.compile(r"\$\{\s*([\w.]+)\s*\}")


def lookup(key: str) -> Any:
    value: Any = PARAMS
    for part in key.split("."):
        value = value[part]
    return value


def resolve(node: Any) -> Any:
    """dvc.yaml with `${a.b}` replaced from params.yaml, as DVC's own interpolation does."""
    if isinstance(node, dict):
        return {resolve(k): resolve(v) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v) for v in node]
    if isinstance(node, str):
        whole = INTERPOLATION.fullmatch(node)
        if whole:
            return lookup(whole.group(1))
        return INTERPOLATION.sub(lambda m: str(lookup(m.group(1))), node)
    return node


STAGES = {name: resolve(stage) for name, stage in RAW_STAGES.items()}


def paths_of(entries: list) -> list[str]:
    """Paths of a deps/outs/metrics/plots list (plain strings or {path: options})."""
    return [entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []]


def outputs_of(stage: dict) -> list[str]:
    return [path for kind in ("outs", "metrics", "plots") for path in paths_of(stage.get(kind))]


def step_and_task(name: str) -> tuple[str, str]:
    step, _, task = name.rpartition("_")
    return step, task


def command(stage: dict) -> tuple[str, list[str]]:
    argv = shlex.split(stage["cmd"])
    assert argv[:2] == ["python", "-m"], stage["cmd"]
    return argv[2], argv[3:]


@cache
def stage_config(name: str) -> DictConfig:
    return compose_config(command(STAGES[name])[1])


@cache
def group_choices(name: str) -> dict[str, str]:
    """The option Hydra picked for each config group under this stage's overrides."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=command(STAGES[name])[1], return_hydra_config=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    return {g: c for g, c in choices.items() if c is not None and not g.startswith("hydra")}


def overlaps(dep: str, path: str) -> bool:
    """`dep` is `path`, a folder holding it, or a file inside it."""
    return dep == path or path.startswith(f"{dep}/") or dep.startswith(f"{path}/")


def covered(path: str, deps: list[str], sep: str = "/") -> bool:
    """`path` is one of `deps` or lies under one."""
    return any(path == dep or path.startswith(f"{dep}{sep}") for dep in deps)


def module_file(name: str) -> str | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path.relative_to(ROOT).as_posix()
    return None


def type_checking_only(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:`: imports for annotations, never run."""
    return isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")


def import_time_nodes(tree: ast.Module) -> Iterator[ast.AST]:
    """Statements that run when the module is imported: not the bodies of functions."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if type_checking_only(node):
            continue
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def imported_modules(path: str, lazy: bool) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names: set[str] = set()
    for node in ast.walk(tree) if lazy else import_time_nodes(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name.split(".")[0] == "defects"}


def import_closure(modules: set[str], lazy: bool = False) -> set[str]:
    """Repo files that importing `modules` runs (`lazy`: also imports inside functions)."""
    files: set[str] = set()
    todo = list(modules)
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # `import a.b.c` runs a, a.b and a.b.c
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in files:
                files.add(path)
                todo.extend(imported_modules(path, lazy))
    return files


def targets(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for child in node.values():
            yield from targets(child)
    elif isinstance(node, list):
        for child in node:
            yield from targets(child)


def entry_modules(name: str) -> set[str]:
    """The stage's entry point and the `defects` objects its config nodes build."""
    step, _ = step_and_task(name)
    container = OmegaConf.to_container(stage_config(name), resolve=True)
    keys = STEP_KEYS.get(step, tuple(container))
    found = {t for key in keys for t in targets(container.get(key))}
    objects = (get_object(t) for t in found if t.startswith("defects."))
    # The module that defines each object (a package may re-export it lazily); a package
    # run with -m runs its __main__.
    module = command(STAGES[name])[0]
    if (ROOT.joinpath(*module.split(".")) / "__main__.py").is_file():
        module = f"{module}.__main__"
    modules = {module, *(o.__module__ for o in objects)}
    # A LightningModule's kind is the kind.py beside its module.py, imported by name.
    kinds = {m.rpartition(".")[0] + ".kind" for m in modules if m.endswith(".module")}
    return modules | {k for k in kinds if module_file(k) is not None}


def source_file(target: str) -> str:
    return Path(inspect.getsourcefile(get_object(target))).relative_to(ROOT).as_posix()


@cache
def own_files(task: str) -> dict[str, str]:
    """What belongs to one task alone: its model kind, data module and data generator."""
    cfg = compose_config([f"task={task}"])
    (kind,) = (p for p in builtin_kinds().values() if cfg.model._target_.startswith(f"{p}."))
    return {
        "kind": Path(module_file(kind)).parent.as_posix(),
        "data": source_file(cfg.data._target_),
        "generator": source_file(cfg.prepare._target_),
    }


def foreign_files(task: str) -> set[str]:
    """Other tasks' own files, and every registered kind this task does not use."""
    mine = set(own_files(task).values())
    kinds = {Path(module_file(p)).parent.as_posix() for p in builtin_kinds().values()}
    others = {path for other in TASKS for path in own_files(other).values()}
    return (others | kinds) - mine


def test_every_task_declares_its_stages() -> None:
    for task in TASKS:
        for step in ("prepare", "evaluate"):
            assert f"{step}_{task}" in STAGES, f"task {task} has no {step}_{task} stage"
        assert any(f"{s}_{task}" in STAGES for s in TRAINING_STEPS), f"{task} trains nothing"
    for name in STAGES:
        assert step_and_task(name)[1] in TASKS, f"{name}: name it <step>_<task in params.yaml>"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_command_composes_for_its_task(name: str) -> None:
    step, task = step_and_task(name)
    module, overrides = command(STAGES[name])
    assert module_file(module), f"{name}: no module {module}"
    if step in STEPS:  # defects.<step>, or a task's own entry running that stage
        assert module == f"defects.{step}" or f"stage={step}" in overrides, name
    if module == "defects.pipe":
        assert f"stage={step}" in overrides, f"{name}: runs another stage"
    assert f"task={task}" in overrides
    cfg = stage_config(name)
    assert cfg.task_name == task
    validate_config(cfg)
    for override in overrides:  # each value reaches the composed config as written
        key, _, value = override.partition("=")
        if not (CONFIG_DIR / key).is_dir():  # `task=weld` picks a group option
            assert OmegaConf.select(cfg, key) == yaml.safe_load(value), override
    if step == "train":  # the learning rate reaches the optimizer the model builds
        assert cfg.model.optimizer.lr == PARAMS["tasks"][task]["train"]["lr"]
    outputs = [str(cfg.paths[key]) for key in ("data_dir", "model_dir", "metrics_dir", "plots_dir")]
    if OmegaConf.select(cfg, "pipe.work_dir"):
        outputs.append(str(cfg.pipe.work_dir))
    for path in outputs_of(STAGES[name]):
        assert covered(path, outputs), f"{name}: {path} is not where the run writes"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_params_are_what_its_command_uses(name: str) -> None:
    declared = [p for p in RAW_STAGES[name].get("params", []) if isinstance(p, str)]
    used = set(INTERPOLATION.findall(RAW_STAGES[name]["cmd"]))
    for key in used:
        assert covered(key, declared, sep="."), (
            f"{name}: the command uses ${{{key}}} but `params` does not track it"
        )
    for param in declared:
        value = lookup(param)
        leaves = [f"{param}.{k}" for k in value] if isinstance(value, dict) else [param]
        for leaf in leaves:
            assert leaf in used, f"{name}: tracks {leaf}, which its command never passes"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_exist(name: str) -> None:
    upstream = {path for other in STAGES.values() for path in outputs_of(other)}
    for dep in paths_of(STAGES[name]["deps"]):
        assert not dep.startswith("configs/"), f"{name}: use the real path {CONFIGS}/, not the link"
        assert (ROOT / dep).exists() or dep in upstream, f"{name}: dep {dep} does not exist"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_exclude_what_it_does_not_read(name: str) -> None:
    _, task = step_and_task(name)
    for dep in paths_of(STAGES[name]["deps"]):
        for path in [*UNRELATED, *foreign_files(task)]:
            assert not overlaps(dep, path), f"{name}: dep {dep} takes in {path}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_the_code_it_imports(name: str) -> None:
    """Everything the entry point and its config's objects import is a dep, and every code
    dep is something the stage can import. defects/data/synthetic/__init__.py loads each
    task's generator lazily; only the task's own one runs, so the others are no dep."""
    _, task = step_and_task(name)
    deps = paths_of(STAGES[name]["deps"])
    modules = entry_modules(name)
    generators = {own_files(other)["generator"] for other in TASKS if other != task}
    missing = sorted(p for p in import_closure(modules) - generators if not covered(p, deps))
    assert not missing, f"{name}: imports {missing}, not in its deps"
    reachable = import_closure(modules, lazy=True)
    code = [dep for dep in deps if dep.startswith("defects/") and not dep.startswith(CONFIGS)]
    for dep in code:
        assert any(covered(path, [dep]) for path in reachable), f"{name}: never imports {dep}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_config_deps_are_the_options_it_uses(name: str) -> None:
    step, _ = step_and_task(name)
    choices = group_choices(name)
    chosen = {f"{CONFIGS}/config.yaml"} | {f"{CONFIGS}/{g}/{c}.yaml" for g, c in choices.items()}
    listed = {dep for dep in paths_of(STAGES[name]["deps"]) if dep.startswith(f"{CONFIGS}/")}
    assert listed <= chosen, f"{name}: lists configs it does not compose: {listed - chosen}"
    if step in STEP_GROUPS:
        groups = STEP_GROUPS[step]
        expected = {f"{CONFIGS}/config.yaml"} | {
            f"{CONFIGS}/{g}/{choices[g]}.yaml" for g in groups if g in choices
        }
        assert listed == expected, f"{name}: config deps differ from {sorted(expected)}"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_stage_but_prepare_reads_an_upstream_output(name: str) -> None:
    """The DAG is connected: a stage that reads data another stage writes depends on it
    (import_pipe once ran before prepare_pipe because its dep on data/pipe was missing)."""
    step, task = step_and_task(name)
    if step == "prepare":
        return
    upstream = {
        path
        for other, stage in STAGES.items()
        if other != name and step_and_task(other)[1] == task
        for path in outputs_of(stage)
    }
    deps = paths_of(STAGES[name]["deps"])
    assert any(dep in upstream for dep in deps), f"{name}: depends on no output of its task"


def test_lock_holds_only_declared_stages() -> None:
    """Every stage dvc.lock records is one dvc.yaml declares: DVC silently keeps the entries of
    a renamed or dropped stage (`prepare@weld` outlived its `foreach`), which then describe
    files that no longer exist. DVC expands the names (`foreach`/`matrix` give `name@key`),
    as `dvc stage list` does. A declared stage without an entry is fine: it has not run."""
    from dvc.dvcfile import load_file
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        pipeline = load_file(repo, str(ROOT / "dvc.yaml"))
        declared = set(pipeline.stages)
        locked = set(pipeline.lockfile_contents.get("stages", {}))
    assert locked, "dvc.lock: no stage entries read (is it at the repository root?)"
    stale = sorted(locked - declared)
    assert not stale, f"dvc.lock holds stages dvc.yaml does not declare: {stale}"
