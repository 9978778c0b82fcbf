"""Parquet files the way the Hub serves them best, written one row group at a time.

The settings are those of `datasets`' `push_to_hub`, taken from `datasets` itself where it exposes
them: image bytes stored as they are (no compression, no dictionary, PLAIN), small columns snappy
compressed with dictionaries, the `huggingface` features metadata in the schema, a page index, and
content-defined chunking so that a re-upload of a changed release deduplicates. Image columns get
no min/max statistics. Row groups are sized by bytes, files are capped by size, and every file is
written under a temporary name, renamed when it is complete, then hashed (its SHA-256 goes into
croissant.json).
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.arrow_writer import get_parquet_column_options
from datasets.utils.py_utils import convert_file_size_to_int

from reghead_release.reader import Record
from reghead_release.schema import EXPRESSIONS

# The Hub's own limits, as `datasets` sets them for push_to_hub: 100 MB row groups, 500 MB files.
ROW_GROUP_BYTES = convert_file_size_to_int(datasets.config.MAX_ROW_GROUP_SIZE)
FILE_BYTES = convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)
# Records move from Python into Arrow every few MB, so a row group is never held twice.
BATCH_BYTES = 8 * 2**20
# Images wait for Arrow as slices of the reader's blocks (`READ_BYTES` each): a split that gets a
# few rows per block (validation, test) moves them on before it keeps more blocks than this alive.
HELD_BLOCKS = 2
TMP_SUFFIX = ".tmp"
# The columns other than the images, in the order `RecordColumns.append` fills them.
SCALAR_COLUMNS = ("sample_key", "identity", "identity_index", "animal", "style", "feature", "accessories", "sample_json")


def memory_pool_name() -> str:
    """The Arrow memory pool conversion runs with: jemalloc where pyarrow has it, else the system's.

    Arrow's default, mimalloc, keeps more of the freed row-group buffers: with 2 job processes the
    tree holds ~70 MiB more (PSS); with one job, jemalloc and the system allocator hold the same
    (docs/BENCHMARKS.md).
    """
    return "jemalloc" if "jemalloc" in pa.supported_memory_backends() else "system"


def _leaf_paths(field: pa.Field) -> Iterator[str]:
    if pa.types.is_struct(field.type):
        for child in field.type:
            yield f"{field.name}.{child.name}"
    elif pa.types.is_list(field.type):
        yield f"{field.name}.list.element"
    else:
        yield field.name


def writer_options(features: datasets.Features) -> dict:
    """Keyword arguments for `pq.ParquetWriter`: push_to_hub's settings, no statistics on images."""
    schema = features.arrow_schema
    options = get_parquet_column_options(features, schema)
    options["write_statistics"] = [
        leaf for field in schema if field.name not in EXPRESSIONS for leaf in _leaf_paths(field)
    ]
    options["write_page_index"] = True
    options["use_content_defined_chunking"] = dict(datasets.config.DEFAULT_CDC_OPTIONS)
    return options


class ImageColumn:
    """One image column being gathered: its images as the reader handed them out, and their paths.

    The images are joined into one buffer, with one array of offsets, when the column moves to
    Arrow: each image is copied exactly once, and Arrow takes the joined buffer without a copy.
    """

    def __init__(self):
        self.images: list = []
        self.paths: list[str] = []

    def append(self, path: str, data) -> None:
        self.images.append(data)
        self.paths.append(path)

    def to_arrow(self, struct_type: pa.StructType) -> pa.StructArray:
        """The column as `datasets.Image()` stores it: struct<bytes: binary, path: string>."""
        offsets = array("i", [0])  # Arrow's 32-bit binary offsets
        offsets.extend(accumulate(map(len, self.images)))
        buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(self.images))]
        data = pa.Array.from_buffers(pa.binary(), len(self.paths), buffers)
        paths = pa.array(self.paths, type=pa.string())
        return pa.StructArray.from_arrays([data, paths], fields=list(struct_type))


