"""Images decoded at size: the decoder's pixels, every way of holding the data, DataLoaders, pairs.

`JpegDecoder` against PIL (bit for bit at full size, within 30 dB PSNR of PIL's full decode +
bilinear resize at reduced sizes); `with_decoded_images` / `with_expression_pairs` on map-style
and streaming datasets from a converted folder, from parquet files and from the builder; the
DataLoader with workers, ranks, the default collate and `reghead.collate`.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets.distributed import split_dataset_by_node
from PIL import Image
from torch.utils.data import DataLoader

import reghead
from convert.push import main as convert_main
from reghead import EXPRESSIONS, NEUTRAL_EXPRESSION, ImageDecodeError, RegHead
from reghead_release import decode as decode_module
from reghead_release import decoded as decoded_module
from reghead_release.decode import JpegDecoder
from reghead_release.sample import draw_head

REPO = Path(__file__).resolve().parent.parent
HOLDERS = ("map", "stream", "parquet", "builder", "builder-stream")
MIN_PSNR_DB = 30.0  # reduced sizes against PIL's full decode + bilinear resize
OTHERS = [expression for expression in EXPRESSIONS if expression != NEUTRAL_EXPRESSION]


def jpeg(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


def pil_pixels(data: bytes, size: int | None = None) -> np.ndarray:
    """PIL's full decode, resized (bilinear) to `size` when given: the reference."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


HEAD = draw_head("id007_Owl_Photorealistic_round_eyes_a_wreath", "close_m_smile", 512)
KINDS = {
    "baseline 4:2:0": jpeg(HEAD, quality=95),
    "4:4:4": jpeg(HEAD, quality=90, subsampling=0),
    "progressive": jpeg(HEAD, quality=90, progressive=True),
    "grayscale": jpeg(HEAD.convert("L"), quality=90),
    "CMYK": jpeg(HEAD.convert("CMYK"), quality=90),
    "1024": jpeg(HEAD.resize((1024, 1024)), quality=95),
    "odd size 333x517": jpeg(HEAD.resize((333, 517)), quality=90),
}


@pytest.fixture(params=["simplejpeg", "pil"])
def backend(request, monkeypatch):
    """Each decoder: simplejpeg, and Pillow alone as where simplejpeg has no wheel."""
    if request.param == "pil":
        monkeypatch.setattr(decode_module, "_simplejpeg", lambda: None)
    return request.param


# --- the decoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_full_size_is_pils_decode_bit_for_bit(kind, backend):
    data = KINDS[kind]
    expected = pil_pixels(data)
    assert np.array_equal(JpegDecoder().decode(data), expected)
    if expected.shape[0] == expected.shape[1]:  # its own size asked for
        assert np.array_equal(JpegDecoder(expected.shape[0]).decode(data), expected)


@pytest.mark.parametrize("kind", ["baseline 4:2:0", "progressive", "grayscale", "CMYK", "1024"])
@pytest.mark.parametrize("size", [384, 256, 200, 128, 64])
def test_reduced_sizes_are_close_to_pils_resize(kind, size, backend):
    data = KINDS[kind]
    decoded = JpegDecoder(size).decode(data)
    assert decoded.shape == (size, size, 3) and decoded.dtype == np.uint8
    assert psnr(decoded, pil_pixels(data, size)) >= MIN_PSNR_DB


def test_the_dct_scale_is_the_smallest_at_or_above_the_size():
    assert decode_module.dct_scaled_size(512, 512, 256) == (256, 256)
    assert decode_module.dct_scaled_size(512, 512, 200) == (256, 256)
    assert decode_module.dct_scaled_size(512, 512, 384) == (384, 384)  # 6/8
    assert decode_module.dct_scaled_size(1024, 1024, 64) == (128, 128)  # 1/8 is the smallest scale
    assert decode_module.dct_scaled_size(512, 512, 1024) == (512, 512)  # never above the image
    assert decode_module.dct_scaled_size(512, 512, 384, divisors_only=True) == (512, 512)  # Pillow's draft
    assert decode_module.dct_scaled_size(517, 333, 100) == (194, 125)  # 3/8, rounded up as libjpeg does; 2/8 is 84 wide


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "256"])
def test_a_size_that_is_not_a_positive_integer_is_refused(size):
    with pytest.raises(ValueError, match=f"size={size!r}"):
        JpegDecoder(size)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"not an image at all", "is not an image that can be read"),
        (KINDS["baseline 4:2:0"][:3000], "cannot be decoded"),  # cut short
        (jpeg(HEAD, quality=90)[:2] + b"\xff\xc0" + b"\x00" * 40, "is not an image that can be read|cannot be decoded"),  # a broken header
    ],
)
def test_a_bad_image_fails_naming_it(data, problem, backend):
    with pytest.raises(ImageDecodeError, match=f"^image 'frown' of sample 'k1' ({problem})"):
        JpegDecoder(128).decode(data, where="image 'frown' of sample 'k1'")


