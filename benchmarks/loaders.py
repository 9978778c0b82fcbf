"""One contender of the decoding benchmark: one epoch of decoded rows, as a training loop gets them.

    python benchmarks/loaders.py CONTENDER --parquet DIR --release DIR --config 512 --size 256 --report FILE

Every contender gives the rows of the train split with all 10 expressions as uint8 arrays of
`--size`, `--workers` processes decoding, and appends one JSON line to `--report`: the epoch's
seconds (from the loader's first batch request to its last batch, start-up and imports left out),
its rows and the shape of a batch's images. The loop only counts rows: what a model does with them
is not the loader's cost, and the floor does not do it either.

- `reghead`: `reghead.with_decoded_images` on the converted parquet (`--holder map`: `load_dataset`,
  shuffled by the DataLoader; `stream`: `streaming=True`), `collate_fn=reghead.collate`.
- `documented`: what docs/LOADING.md said before `with_decoded_images`: `.map(resize)` with PIL,
  then `with_format("torch")`, in a DataLoader (streaming; map-style `.map` would rewrite the data).
- `default`: `datasets`' own torch format (`with_format("torch")`): full PIL decode, no resize.
- `snippet`: the upstream WebDataset snippet on the release's tar shards, `decode("torchrgb8")`,
  resized with torch (`interpolate`, bilinear, antialias).
- `floor-<decoder>`: no loader, no Arrow: the same JPEG bytes (read into memory first, not timed),
  split between `--workers` processes, each decoding its images straight into one preallocated
  array with the decoder alone.

Streamed contenders read the local parquet as docs/LOADING.md says to (`--read-options local`:
`pre_buffer=False`, no coalesced read-ahead into new buffers), or with `datasets`' defaults
(`--read-options default`).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from reghead_release.schema import EXPRESSIONS  # noqa: E402

CONTENDERS = ("reghead", "documented", "default", "snippet")
COLUMNS = ["sample_key", *EXPRESSIONS]  # default_collate cannot batch `accessories` (1 or 2 per row)


def open_split(args, *, streaming: bool):
    """The train split; streamed with `--read-options local` as docs/LOADING.md reads a local folder."""
    import datasets

    options = {}
    if streaming and args.read_options == "local":
        import pyarrow.dataset as pds

        options["fragment_scan_options"] = pds.ParquetFragmentScanOptions(pre_buffer=False)
    return datasets.load_dataset(str(args.parquet), args.config, split="train", streaming=streaming, **options)


def reghead_loader(args):
    from torch.utils.data import DataLoader

    import reghead

    holder = open_split(args, streaming=args.holder == "stream")
    decoded = reghead.with_decoded_images(holder, size=args.size)
    shuffle = args.holder == "map"
    return DataLoader(decoded, batch_size=args.batch_size, num_workers=args.workers, collate_fn=reghead.collate, shuffle=shuffle)


class ResizeAll:
    """docs/LOADING.md's `small`, for all 10 expressions."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, row: dict) -> dict:
        return {expression: row[expression].resize((self.size, self.size)) for expression in EXPRESSIONS}


def documented_loader(args):
    from torch.utils.data import DataLoader

    stream = open_split(args, streaming=True).select_columns(COLUMNS)
    train = stream.map(ResizeAll(args.size)).with_format("torch")
    return DataLoader(train, batch_size=args.batch_size, num_workers=args.workers)


def default_loader(args):
    from torch.utils.data import DataLoader

    holder = open_split(args, streaming=args.holder == "stream").select_columns(COLUMNS)
    return DataLoader(holder.with_format("torch"), batch_size=args.batch_size, num_workers=args.workers, shuffle=args.holder == "map")