class RecordColumns:
    """Records gathered column by column, turned into one record batch at a time."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.rows = 0
        self.image_bytes = 0
        self._scalars: dict[str, list] = {name: [] for name in SCALAR_COLUMNS}
        self._images = [ImageColumn() for _ in EXPRESSIONS]
        self.blocks: set[int] = set()  # the reader's blocks that the images waiting here keep alive

    def append(self, record: Record, size: int) -> None:
        parts = record.parts
        values = (record.sample_key, record.identity, parts.index, parts.animal, parts.style, parts.feature, parts.accessories, record.sample_json)
        for column, value in zip(self._scalars.values(), values):
            column.append(value)
        for column, (path, data) in zip(self._images, record.images):
            column.append(path, data)
            if isinstance(data, memoryview):
                self.blocks.add(id(data.obj))
        self.rows += 1
        self.image_bytes += size

    def to_batch(self) -> pa.RecordBatch:
        arrays = []
        images = dict(zip(EXPRESSIONS, self._images))
        for field in self.schema:
            if field.name in images:
                arrays.append(images[field.name].to_arrow(field.type))
            else:
                arrays.append(pa.array(self._scalars[field.name], type=field.type))
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


def record_image_bytes(record: Record) -> int:
    return sum(len(data) for _, data in record.images)


@dataclass(frozen=True)
class Part:
    """A finished parquet file: its name in the folder, rows, size in bytes and SHA-256 (hex)."""

    name: str
    rows: int
    size: int
    sha256: str


class SplitParquetWriter:
    """Writes the rows of one split into `<folder>/<stem>-NNN.parquet`, part after part.

    A row group is written when its images reach `row_group_bytes` (or when `flush_row_group`
    is called); a new part starts when the next row group would take the file past `file_bytes`.
    """

    def __init__(
        self,
        *,
        folder: Path,
        stem: str,
        features: datasets.Features,
        row_group_bytes: int = ROW_GROUP_BYTES,
        file_bytes: int = FILE_BYTES,
        on_part: Callable[[Part], None] | None = None,
    ):
        self.folder = folder
        self.on_part = on_part  # told of each part once it is complete (an uploader sends it on)
        self.stem = stem
        self.schema = features.arrow_schema
        self.options = writer_options(features)
        self.row_group_bytes = row_group_bytes
        self.file_bytes = file_bytes
        self.parts: list[Part] = []
        self._columns = RecordColumns(self.schema)  # records not yet in Arrow
        self._batches: list[pa.RecordBatch] = []  # the row group being gathered
        self._group_rows = 0
        self._group_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._file_bytes = 0  # image bytes in the current part: they are nearly all of its size

    @property
    def buffered_bytes(self) -> int:
        return self._group_bytes + self._columns.image_bytes

    def add(self, record: Record, size: int) -> None:
        """Buffer a record whose images take `size` bytes (`record_image_bytes`)."""
        if self.buffered_bytes and self.buffered_bytes + size > self.row_group_bytes:
            self.flush_row_group()
        self._columns.append(record, size)
        if self._columns.image_bytes >= BATCH_BYTES or len(self._columns.blocks) > HELD_BLOCKS:
            self._move_records_to_arrow()

    def _move_records_to_arrow(self) -> None:
        if self._columns.rows:
            self._batches.append(self._columns.to_batch())
            self._group_rows += self._columns.rows
            self._group_bytes += self._columns.image_bytes
            self._columns = RecordColumns(self.schema)

    def flush_row_group(self) -> None:
        self._move_records_to_arrow()
        if not self._batches:
            return
        if self._writer is not None and self._file_bytes + self._group_bytes > self.file_bytes:
            self._close_part()
        if self._writer is None:
            self._open_part()
        table = pa.Table.from_batches(self._batches, schema=self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._file_rows += table.num_rows
        self._file_bytes += self._group_bytes
        self._batches, self._group_rows, self._group_bytes = [], 0, 0

    def _part_path(self, number: int) -> Path:
        return self.folder / f"{self.stem}-{number:03d}.parquet"

    def _open_part(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = str(self._part_path(len(self.parts))) + TMP_SUFFIX
        self._writer = pq.ParquetWriter(tmp, self.schema, **self.options)
        self._file_rows = self._file_bytes = 0

    def _close_part(self) -> None:
        self._writer.add_key_value_metadata(
            {"content_defined_chunking": json.dumps(self.options["use_content_defined_chunking"])}
        )
        self._writer.close()
        self._writer = None
        path = self._part_path(len(self.parts))
        os.replace(str(path) + TMP_SUFFIX, path)  # complete: now it may have its name
        with open(path, "rb") as f:  # just written: read back from the page cache, in this job's process
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        self.parts.append(Part(path.name, self._file_rows, path.stat().st_size, sha256))
        if self.on_part is not None:
            self.on_part(self.parts[-1])

    def close(self) -> list[Part]:
        """Write what is buffered, finish the last part and return all parts."""
        self.flush_row_group()
        if self._writer is not None:
            self._close_part()
        return self.parts

    def abort(self) -> None:
        """Drop the part being written (after an error): only complete parts keep their names."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - the original error is what matters
                pass
            self._writer = None
            Path(str(self._part_path(len(self.parts))) + TMP_SUFFIX).unlink(missing_ok=True)