def test_a_png_or_a_pil_image_is_decoded_by_pil(backend):
    buffer = io.BytesIO()
    HEAD.save(buffer, "PNG")
    assert np.array_equal(JpegDecoder().decode(buffer.getvalue()), np.asarray(HEAD))
    assert np.array_equal(JpegDecoder(128).decode(HEAD), np.asarray(HEAD.resize((128, 128), Image.Resampling.BILINEAR)))


def test_without_a_size_every_image_of_a_batch_has_the_first_ones_size(backend):
    images = [KINDS["baseline 4:2:0"], KINDS["1024"]]
    out = np.empty((2, 512, 512, 3), dtype=np.uint8)
    with pytest.raises(ImageDecodeError, match="image 1 is 1024x1024 pixels, not 512x512 .* pass size="):
        JpegDecoder().decode_into(images, out, where=lambda i: f"image {i}")


# --- datasets of decoded images ------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(releases, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("decoding") / "reghead"
    argv = [f"--release=512={releases[512].root}", f"--release=1024={releases[1024].root}", f"--output-dir={out}"]
    assert convert_main([*argv, "--num-proc=1", "--quiet"]) == 0
    return out


def holder(kind: str, converted: Path, releases, config: str = "512"):
    """The train split of a config, held one way: the converted folder (map-style or streamed),
    its parquet files as plain parquet, or the builder on the release (prepared or streamed)."""
    if kind in ("map", "stream"):
        return datasets.load_dataset(str(converted), config, split="train", streaming=kind == "stream")
    if kind == "parquet":
        files = sorted(str(path) for path in (converted / config).glob("train-*.parquet"))
        return datasets.load_dataset("parquet", data_files={"train": files}, split="train")
    builder = RegHead(config_name=config, data_dir=str(releases[int(config)].root))
    if kind == "builder-stream":
        return builder.as_streaming_dataset(split="train")
    builder.download_and_prepare()
    return builder.as_dataset(split="train")


@pytest.fixture(scope="module")
def train_images(converted) -> dict[str, dict[str, bytes]]:
    """{sample_key: {expression: JPEG bytes}} of the 512 train split, read with pyarrow."""
    images = {}
    for path in sorted((converted / "512").glob("train-*.parquet")):
        for row in pq.read_table(path, columns=["sample_key", *EXPRESSIONS]).to_pylist():
            images[row["sample_key"]] = {expression: row[expression]["bytes"] for expression in EXPRESSIONS}
    return images


def first(dataset):
    return dataset[0] if isinstance(dataset, datasets.Dataset) else next(iter(dataset))


@pytest.mark.parametrize("kind", HOLDERS)
def test_every_holder_gives_pils_pixels_at_full_size(kind, converted, releases, train_images):
    decoded = reghead.with_decoded_images(holder(kind, converted, releases))
    assert type(decoded) is type(holder(kind, converted, releases))
    row = first(decoded)
    for expression in EXPRESSIONS:
        image = row[expression]
        assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.shape == (3, 512, 512)
        assert image.stride() == (1, 512 * 3, 3)  # a channels-last view of the decoded pixels
        expected = pil_pixels(train_images[row["sample_key"]][expression])
        assert np.array_equal(image.permute(1, 2, 0).numpy(), expected)
    assert row["accessories"] and isinstance(row["animal"], str) and isinstance(row["identity_index"], int)


@pytest.mark.parametrize("kind", HOLDERS)
@pytest.mark.parametrize("format", ["torch", "numpy", "pil"])
def test_every_holder_and_format_at_a_reduced_size(kind, format, converted, releases, train_images):
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=128, expressions=["frown", NEUTRAL_EXPRESSION], format=format)
    row = first(decoded)
    assert list(row) == list(holder(kind, converted, releases).features)  # same columns, same order
    for expression in ("frown", NEUTRAL_EXPRESSION):
        image = row[expression]
        pixels = {"torch": lambda: image.permute(1, 2, 0).numpy(), "numpy": lambda: image, "pil": lambda: np.asarray(image)}[format]()
        assert pixels.shape == (128, 128, 3)
        assert psnr(pixels, pil_pixels(train_images[row["sample_key"]][expression], 128)) >= MIN_PSNR_DB
    assert isinstance(row["close_m_smile"], Image.Image)  # not asked for: decoded as before, by datasets


