"""Parquet files the way the Hub serves them best, written one row group at a time.

The settings are those of `datasets`' `push_to_hub`, taken from `datasets` itself where it exposes
them: image bytes stored as they are (no compression, no dictionary, PLAIN), small columns snappy
compressed with dictionaries, the `huggingface` features metadata in the schema, a page index, and
content-defined chunking so that a re-upload of a changed release deduplicates. Image columns get
no min/max statistics. Row groups are sized by bytes, files are capped by size, and every file is
written under a temporary name and renamed when it is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.arrow_writer import get_parquet_column_options
from datasets.utils.py_utils import convert_file_size_to_int

from reghead_release.schema import EXPRESSIONS

# The Hub's own limits, as `datasets` sets them for push_to_hub: 100 MB row groups, 500 MB files.
ROW_GROUP_BYTES = convert_file_size_to_int(datasets.config.MAX_ROW_GROUP_SIZE)
FILE_BYTES = convert_file_size_to_int(datasets.config.MAX_SHARD_SIZE)
# Rows move from Python into Arrow every few MB, so a row group is never held twice.
BATCH_BYTES = 8 * 2**20
TMP_SUFFIX = ".tmp"


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


def rows_to_batch(rows: list[dict], schema: pa.Schema) -> pa.RecordBatch:
    """Rows (images as {"bytes", "path"}) to one record batch; image bytes are copied once, never decoded."""
    arrays = []
    for field in schema:
        values = [row[field.name] for row in rows]
        if field.name in EXPRESSIONS:
            children = [pa.array([value[child.name] for value in values], type=child.type) for child in field.type]
            arrays.append(pa.StructArray.from_arrays(children, fields=list(field.type)))
        else:
            arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def row_image_bytes(row: dict) -> int:
    return sum(len(row[expression]["bytes"]) for expression in EXPRESSIONS)


@dataclass(frozen=True)
class Part:
    """A finished parquet file: its name in the folder, rows and size in bytes."""

    name: str
    rows: int
    size: int


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
        self._rows: list[dict] = []  # rows not yet in Arrow
        self._rows_bytes = 0
        self._batches: list[pa.RecordBatch] = []  # the row group being gathered
        self._group_rows = 0
        self._group_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self._file_bytes = 0  # image bytes in the current part: they are nearly all of its size

    @property
    def buffered_bytes(self) -> int:
        return self._group_bytes + self._rows_bytes

    def add(self, row: dict, size: int) -> None:
        """Buffer a row whose images take `size` bytes (`row_image_bytes`)."""
        if self.buffered_bytes and self.buffered_bytes + size > self.row_group_bytes:
            self.flush_row_group()
        self._rows.append(row)
        self._rows_bytes += size
        if self._rows_bytes >= BATCH_BYTES:
            self._move_rows_to_arrow()

    def _move_rows_to_arrow(self) -> None:
        if self._rows:
            self._batches.append(rows_to_batch(self._rows, self.schema))
            self._group_rows += len(self._rows)
            self._group_bytes += self._rows_bytes
            self._rows, self._rows_bytes = [], 0

    def flush_row_group(self) -> None:
        self._move_rows_to_arrow()
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
        self.parts.append(Part(path.name, self._file_rows, path.stat().st_size))
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
