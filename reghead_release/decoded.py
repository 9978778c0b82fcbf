"""Datasets whose images come out decoded at the size a model trains at: `with_decoded_images`,
`with_expression_pairs` and `collate`.

`datasets.Image` decodes every image in full with PIL, and the torch format copies it through
numpy; a model training at 256 px then resizes it again. Here the images are decoded once, by
`JpegDecoder` (libjpeg-turbo's DCT scaling), from the JPEG bytes as Arrow holds them (no copy),
straight into the array the batch is made of:

- A map-style `Dataset` gets a format of its own (`FORMAT_TYPE`): `dataset[i]`, `dataset[i:j]`
  and a DataLoader's `__getitems__` decode the rows asked for, a batch at once, into one array.
- A streaming `IterableDataset` gets a formatting of its own too, applied (as `datasets` applies
  formats) after shuffling, splitting and selecting: each row is a `DecodedRow` that holds its
  JPEG bytes and decodes an image only when it is read, or when a batch of rows is collated.
- `collate` (the DataLoader's `collate_fn`) is torch's `default_collate` for these rows: it decodes
  a batch of `DecodedRow`s straight into one tensor, joins the rows of a map-style batch back into
  the tensor they were decoded into, and keeps strings, None and lists of different lengths
  (`accessories`) as lists. torch's own `default_collate` gives the same tensors.

In a DataLoader worker, batch tensors live in shared memory the worker reuses
(`shared_batches`). Tensors are (3, height, width) views of (height, width, 3) pixels:
channels-last, as decoded, never transposed.
"""

from __future__ import annotations

import hashlib
import sys
import weakref
from pathlib import Path
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, partial
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from .decode import CHANNELS, ImageDecodeError, JpegDecoder
from .schema import EXPRESSIONS, NEUTRAL_EXPRESSION

FORMATS = ("torch", "numpy", "pil")
FORMAT_TYPE = "reghead-decoded"  # the `datasets` format type of a map-style dataset made here
EXPRESSION_INDEX = "expression_index"
TARGETS = ("all", "one")
# Columns that name a row in errors and pick its sampled expression, in order of preference.
KEY_COLUMNS = ("sample_key", "identity")


@dataclass(frozen=True)
class ImageOutput:
    """One output column of decoded images, from one image column or several.

    `sources` are image columns: with `stack`, each row gets one (k, ...) stack of all of them;
    with `pick_one`, one of them (chosen from the row's key, the seed and the epoch). `indices`
    are the values `expression_index` takes for each source.
    """

    name: str
    sources: tuple[str, ...]
    stack: bool = False
    pick_one: bool = False
    indices: tuple[int, ...] = ()


@dataclass(frozen=True)
class DecodeSpec:
    """What a dataset made here decodes, at which size, into which format."""

    decoder: JpegDecoder
    outputs: tuple[ImageOutput, ...]
    format: str = "torch"
    lazy_rows: bool = False  # streaming: rows are `DecodedRow`s, decoded when read or collated
    seed: int = 0
    epoch: int = 0
    index_column: str | None = None  # pairs: the expression index of each target

    @cached_property
    def sources(self) -> frozenset[str]:
        return frozenset(column for output in self.outputs for column in output.sources)

    def present(self, columns) -> tuple[ImageOutput, ...]:
        """The outputs whose source columns are all among `columns` (select_columns may drop some)."""
        columns = set(columns)
        return tuple(output for output in self.outputs if columns.issuperset(output.sources))

    def layout(self, columns: tuple[str, ...]) -> "Layout":
        """What a table or row with these columns gives (kept per column tuple: rows share it)."""
        cache = self.__dict__.setdefault("_layouts", {})
        if columns not in cache:
            outputs = self.present(columns)
            used = {column for output in outputs for column in output.sources}
            cache[columns] = Layout(
                images=tuple(column for column in columns if column in used),
                others=tuple(column for column in columns if column not in self.sources),
                names=_row_names(self, columns),
            )
        return cache[columns]


