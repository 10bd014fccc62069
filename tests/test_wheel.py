"""The package as a factory meets it: a wheel built by the PEP 517 backend, installed into a
fresh venv, used from an empty folder: `defects --help`, `python -m defects.prepare` (the
Hydra configs come from the wheel) and `defects.load` on a bundle.

The venv reuses this interpreter's installed dependencies (torch & co.) through a .pth file
of plain paths, and gets the wheel with `--no-deps`. `python -m venv --system-site-packages`
would not do: run from a venv (as CI runs), it exposes the base interpreter's packages, not
the venv's. Plain paths in a .pth file do not run the .pth files they point at, so the
editable install of the checkout (itself a .pth) stays out: the test asserts that `defects`
is imported from the new venv.
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.test_predict_segmentation import CLASS_NAMES, H, W, make_segmentation_bundle, write_grey

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.1.0"
TIMEOUT = 300  # seconds per command: generous for a shared CI machine


def run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout, or a failure that shows what it printed."""
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build(hook: str, out: Path) -> Path:
    """One artefact from poetry-core's PEP 517 hook (`build_wheel` / `build_sdist`), as pip
    and `python -m build` call it, without fetching the backend: it must be installed."""
    code = f"import sys; from poetry.core.masonry import api; print(api.{hook}(sys.argv[1]))"
    name = run(sys.executable, "-c", code, out, cwd=ROOT).strip().splitlines()[-1]
    return out / name


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheel (built through pip, the way users build it) and the sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", out, ROOT,
        cwd=out,
    )  # fmt: skip
    wheel = out / f"defects-{VERSION}-py3-none-any.whl"
    assert wheel.is_file(), sorted(p.name for p in out.iterdir())
    return {"wheel": wheel, "sdist": build("build_sdist", out)}


def shipped_files() -> set[str]:
    """Every file under defects/ that git tracks or would track (not ignored)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout: the wheel is compared with what git tracks")
    listed = run(
        "git", "ls-files", "--cached", "--others", "--exclude-standard", "defects", cwd=ROOT
    )
    return {line for line in listed.splitlines() if (ROOT / line).is_file()}


def test_wheel_ships_every_package_file_and_nothing_ignored(dist: dict[str, Path]) -> None:
    """Configs, templates, static files: whatever git has under defects/ is in the wheel, and
    nothing git ignores is (`configs/local/*.yaml` holds a machine's settings)."""
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    package = {n for n in names if n.startswith("defects/")}
    assert package == shipped_files()
    assert {"defects/configs/config.yaml", "defects/configs/prepare/synthetic_weld.yaml"} <= package
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_wheel_declares_the_command(dist: dict[str, Path]) -> None:
    text = zipfile.ZipFile(dist["wheel"]).read(f"defects-{VERSION}.dist-info/entry_points.txt")
    entry_points = configparser.ConfigParser()
    entry_points.read_string(text.decode())
    assert entry_points["console_scripts"]["defects"] == "defects.cli:main"


def test_sdist_carries_the_configs(dist: dict[str, Path]) -> None:
    with tarfile.open(dist["sdist"]) as sdist:
        names = set(sdist.getnames())
    top = f"defects-{VERSION}"
    assert {f"{top}/pyproject.toml", f"{top}/README.md", f"{top}/defects/configs/config.yaml"} <= (
        names
    )


def test_twine_check_passes(dist: dict[str, Path]) -> None:
    out = run(
        sys.executable, "-m", "twine", "check", "--strict", dist["wheel"], dist["sdist"], cwd=ROOT
    )
    assert out.count("PASSED") == 2, out


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; this interpreter's site-packages supply its deps."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root.parent)
    python = root / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=root)
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(site.strip()) / "_reuse_test_site_packages.pth").write_text("\n".join(ours) + "\n")
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
        dist["wheel"],
        cwd=root.parent,
    )  # fmt: skip
    return root


@pytest.fixture
def empty(tmp_path: Path) -> Path:
    """The working folder: empty, so no checkout can be imported from it."""
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def venv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return {**env, "PYTHONNOUSERSITE": "1", "TQDM_DISABLE": "1"}


def test_installed_command_introduces_itself(venv: Path, empty: Path) -> None:
    out = run(venv / "bin" / "defects", "--help", cwd=empty, env=venv_env())
    assert out.split()[:2] == ["NAME", "defects"], out[:200]
    assert "__main__" not in out
    assert "prepare" in out and "import_voc" in out


def test_prepare_from_the_wheel(venv: Path, empty: Path) -> None:
    """The Hydra app composes the configs shipped in the wheel and writes where it is told."""
    data, plots = empty / "data", empty / "plots"
    run(
        venv / "bin" / "python", "-m", "defects.prepare", "task=weld",
        "prepare.n_train=3", "prepare.n_valid=2", "prepare.n_test=1",
        "prepare.width=160", "prepare.height=128",
        f"paths.data_dir={data}", f"paths.plots_dir={plots}",
        cwd=empty,
        env=venv_env(),
    )  # fmt: skip
    counts = {s: len(list((data / s / "images").glob("*.png"))) for s in ("train", "valid", "test")}
    assert counts == {"train": 3, "valid": 2, "test": 1}
    assert (data / "data.yaml").is_file() and (plots / "data_samples.png").is_file()


LOAD = """
import json, sys
import defects
predictor = defects.load(sys.argv[1])
result = predictor.predict(sys.argv[2])
print(json.dumps({"file": defects.__file__, "classes": list(predictor.class_names),
                  "areas": [int(m.sum()) for m in result.masks]}))
"""


def test_load_a_bundle_from_the_wheel(venv: Path, empty: Path, tmp_path: Path) -> None:
    bundle = make_segmentation_bundle(tmp_path / "bundle.pt")
    image = write_grey(tmp_path / "strip.png", H, W, 1)
    out = run(venv / "bin" / "python", "-c", LOAD, bundle, image, cwd=empty, env=venv_env())
    found = json.loads(out.strip().splitlines()[-1])
    assert Path(found["file"]).is_relative_to(venv), found["file"]
    assert found["classes"] == CLASS_NAMES
    # the bundle is built to mark every pixel as pits and scratches, nothing else
    assert found["areas"] == [H * W, 0, H * W, 0]