def test_1024_config_at_256(converted, releases):
    for kind in ("map", "stream"):
        row = first(reghead.with_decoded_images(holder(kind, converted, releases, "1024"), size=256))
        assert row["frown"].shape == (3, 256, 256)


def test_map_style_batches_are_decoded_into_one_array(converted, releases):
    decoded = reghead.with_decoded_images(holder("map", converted, releases), size=64, format="numpy")
    batch = decoded[2:6]
    assert batch["frown"].shape == (4, 64, 64, 3) and len(batch["sample_key"]) == 4
    assert batch["frown"].base is not None and batch["frown"].base is batch["raise_eyebrows"].base  # one buffer
    assert [row["sample_key"] for row in (decoded[i] for i in range(2, 6))] == batch["sample_key"]


def test_torch_free_batches_for_both_holders(converted, releases):
    for kind in ("map", "stream"):
        decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=64, format="numpy")
        batches = list(decoded.iter(batch_size=8))
        assert sum(len(b["sample_key"]) for b in batches) == 20
        assert all(isinstance(b["frown"], np.ndarray) and b["frown"].shape[1:] == (64, 64, 3) for b in batches)


def test_numpy_format_works_without_torch(converted):
    script = f"""
import importlib.machinery, sys

class PathFinderWithoutTorch(importlib.machinery.PathFinder):  # as if PyTorch were not installed
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        return None if name.partition(".")[0] == "torch" else super().find_spec(name, path, target)

sys.meta_path = [PathFinderWithoutTorch if f is importlib.machinery.PathFinder else f for f in sys.meta_path]
import datasets, reghead
for streaming in (False, True):
    ds = datasets.load_dataset({str(converted)!r}, "512", split="train", streaming=streaming)
    decoded = reghead.with_decoded_images(ds, size=32, format="numpy")
    batch = next(iter(decoded.iter(batch_size=4)))
    assert batch["frown"].shape == (4, 32, 32, 3), batch["frown"].shape
    assert next(iter(decoded))["frown"].shape == (32, 32, 3)
assert "torch" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_torch_format_without_torch_says_what_to_do(converted, releases, monkeypatch):
    def no_torch():
        raise ImportError("No module named 'torch'")

    monkeypatch.setattr(decoded_module, "_torch", no_torch)
    with pytest.raises(ImportError, match=r"format='torch' needs PyTorch \(pip install torch\); format='numpy'"):
        reghead.with_decoded_images(holder("map", converted, releases))


def test_shuffling_selecting_and_splitting_work_on_the_result(converted, releases):
    for kind in ("map", "stream"):
        decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=32)
        shuffled = decoded.shuffle(seed=1, **({"buffer_size": 8} if kind == "stream" else {}))
        keys = [row["sample_key"] for row in shuffled]
        assert sorted(keys) == sorted(row["sample_key"] for row in decoded) and len(keys) == 20
        selected = first(decoded.select_columns(["sample_key", "frown"]))
        assert list(selected) == ["sample_key", "frown"] and selected["frown"].shape == (3, 32, 32)


# --- DataLoaders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOLDERS)
def test_dataloader_with_workers_gives_every_row_once_in_batches(kind, converted, releases, train_images):
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=128)
    seen = []
    for batch in DataLoader(decoded, batch_size=6, num_workers=2, collate_fn=reghead.collate):
        assert batch["frown"].shape[1:] == (3, 128, 128) and batch["frown"].dtype == torch.uint8
        assert batch["frown"].stride()[1:] == (1, 128 * 3, 3)  # channels-last, never transposed
        assert len(batch["accessories"]) == len(batch["sample_key"])  # lists of 1 or 2, kept as lists
        key = batch["sample_key"][-1]
        expected = JpegDecoder(128).decode(train_images[key]["frown"])
        assert np.array_equal(batch["frown"][-1].permute(1, 2, 0).numpy(), expected)
        seen += batch["sample_key"]
    assert sorted(seen) == sorted(train_images)


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_the_default_collate_gives_the_same_batches(kind, converted, releases):
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=64).select_columns(["sample_key", "frown", "identity_index"])
    ours, torchs = (
        {key: (batch["frown"][i], batch["identity_index"][i]) for batch in loader for i, key in enumerate(batch["sample_key"])}
        for loader in (DataLoader(decoded, batch_size=5, collate_fn=reghead.collate), DataLoader(decoded, batch_size=5, num_workers=2))
    )
    assert ours.keys() == torchs.keys() and len(ours) == 20
    for key, (image, index) in ours.items():
        assert torch.equal(image, torchs[key][0]) and index == torchs[key][1]


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_two_workers_on_each_of_two_ranks_see_every_row_once(kind, converted, releases):
    seen = []
    for rank in range(2):
        mine = split_dataset_by_node(reghead.with_decoded_images(holder(kind, converted, releases), size=32), rank=rank, world_size=2)
        for batch in DataLoader(mine, batch_size=3, num_workers=2, collate_fn=reghead.collate):
            seen += batch["sample_key"]
    assert len(seen) == 20 and len(set(seen)) == 20


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_batches_the_loop_keeps_are_never_written_over(kind, converted, releases):
    """The workers reuse their shared memory only for batches the main process has let go."""
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=256)
    kept = list(DataLoader(decoded, batch_size=2, num_workers=2, collate_fn=reghead.collate))
    again = list(DataLoader(decoded, batch_size=2, num_workers=0, collate_fn=reghead.collate))
    assert sorted(k for b in kept for k in b["sample_key"]) == sorted(k for b in again for k in b["sample_key"])
    fresh = {key: batch["frown"][i] for batch in again for i, key in enumerate(batch["sample_key"])}
    for batch in kept:
        for i, key in enumerate(batch["sample_key"]):
            assert torch.equal(batch["frown"][i], fresh[key]), key


def _arrow_setup(batch):
    import pyarrow as pa

    return reghead.collate(batch), pa.default_memory_pool().backend_name, pa.cpu_count()


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_workers_read_with_arrow_set_up_for_them_and_the_main_process_is_left_alone(kind, converted, releases):
    """A worker's Arrow allocates from jemalloc (it keeps the pages a stream's row groups reuse)
    with one CPU thread, as torch's own pool in a worker; the main process keeps its settings."""
    import pyarrow as pa

    before = pa.default_memory_pool().backend_name, pa.cpu_count()
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=32)
    setups = {(backend, threads) for _, backend, threads in DataLoader(decoded, batch_size=5, num_workers=2, collate_fn=_arrow_setup)}
    expected = "jemalloc" if "jemalloc" in pa.supported_memory_backends() else before[0]
    assert setups == {(expected, 1)}
    assert (pa.default_memory_pool().backend_name, pa.cpu_count()) == before


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["map", "stream"])
def test_spawned_workers_unpickle_the_dataset(kind, converted, releases):
    decoded = reghead.with_decoded_images(holder(kind, converted, releases), size=32)
    assert pickle.loads(pickle.dumps(decoded)) is not None
    loader = DataLoader(decoded, batch_size=4, num_workers=1, collate_fn=reghead.collate, multiprocessing_context="spawn")
    keys = [key for batch in loader for key in batch["sample_key"]]
    assert len(keys) == 20


