"""The summary of a `defects score` output: counted from the committed parts, so a resumed
job reports the whole output, and this run's own speed beside it."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow.compute as pc

from defects.score.model import ModelPackage
from defects.score.parts import read_parts
from defects.score.storage import Location, put_bytes

SUMMARY = "summary.json"


def summarize(
    out: Location, records: Location, package: ModelPackage, run: dict[str, float]
) -> dict[str, Any]:
    """images, defective, errors, per class {images, findings}, duplicates (0 unless two jobs
    wrote one output at once), and `run` (this job's images, seconds, Ray start-up)."""
    table = read_parts(records, ["path", "counts", "defective", "error"])
    images = table.num_rows
    images_with: Counter[str] = Counter()
    findings: Counter[str] = Counter()
    counted = pc.value_counts(table.column("counts").drop_null()).to_pylist()
    for entry in counted:  # few distinct values however many rows
        for name, n in json.loads(entry["values"]).items():
            images_with[name] += int(entry["counts"])
            findings[name] += int(n) * int(entry["counts"])
    scored, seconds = run["images"], run["seconds"]
    return {
        "images": images,
        "defective": int(pc.sum(table.column("defective")).as_py() or 0),
        "errors": images - table.column("error").null_count,
        "per_class": {
            name: {"images": images_with[name], "findings": findings[name]}
            for name in package.class_names
        },
        "duplicates": images - int(pc.count_distinct(table.column("path")).as_py() or 0),
        "images_per_s": round(scored / seconds, 2) if seconds > 0 else 0.0,
        "run": run,
        "model": {
            "name": package.name,
            "version": package.version,
            "kind": package.kind,
            "backend": package.backend,
        },
        "output": str(out),
    }


def write_summary(out: Location, summary: dict[str, Any]) -> str:
    path = out.join(SUMMARY)
    put_bytes(out, path, json.dumps(summary, indent=1).encode())
    return out.uri(path)


def format_summary(summary: dict[str, Any]) -> str:
    """The lines a person reads at the end of a run."""
    run = summary["run"]
    lines = [
        f"images      {summary['images']} ({run['images']} scored now, "
        f"{summary['images_per_s']} images/s; Ray start-up {run['ray_startup_s']:.1f} s)",
        f"defective   {summary['defective']}",
        f"errors      {summary['errors']}",
    ]
    lines += [
        f"  {name:<20} {c['images']} images, {c['findings']} findings"
        for name, c in summary["per_class"].items()
    ]
    if summary["duplicates"]:
        lines.append(f"duplicates  {summary['duplicates']} (two jobs wrote this output at once)")
    return "\n".join(lines)
