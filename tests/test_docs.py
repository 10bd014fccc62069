"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing page
or an API reference (mkdocstrings) that names nothing fails the suite, and so does a build
that would fetch from the network (web fonts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of `config` into `site`, run from the repository root (the
    snippets' base path)."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def test_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    done = build(ROOT / "mkdocs.yml", site)
    assert done.returncode == 0, done.stderr[-4000:]
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["theme"]["font"] is False, "web fonts would be fetched at build time"
    api = (site / "reference" / "api" / "index.html").read_text()
    for name in ("defects.load", "defects.results.Detections", "defects.settings.Settings"):
        assert f'id="{name}"' in api, f"{name} is missing from the API reference"
    # benchmarks/README.md is included, not copied: its sections appear on the site
    benchmarks = (site / "benchmarks" / "index.html").read_text()
    for heading in (ROOT / "benchmarks" / "README.md").read_text().splitlines():
        if heading.startswith("## "):
            assert heading.removeprefix("## ").strip("`") in benchmarks, heading


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    """The same config on one page that links to a page that does not exist: no site."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the missing page](missing.md).\n")
    tiny = {
        **{key: config[key] for key in ("site_name", "theme", "validation", "markdown_extensions")},
        "docs_dir": str(docs),
        "nav": [{"Home": "index.md"}],
        "plugins": [],
    }
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(tiny))
    broken = build(tmp_path / "mkdocs.yml", tmp_path / "site_broken")
    assert broken.returncode != 0
    assert "missing.md" in broken.stderr
    (docs / "index.md").write_text("# Home\n\nNo links.\n")
    fixed = build(tmp_path / "mkdocs.yml", tmp_path / "site_fixed")
    assert fixed.returncode == 0, fixed.stderr[-2000:]


def test_the_front_page_links_resolve() -> None:
    """README.md is not part of the site, so the strict build does not check its links: every
    relative link on it names a file of the repository (an anchor after it is not checked)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert len(local) >= 10, "the front page's links into the docs were not found"
    missing = [t for t in local if t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