# --- pairs ---------------------------------------------------------------------------------------


def pair_picks(dataset, **loader) -> dict[str, int]:
    picks = {}
    for batch in DataLoader(dataset, batch_size=4, collate_fn=reghead.collate, **loader):
        picks.update(zip(batch["sample_key"], batch["expression_index"].tolist()))
    return picks


def test_one_sampled_pair_per_row_is_the_same_in_every_run_worker_and_holder(converted, releases):
    picks = [
        pair_picks(reghead.with_expression_pairs(holder(kind, converted, releases), size=32, targets="one", seed=7), num_workers=workers)
        for kind, workers in (("map", 0), ("map", 2), ("stream", 2), ("builder-stream", 0))
    ]
    assert len(picks[0]) == 20 and all(p == picks[0] for p in picks)
    assert set(picks[0].values()) <= set(range(1, 10)) and len(set(picks[0].values())) > 3
    other_epoch = pair_picks(reghead.with_expression_pairs(holder("map", converted, releases), size=32, targets="one", seed=7, epoch=1))
    other_seed = pair_picks(reghead.with_expression_pairs(holder("map", converted, releases), size=32, targets="one", seed=8))
    assert other_epoch != picks[0] and other_seed != picks[0]


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_pairs_are_the_neutral_and_the_indexed_expression(kind, converted, releases, train_images):
    one = reghead.with_expression_pairs(holder(kind, converted, releases), size=64, targets="one", seed=1)
    every = reghead.with_expression_pairs(holder(kind, converted, releases), size=64)
    decoder = JpegDecoder(64)
    for batch in DataLoader(one, batch_size=4, num_workers=2, collate_fn=reghead.collate):
        assert batch["neutral"].shape == batch["target"].shape == (len(batch["sample_key"]), 3, 64, 64)
        for i, key in enumerate(batch["sample_key"]):
            name = EXPRESSIONS[batch["expression_index"][i]]
            assert np.array_equal(batch["target"][i].permute(1, 2, 0).numpy(), decoder.decode(train_images[key][name]))
            assert np.array_equal(batch["neutral"][i].permute(1, 2, 0).numpy(), decoder.decode(train_images[key][NEUTRAL_EXPRESSION]))
    batch = next(iter(DataLoader(every, batch_size=3, num_workers=0, collate_fn=reghead.collate)))
    assert batch["target"].shape == (3, 9, 3, 64, 64) and batch["expression_index"].tolist() == [list(range(1, 10))] * 3
    key = batch["sample_key"][1]
    assert np.array_equal(batch["target"][1, 4].permute(1, 2, 0).numpy(), decoder.decode(train_images[key][EXPRESSIONS[5]]))
    assert "open_m_open_e" not in batch and batch["accessories"]