class Layout(NamedTuple):
    images: tuple[str, ...]  # the source columns decoded
    others: tuple[str, ...]  # the columns passed through
    names: tuple[str, ...]  # the columns of an output row, in order


# --- the JPEG bytes of a column, without copies -------------------------------------------------


def _arrow_images(table: pa.Table, column: str, keys: Sequence[str | None]) -> list:
    """The JPEG bytes of each row of an image column, as memoryviews of Arrow's buffers."""
    images: list = []
    for chunk in table.column(column).chunks:
        values = chunk.field("bytes") if pa.types.is_struct(chunk.type) else chunk
        if chunk.null_count or values.null_count:
            missing = chunk.is_null().to_pylist() if chunk.null_count else values.is_null().to_pylist()
            row = len(images) + missing.index(True)
            raise ImageDecodeError(f"{_where(column, keys, row)} is missing (null)")
        images.extend(_binary_slices(values))
    return images


def _binary_slices(values: pa.Array) -> list:
    if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
        _, offsets, data = values.buffers()
        width = np.int32 if pa.types.is_binary(values.type) else np.int64
        bounds = np.frombuffer(offsets, dtype=width, count=len(values) + 1, offset=values.offset * width().itemsize).tolist()
        whole = memoryview(data).cast("B") if data is not None else memoryview(b"")
        return [whole[start:end] for start, end in zip(bounds, bounds[1:])]
    return [value if value is not None else b"" for value in values.to_pylist()]  # binary_view and the like


def _python_images(values: Sequence, column: str, keys: Sequence[str | None]) -> list:
    """The images of values in Python form: {"bytes": ..., "path": ...} as `datasets` gives them
    (a path alone is read), bytes, or PIL images (decoded by someone before)."""
    images = []
    for row, value in enumerate(values):
        data = value.get("bytes") if isinstance(value, dict) else value
        if data is None and isinstance(value, dict) and value.get("path"):
            data = Path(value["path"]).read_bytes()
        if data is None:
            raise ImageDecodeError(f"{_where(column, keys, row)} is missing (null)")
        images.append(data)
    return images


def _where(column: str, keys: Sequence[str | None], row: int) -> str:
    key = keys[row] if row < len(keys) else None
    return f"image {column!r} of sample {key!r}" if key is not None else f"image {column!r} of row {row}"


def _row_keys(columns: Mapping[str, Sequence], count: int) -> list[str | None]:
    for name in KEY_COLUMNS:
        if name in columns:
            return list(columns[name])
    return [None] * count


# --- decoding a batch ---------------------------------------------------------------------------


