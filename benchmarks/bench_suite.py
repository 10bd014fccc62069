"""Wall time and peak memory of a command's whole process tree (the test suite, by default).

`/usr/bin/time -v` reports the largest single process; a parallel suite's pressure on the
machine is the sum over pytest, its xdist workers and the servers the tests start. Summed
RSS counts the pages those processes share (torch's libraries, forked memory) once per
process; summed PSS (proportional set size) splits each shared page between its sharers,
so it adds up to what the tree really holds. This samples both every `--interval` seconds
(psutil), with the machine's used memory (total - available) above its level at start,
and prints the peaks:

    .venv/bin/python benchmarks/bench_suite.py                  # the README's test command
    .venv/bin/python benchmarks/bench_suite.py -- .venv/bin/python -m pytest -p no:xdist
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time

import psutil

DEFAULT = [sys.executable, "-m", "pytest", "-q"]


def tree_memory(root: psutil.Process) -> tuple[int, int, int]:
    """(summed PSS, summed RSS, largest single RSS) of `root` and its descendants, bytes."""
    pss = rss = largest = 0
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0, 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
        pss += info.pss
        rss += info.rss
        largest = max(largest, info.rss)
    return pss, rss, largest


def used_memory() -> int:
    """The machine's memory in use (total - available), bytes."""
    memory = psutil.virtual_memory()
    return memory.total - memory.available


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("command", nargs="*", help="the command (after --); default: pytest")
    args = parser.parse_args()
    command = args.command or DEFAULT
    baseline = used_memory()
    started = time.monotonic()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peaks = [0, 0, 0, 0]  # PSS sum, RSS sum, largest RSS, machine's used memory above start
    while child.poll() is None:
        sample = (*tree_memory(root), used_memory() - baseline)
        peaks = [max(p, s) for p, s in zip(peaks, sample, strict=True)]
        time.sleep(args.interval)
    wall = time.monotonic() - started
    pss, rss, single, machine = (p / 1024**3 for p in peaks)
    print(
        f"\nbench_suite: {shlex.join(command)}\n"
        "| exit | wall s | peak PSS, tree GiB | peak RSS, tree GiB | peak RSS, one process GiB "
        "| peak used memory above start GiB |\n|---|---|---|---|---|---|\n"
        f"| {child.returncode} | {wall:.0f} | {pss:.2f} | {rss:.2f} | {single:.2f} "
        f"| {machine:.2f} |"
    )
    return child.returncode


if __name__ == "__main__":
    raise SystemExit(main())
