"""The output of `defects score`: Parquet parts under <output>/records, each written whole.

A part holds up to `part_size` rows of one write task and is named by a hash of its paths,
so a write task that Ray retries rewrites the same part instead of adding a second one.
Locally a part is written to a hidden temp sibling and renamed in; on S3 an object appears
only when its upload completes. So every part that can be seen is complete, and the `path`
column of the parts is the record of what is done: a restarted job skips those (resume).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink, WriteResult

from defects.score.storage import Location, put_bytes

RECORDS = "records"
PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
#: one row per image; `record` and `counts` are JSON text, null where `error` says why
SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("record", pa.string()),
        ("counts", pa.string()),
        ("defective", pa.bool_()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("error", pa.string()),
    ]
)


def part_name(paths: pa.Array) -> str:
    digest = hashlib.sha256("\n".join(sorted(paths.to_pylist())).encode()).hexdigest()
    return f"{PART_PREFIX}{digest[:24]}{PART_SUFFIX}"


class PartSink(Datasink[int]):
    """Ray Data sink: a write task's rows become parts of at most `part_size` rows; returns
    the rows written."""

    def __init__(self, records: Location, part_size: int) -> None:
        self.records = records
        self.part_size = part_size
        self.written = 0

    def write(self, blocks: Iterable[Block], ctx: Any) -> int:
        tables = [BlockAccessor.for_block(block).to_arrow() for block in blocks]
        tables = [t.select(SCHEMA.names).cast(SCHEMA) for t in tables if t.num_rows]
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        for start in range(0, table.num_rows, self.part_size):
            self.write_part(table.slice(start, self.part_size))
        return table.num_rows

    def write_part(self, part: pa.Table) -> None:
        buffer = pa.BufferOutputStream()
        pq.write_table(part, buffer)
        path = self.records.join(part_name(part.column("path").combine_chunks()))
        put_bytes(self.records, path, buffer.getvalue().to_pybytes())

    def on_write_complete(self, write_result: WriteResult[int]) -> None:
        self.written = int(sum(write_result.write_returns))


def part_paths(records: Location) -> list[str]:
    """The committed parts (hidden temp files are never listed)."""
    selector = pafs.FileSelector(records.root, allow_not_found=True)
    return sorted(
        info.path
        for info in records.fs.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.base_name.startswith(PART_PREFIX)
        and info.base_name.endswith(PART_SUFFIX)
    )


def read_parts(records: Location, columns: list[str]) -> pa.Table:
    """`columns` of every committed part (read in parallel by Arrow)."""
    paths = part_paths(records)
    if not paths:
        return SCHEMA.empty_table().select(columns)
    dataset = pads.dataset(paths, schema=SCHEMA, format="parquet", filesystem=records.fs)
    return dataset.to_table(columns=columns)


def done_paths(records: Location) -> pa.Array:
    """Every path the committed parts hold: what a restarted job skips."""
    return read_parts(records, ["path"]).column("path").combine_chunks()


def check_model(records: Location, name: str, version: str) -> None:
    """A resumed output must be the same model's: rows of two models never mix."""
    paths = part_paths(records)
    if not paths:
        return
    first = pq.read_table(paths[0], columns=["model", "model_version"], filesystem=records.fs)
    if first.num_rows and (first["model"][0].as_py(), first["model_version"][0].as_py()) != (
        name,
        version,
    ):
        found = f"{first['model'][0].as_py()} version {first['model_version'][0].as_py()}"
        raise ValueError(
            f"--output: {records} holds scores of {found}, not of {name} version {version}; "
            "give another --output (or the model that wrote it, to resume)"
        )


def clear_temp(records: Location) -> int:
    """Remove a killed run's half-written local temp parts; returns how many."""
    if not records.local:
        return 0
    selector = pafs.FileSelector(records.root, allow_not_found=True)
    stale = [
        info.path
        for info in records.fs.get_file_info(selector)
        if info.base_name.startswith(f".{PART_PREFIX}")
    ]
    for path in stale:
        records.fs.delete_file(path)
    return len(stale)