def test_pairs_of_a_dataset_with_two_expressions(converted, releases):
    two = holder("stream", converted, releases).select_columns(["sample_key", NEUTRAL_EXPRESSION, "close_m_smile"])
    row = next(iter(reghead.with_expression_pairs(two, targets="one")))
    assert list(row) == ["sample_key", "neutral", "target", "expression_index"]
    assert int(row["expression_index"]) == EXPRESSIONS.index("close_m_smile")


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_expression_pairs_batch_output_decodes_too(kind, converted, releases):
    rows = holder(kind, converted, releases)
    pairs = rows.map(reghead.expression_pairs_batch, batched=True, remove_columns=rows.column_names)
    wanted = None if pairs.features else ["neutral", "expression"]  # a streaming map does not know its features
    row = first(reghead.with_decoded_images(pairs, size=48, expressions=wanted))
    assert row["neutral"].shape == row["expression"].shape == (3, 48, 48) and row["expression_name"] in OTHERS


# --- errors and the collate ------------------------------------------------------------------------


def test_bad_images_in_a_dataset_fail_naming_the_sample_and_column():
    rows = {"sample_key": ["k-good", "k-bad"], "frown": [{"bytes": KINDS["progressive"], "path": None}, {"bytes": b"junk", "path": None}]}
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features({"sample_key": datasets.Value("string"), "frown": datasets.Image()}))
    assert reghead.with_decoded_images(ds)[0]["frown"].shape == (3, 512, 512)
    for decoded in (reghead.with_decoded_images(ds), reghead.with_decoded_images(ds.to_iterable_dataset())):
        with pytest.raises(ImageDecodeError, match="image 'frown' of sample 'k-bad' is not an image that can be read"):
            list(DataLoader(decoded, batch_size=2, collate_fn=reghead.collate))
    missing = datasets.Dataset.from_dict({"sample_key": ["k-none"], "frown": [None]}, features=ds.features)
    with pytest.raises(ImageDecodeError, match="image 'frown' of sample 'k-none' is missing"):
        reghead.with_decoded_images(missing)[0]


@pytest.mark.parametrize(
    "call, problem",
    [
        (lambda ds: reghead.with_decoded_images(ds, format="jax"), "format='jax': expected one of"),
        (lambda ds: reghead.with_decoded_images(ds, size=0), "size=0"),
        (lambda ds: reghead.with_decoded_images(ds, expressions=["smile"]), r"\['smile'\] are not image columns"),
        (lambda ds: reghead.with_expression_pairs(ds, targets="some"), "targets='some'"),
        (lambda ds: reghead.with_expression_pairs(ds, neutral="frown", seed="1"), "seed='1'"),
        (lambda ds: reghead.with_decoded_images(["not", "a", "dataset"]), "expected a datasets.Dataset"),
    ],
)
def test_bad_arguments_are_refused_naming_the_value(call, problem, converted, releases):
    with pytest.raises((ValueError, TypeError), match=problem):
        call(holder("map", converted, releases))


def test_collate_joins_only_its_own_batches():
    """A dataset of slices of the user's own tensor is stacked (copied), never aliased."""
    data = torch.arange(24, dtype=torch.uint8).view(4, 6)
    batch = reghead.collate([{"x": data[i], "name": None, "tags": ["a"] * (i % 2 + 1)} for i in range(4)])
    assert torch.equal(batch["x"], data) and batch["x"].untyped_storage().data_ptr() != data.untyped_storage().data_ptr()
    assert batch["name"] == [None] * 4 and batch["tags"] == [["a"], ["a", "a"], ["a"], ["a", "a"]]