class SnippetRow:
    """The upstream snippet's map: the 10 expressions of a decoded sample, resized with torch."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, sample: dict):
        import torch
        from torch.nn.functional import interpolate

        images = []
        for expression in EXPRESSIONS:
            image = sample[f"{expression}.jpg"]
            if image.shape[-1] != self.size:
                resized = interpolate(image[None].float(), size=(self.size, self.size), mode="bilinear", antialias=True)
                image = resized[0].round().clamp(0, 255).to(torch.uint8)
            images.append(image)
        return images


def snippet_loader(args):
    import webdataset as wds
    from torch.utils.data import DataLoader

    shards = sorted(str(path) for path in (args.release / "data").glob("*.tar"))
    dataset = wds.WebDataset(shards, shardshuffle=False).decode("torchrgb8").map(SnippetRow(args.size))
    return DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)


def run_loader(args) -> dict:
    make = {"reghead": reghead_loader, "documented": documented_loader, "default": default_loader, "snippet": snippet_loader}
    loader = make[args.contender](args)
    rows, shape = 0, None
    started, cpu = time.perf_counter(), time.process_time()
    for batch in loader:
        images = batch[EXPRESSIONS[0]] if isinstance(batch, dict) else batch[0]
        rows += len(images)
        shape = shape or list(images.shape)
    seconds, main_cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "rows": rows, "batch_shape": shape, "main_cpu": main_cpu}


# --- the floor -------------------------------------------------------------------------------------


def train_images(parquet: Path, config: str) -> list[bytes]:
    """The JPEG bytes of every image of the train split, row after row, as the loaders decode them."""
    import pyarrow.parquet as pq

    images = []
    for path in sorted((parquet / config).glob("train-*.parquet")):
        table = pq.read_table(path, columns=list(EXPRESSIONS))
        columns = [table.column(expression).combine_chunks().field("bytes").to_pylist() for expression in EXPRESSIONS]
        images += [data for row in zip(*columns) for data in row]
    return images


def floor_decoder(name: str, size: int):
    """A function decoding one JPEG into a given (size, size, 3) array, with decoder `name` alone."""
    import io

    import numpy as np

    if name == "simplejpeg":
        import simplejpeg

        return lambda data, out: simplejpeg.decode_jpeg(data, "RGB", False, False, size, size, 1.0, out)
    if name == "pil":
        from PIL import Image

        def pil(data, out):
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (size, size))
                out[...] = np.asarray(image.convert("RGB"))

        return pil
    raise SystemExit(f"unknown decoder {name!r}")


def _decode_part(name: str, size: int, batch_size: int, part: list[bytes], start, done) -> None:
    import numpy as np

    decode = floor_decoder(name, size)
    out = np.empty((batch_size, size, size, 3), dtype=np.uint8)  # one array, written over
    start.wait()
    for i, data in enumerate(part):
        decode(data, out[i % batch_size])
    done.put(len(part))


def run_floor(args, decoder: str) -> dict:
    images = train_images(args.parquet, args.config)
    context = multiprocessing.get_context("fork")
    start, done = context.Event(), context.Queue()
    parts = [images[i :: args.workers] for i in range(args.workers)]
    processes = [context.Process(target=_decode_part, args=(decoder, args.size, args.batch_size * 10, part, start, done)) for part in parts]
    for process in processes:
        process.start()
    time.sleep(1)  # every process has forked and set up its array
    started = time.perf_counter()
    start.set()
    decoded = sum(done.get() for _ in processes)
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    return {"seconds": seconds, "rows": decoded // len(EXPRESSIONS), "batch_shape": [args.batch_size * 10, args.size, args.size, 3]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("contender", help=f"one of {list(CONTENDERS)}, or floor-<decoder> (simplejpeg, pil)")
    parser.add_argument("--parquet", type=Path, required=True, help="the converted release (convert/push.py --output-dir)")
    parser.add_argument("--release", type=Path, help="the release folder (the snippet reads its shards)")
    parser.add_argument("--config", default="512")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--holder", choices=("map", "stream"), default="stream")
    parser.add_argument("--read-options", choices=("local", "default"), default="local", help="how a stream reads parquet")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.contender.startswith("floor-"):
        result = run_floor(args, args.contender.removeprefix("floor-"))
    else:
        result = run_loader(args)
    with open(args.report, "a") as report:
        report.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