def _pick(spec: DecodeSpec, key: str | None, choices: int, column: str) -> int:
    """The source a row's sampled output takes: a hash of the seed, the epoch and the row's key."""
    if key is None:
        raise ValueError(f"{column!r} picks one expression per row from its {' or '.join(KEY_COLUMNS)}: keep that column")
    digest = hashlib.blake2b(f"{spec.seed}\0{spec.epoch}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % choices


def decode_batch(spec: DecodeSpec, images: Mapping[str, Sequence], keys: Sequence[str | None], *, collated: bool = False) -> dict:
    """{output name: a batch of decoded images (and `spec.index_column`)} for the rows of `images`.

    `images` maps each source column to the JPEG bytes of its rows, `keys` names the rows. All
    outputs are decoded into one buffer (one shared-memory buffer in a DataLoader worker, one file
    descriptor to send). With `collated`, the batch is what torch's `default_collate` makes of the
    rows: tensors (numpy format: (batch, height, width, 3) tensors), PIL images in lists.
    """
    layout = "chw" if spec.format == "torch" else "hwc" if collated and spec.format == "numpy" else spec.format
    count = len(keys)
    result, plans = {}, []
    for output in spec.present(images):
        if output.pick_one:
            picks = [_pick(spec, keys[row], len(output.sources), output.name) for row in range(count)]
            chosen = [output.sources[pick] for pick in picks]
            flat = [images[column][row] for row, column in enumerate(chosen)]
            names = [_where(column, keys, row) for row, column in enumerate(chosen)]
            where = names.__getitem__
            indices = [output.indices[pick] for pick in picks]
        else:
            flat = [images[column][row] for row in range(count) for column in output.sources]
            where = partial(_where_in_stack, output.sources, keys)
            indices = [list(output.indices)] * count
        per_row = 1 if output.pick_one else len(output.sources)
        height, width, _ = spec.decoder.output_shape(flat[0]) if flat else (spec.decoder.size or 0,) * 2 + (CHANNELS,)
        shape = (count, per_row, height, width, CHANNELS) if output.stack else (count, height, width, CHANNELS)
        plans.append((output, flat, where, shape, indices))
    for (output, flat, where, shape, indices), (batch, pixels) in zip(plans, _batch_arrays(layout, [plan[3] for plan in plans])):
        if flat:
            spec.decoder.decode_into(flat, pixels.reshape(-1, *shape[-3:]), where=where)
        result[output.name] = _in_layout(layout, batch, pixels, stack=output.stack)
        if spec.index_column and output.indices:
            result[spec.index_column] = _indices(layout, indices)
    return result


def _where_in_stack(sources: tuple[str, ...], keys: Sequence[str | None], position: int) -> str:
    return _where(sources[position % len(sources)], keys, position // len(sources))


def _batch_arrays(layout: str, shapes: list[tuple[int, ...]]) -> list[tuple[object, np.ndarray]]:
    """(batch, its pixels as a numpy view) for each shape, all in one new buffer."""
    sizes = [int(np.prod(shape)) for shape in shapes]
    if layout in ("chw", "hwc"):
        buffer = _torch_batch((sum(sizes),))
        batches = [buffer[start : start + size].view(shape) for start, size, shape in zip(np.cumsum([0, *sizes]), sizes, shapes)]
        return [(batch, batch.numpy()) for batch in batches]
    buffer = np.empty(sum(sizes), dtype=np.uint8)
    arrays = [buffer[start : start + size].reshape(shape) for start, size, shape in zip(np.cumsum([0, *sizes]), sizes, shapes)]
    return [(array, array) for array in arrays]


def _in_layout(layout: str, batch, pixels: np.ndarray, *, stack: bool):
    """A decoded (rows, [k,] height, width, 3) batch as the layout gives it: "chw" (tensor views,
    channels-last), "hwc" (tensors), "numpy", or "pil" (PIL images; lists of k with `stack`)."""
    if layout == "chw":
        return batch.permute(0, 1, 4, 2, 3) if stack else batch.permute(0, 3, 1, 2)
    if layout == "pil":
        from PIL import Image

        images = [Image.fromarray(image) for image in pixels.reshape(-1, *pixels.shape[-3:])]
        per_row = pixels.shape[1] if stack else 1
        return [images[i : i + per_row] for i in range(0, len(images), per_row)] if stack else images
    return batch


def _indices(layout: str, indices: list):
    """The expression indices of a batch: (rows,) or (rows, k) integers, in the layout's kind."""
    if layout in ("chw", "hwc"):
        torch = _torch()
        return torch.tensor(indices, dtype=torch.int64)
    if layout == "numpy":
        return np.asarray(indices, dtype=np.int64)
    return indices


# --- torch: batches in shared memory, collation --------------------------------------------------

_decoded_storages: weakref.WeakSet = weakref.WeakSet()  # storages of batches decoded here: only these are joined


def _torch():
    import torch

    _register_default_collate()
    return torch


def _torch_batch(shape: tuple[int, ...]):
    from .shared_batches import batch_tensor

    batch = batch_tensor(shape)
    _decoded_storages.add(batch.untyped_storage())
    return batch


_registered = False


def _register_default_collate() -> None:
    """Let torch's own `default_collate` collate `DecodedRow`s as `collate` does (torch's documented
    way to extend it: its `default_collate_fn_map`)."""
    global _registered
    if _registered:
        return
    from torch.utils.data._utils.collate import default_collate_fn_map

    default_collate_fn_map[DecodedRow] = _collate_rows_fn
    _registered = True


def _collate_rows_fn(batch, *, collate_fn_map=None):
    return collate_rows(batch)


def collate(batch: Sequence):
    """A DataLoader's `collate_fn` for datasets made by `with_decoded_images` / `with_expression_pairs`.

    It gives what torch's `default_collate` gives (image batches as uint8 tensors
    (batch, 3, height, width), numbers as tensors), without a copy: rows of a streaming dataset
    are decoded straight into the batch, rows of a map-style dataset are joined back into the
    batch they were decoded into. Strings, None and lists stay lists, also lists of different
    lengths (`accessories`), where `default_collate` raises. Any other batch goes to
    `default_collate`.
    """
    from torch.utils.data import default_collate

    first = batch[0]
    if isinstance(first, DecodedRow):
        return collate_rows(batch)
    if isinstance(first, Mapping):
        return {key: _collate_column([row[key] for row in batch]) for key in first}
    return default_collate(batch)


def collate_rows(rows: Sequence["DecodedRow"]) -> dict:
    """A batch of `DecodedRow`s: every image decoded into one batch tensor, the other columns collated."""
    spec = rows[0].spec
    keys = [row.key for row in rows]
    images = {column: [row.raw[column] for row in rows] for column in rows[0].raw}
    decoded = decode_batch(spec, images, keys, collated=True)
    batch = {}
    for name in rows[0]:
        batch[name] = decoded[name] if name in decoded else _collate_column([row.values[name] for row in rows])
    return batch


def _collate_column(values: list):
    from torch.utils.data import default_collate

    torch = _torch()
    first = values[0]
    if isinstance(first, torch.Tensor):
        joined = _join_views(values)
        return joined if joined is not None else default_collate(values)
    if isinstance(first, (bool, int, float, np.ndarray, np.number)) and all(type(v) is type(first) for v in values):
        return default_collate(values)
    if isinstance(first, np.ndarray):
        return default_collate(values)
    return list(values)


def _join_views(values: list):
    """The batch tensor `values` were cut from, when they are its consecutive rows (decoded here)."""
    first = values[0]
    storage = first.untyped_storage()
    if storage not in _decoded_storages:
        return None
    step = values[1].storage_offset() - first.storage_offset() if len(values) > 1 else first.numel()
    for position, value in enumerate(values):
        if (
            value.untyped_storage().data_ptr() != storage.data_ptr()
            or value.shape != first.shape
            or value.stride() != first.stride()
            or value.storage_offset() != first.storage_offset() + position * step
        ):
            return None
    return first.as_strided((len(values), *first.shape), (step, *first.stride()), first.storage_offset())


# --- rows of a streaming dataset ----------------------------------------------------------------


class DecodedRow(Mapping):
    """A row of a streaming dataset made here: its images are decoded when read.

    `row["frown"]` decodes that image (once); `collate` and torch's `default_collate` decode the
    images of a whole batch of rows at once, into the batch. The other columns are plain values.
    """

    __slots__ = ("spec", "values", "raw", "key", "_names", "_decoded")

    def __init__(self, *, spec: DecodeSpec, values: dict, raw: dict, key: str | None, names: tuple[str, ...]):
        self.spec = spec
        self.values = values  # the columns that are not decoded, in Python form
        self.raw = raw  # source column -> JPEG bytes
        self.key = key
        self._names = names
        self._decoded: dict | None = None

    def __getitem__(self, name: str):
        if name in self.values:
            return self.values[name]
        if name not in self._names:
            raise KeyError(name)
        if self._decoded is None:
            batch = decode_batch(self.spec, {column: [data] for column, data in self.raw.items()}, [self.key])
            self._decoded = {column: value[0] for column, value in batch.items()}
        return self._decoded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        return f"DecodedRow({dict(self)!r})"

    def __reduce__(self):
        return (_rebuild_row, (self.spec, self.values, {c: bytes(d) for c, d in self.raw.items()}, self.key, self._names))


def _rebuild_row(spec, values, raw, key, names) -> DecodedRow:
    return DecodedRow(spec=spec, values=values, raw=raw, key=key, names=names)


def _row_names(spec: DecodeSpec, columns: Sequence[str]) -> tuple[str, ...]:
    """The columns of an output row: each output where its first source stood, consumed sources dropped."""
    outputs = {output.sources[0]: output for output in spec.present(columns)}
    consumed = spec.sources
    names = []
    for column in columns:
        if column in outputs:
            names.append(outputs[column].name)
            if spec.index_column and outputs[column].indices:
                names.append(spec.index_column)
        elif column not in consumed:
            names.append(column)
    return tuple(names)


# --- the formatter -------------------------------------------------------------------------------


def _formatter_base():
    from datasets.formatting.formatting import TensorFormatter

    return TensorFormatter


class DecodedFormatter(_formatter_base()):
    """The `datasets` formatter of the datasets made here: decoded images, other columns as Python values.

    Map-style rows and batches are decoded when they are asked for; streaming rows are
    `DecodedRow`s (`spec.lazy_rows`), since a DataLoader collates them into batches afterwards.
    """

    def __init__(self, features=None, token_per_repo_id=None, spec: DecodeSpec | None = None, **kwargs):
        super().__init__(features=features, token_per_repo_id=token_per_repo_id)
        self.spec = spec
        self._python = None  # the PythonFormatter of the other columns, made on first use
        if "torch" in sys.modules:  # maybe in a DataLoader worker: set it up before it reads
            from .shared_batches import prepare_worker

            prepare_worker()

    def _python_columns(self, table: pa.Table, layout: Layout) -> dict[str, list]:
        if not layout.others:
            return {}
        if self._python is None:
            from datasets.formatting.formatting import PythonFormatter

            self._python = PythonFormatter(features=self.features)
        return self._python.format_batch(table.select(layout.others))

    def format_batch(self, pa_table: pa.Table) -> dict:
        layout = self.spec.layout(tuple(pa_table.column_names))
        values = self._python_columns(pa_table, layout)
        keys = _row_keys(values, pa_table.num_rows)
        images = {column: _arrow_images(pa_table, column, keys) for column in layout.images}
        decoded = decode_batch(self.spec, images, keys) if images else {}
        return {name: decoded[name] if name in decoded else values[name] for name in layout.names}

    def format_row(self, pa_table: pa.Table):
        if not self.spec.lazy_rows:
            return {name: value[0] for name, value in self.format_batch(pa_table).items()}
        layout = self.spec.layout(tuple(pa_table.column_names))
        values = {name: column[0] for name, column in self._python_columns(pa_table, layout).items()}
        key = next((values[name] for name in KEY_COLUMNS if name in values), None)
        raw = {column: _arrow_images(pa_table, column, [key])[0] for column in layout.images}
        return DecodedRow(spec=self.spec, values=values, raw=raw, key=key, names=layout.names)

    def format_column(self, pa_table: pa.Table):
        return self.format_batch(pa_table)[pa_table.column_names[0]]

    def recursive_tensorize(self, data: dict):
        """A row or a batch in Python form (a streaming dataset whose rows are not Arrow tables here)."""
        sources = [column for column in data if column in self.spec.sources]
        if not sources:
            return data
        is_batch = isinstance(data[sources[0]], list)
        columns = data if is_batch else {name: [value] for name, value in data.items()}
        count = len(columns[sources[0]])
        keys = _row_keys(columns, count)
        images = {column: _python_images(columns[column], column, keys) for column in sources}
        names = self.spec.layout(tuple(data)).names
        values = {name: column for name, column in columns.items() if name not in self.spec.sources}
        if not is_batch and self.spec.lazy_rows:
            return DecodedRow(spec=self.spec, values={k: v[0] for k, v in values.items()},
                              raw={c: images[c][0] for c in sources}, key=keys[0], names=names)
        decoded = decode_batch(self.spec, images, keys)
        batch = {name: decoded[name] if name in decoded else values[name] for name in names}
        return batch if is_batch else {name: value[0] for name, value in batch.items()}


def _register_map_style_format() -> None:
    from datasets.formatting import _FORMAT_TYPES, _register_formatter

    if FORMAT_TYPE not in _FORMAT_TYPES:
        _register_formatter(DecodedFormatter, FORMAT_TYPE)


_register_map_style_format()  # on import: a worker that unpickles a dataset's DecodeSpec imports this module


def _streaming_format_type(spec: DecodeSpec) -> str:
    """The format type of a streaming dataset with `spec`: `datasets` gives a streaming formatter
    no arguments, so each spec is a format type of its own, registered in every process that
    holds the dataset (`DecodedFormatting`)."""
    from datasets.formatting import _FORMAT_TYPES, _register_formatter

    name = f"{FORMAT_TYPE}-{hashlib.sha256(repr(spec).encode()).hexdigest()[:16]}"
    if name not in _FORMAT_TYPES:
        _register_formatter(partial(DecodedFormatter, spec=spec), name)
    return name


def _formatting_config_class():
    from datasets.iterable_dataset import FormattingConfig

    return FormattingConfig


@dataclass
class DecodedFormatting(_formatting_config_class()):
    """A streaming dataset's formatting that carries its spec, so that unpickling it (in a
    DataLoader worker started with spawn) registers its format type there too."""

    spec: DecodeSpec | None = None

    def __post_init__(self):
        self.format_type = _streaming_format_type(self.spec)

    def __setstate__(self, state: dict):
        self.__dict__.update(state)
        self.format_type = _streaming_format_type(self.spec)


# --- the public helpers ---------------------------------------------------------------------------


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"format={format!r}: expected one of {list(FORMATS)}")
    if format == "torch":
        try:
            _torch()
        except ImportError:
            raise ImportError("format='torch' needs PyTorch (pip install torch); format='numpy' needs only NumPy") from None


def _image_columns(dataset, wanted: Sequence[str] | None) -> list[str]:
    """The image columns to decode: `wanted`, checked, or every `Image` column, in the dataset's order."""
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)) and dataset:
        dataset = next(iter(dataset.values()))  # the splits of a dict share their features
    if not isinstance(dataset, (datasets.Dataset, datasets.IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset (or a dict of them), got {type(dataset).__name__}")
    features = dataset.features
    if features is None:
        if wanted is None:
            raise ValueError("the dataset's features are unknown (a map without features=?): pass expressions=[...]")
        return list(wanted)
    images = [name for name, feature in features.items() if isinstance(feature, datasets.Image)]
    if wanted is None:
        if not images:
            raise ValueError(f"the dataset has no image columns (its columns: {list(features)})")
        return images
    if isinstance(wanted, str):
        wanted = [wanted]
    unknown = [name for name in wanted if name not in images]
    if unknown:
        raise ValueError(f"expressions={list(wanted)!r}: {unknown} are not image columns of the dataset (its image columns: {images})")
    return [name for name in images if name in wanted]


def _with_spec(dataset, spec: DecodeSpec):
    import datasets

    if isinstance(dataset, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return type(dataset)({split: _with_spec(part, spec) for split, part in dataset.items()})
    if isinstance(dataset, datasets.Dataset):
        return dataset.with_format(FORMAT_TYPE, spec=replace(spec, lazy_rows=False))
    if isinstance(dataset, datasets.IterableDataset):
        for column in spec.sources:
            feature = dataset.features.get(column) if dataset.features else None
            if isinstance(feature, datasets.Image) and feature.decode:
                dataset = dataset.cast_column(column, datasets.Image(decode=False))  # keep the bytes for us
        decoded = dataset.with_format(None)
        decoded._formatting = DecodedFormatting(format_type=None, spec=replace(spec, lazy_rows=True))
        return decoded
    raise TypeError(f"expected a datasets.Dataset or IterableDataset (or a dict of them), got {type(dataset).__name__}")


def with_decoded_images(dataset, *, size: int | None = None, expressions: Sequence[str] | None = None, format: str = "torch"):
    """The same dataset, its images decoded at `size` x `size` when read.

    `dataset` is a map-style `Dataset` or a streaming `IterableDataset` (or a `DatasetDict` of
    them), from `load_dataset` on the Hub or a converted folder, or from the `RegHead` builder.
    The result is of the same kind, with the same rows, order, shuffling, splitting
    (`split_dataset_by_node`) and other columns; only the image columns change: every `Image`
    column (the ten expressions, or the `neutral` / `expression` columns of
    `expression_pairs_batch`), or those named in `expressions`, come out as

    - `format="torch"`: uint8 tensors (3, size, size), channels-last views; a DataLoader with the
      default collate, or `collate_fn=reghead.collate`, gives (batch, 3, size, size);
    - `format="numpy"`: uint8 arrays (size, size, 3), no PyTorch needed;
    - `format="pil"`: PIL images.

    Images are decoded by libjpeg-turbo at the smallest DCT scale (M/8 of their side) at least
    `size`, then resized (PIL bilinear) only when that scale is not `size`; `size=None` keeps
    each image's own size and gives PIL's pixels exactly. A JPEG that cannot be decoded raises
    `ImageDecodeError` naming the row's `sample_key` and the column.
    """
    _check_format(format)
    columns = _image_columns(dataset, expressions)
    spec = DecodeSpec(JpegDecoder(size), tuple(ImageOutput(column, (column,)) for column in columns), format)
    return _with_spec(dataset, spec)


def with_expression_pairs(
    dataset,
    *,
    size: int | None = None,
    targets: str = "all",
    seed: int = 0,
    epoch: int = 0,
    neutral: str = NEUTRAL_EXPRESSION,
    format: str = "torch",
):
    """(neutral, target, expression index) per identity, decoded like `with_decoded_images`.

    For blendshape and expression-editing models, which learn each expression from the neutral
    face. Each row keeps its other columns and gets, in place of its expression columns:

    - `neutral`: the neutral image (3, size, size);
    - `target`: with `targets="all"`, the other expressions stacked (9, 3, size, size); with
      `targets="one"`, one of them (3, size, size), picked per row from a hash of `seed`,
      `epoch` and the row's `sample_key`: the same pairs in every run, worker and rank;
    - `expression_index`: the target's position in `reghead.EXPRESSIONS`, (9,) or a scalar.

    Each image is decoded once, straight into the batch; pass another `epoch` for other pairs.
    A dataset loaded with only some expression columns pairs those.
    """
    _check_format(format)
    if targets not in TARGETS:
        raise ValueError(f"targets={targets!r}: expected one of {list(TARGETS)}")
    for name, value in (("seed", seed), ("epoch", epoch)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name}={value!r}: expected an integer")
    columns = _image_columns(dataset, None)
    if neutral not in columns:
        raise ValueError(f"neutral={neutral!r} is not an image column of the dataset (its image columns: {columns})")
    others = tuple(column for column in EXPRESSIONS if column != neutral and column in columns)
    if not others:
        raise ValueError(f"the dataset has no expression column besides {neutral!r} (its image columns: {columns})")
    outputs = (
        ImageOutput("neutral", (neutral,)),
        ImageOutput(
            "target", others, stack=targets == "all", pick_one=targets == "one", indices=tuple(EXPRESSIONS.index(c) for c in others)
        ),
    )
    spec = DecodeSpec(JpegDecoder(size), outputs, format, seed=seed, epoch=epoch, index_column=EXPRESSION_INDEX)
    return _with_spec(dataset, spec)
