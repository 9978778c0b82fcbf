"""The contenders that run in their own process: `python benchmarks/tasks.py <task> '<json arguments>'`.

Each task imports only what its contender needs (the webdataset baseline never imports
`datasets`, the parquet reader only `pyarrow`), does its work, and ends with one
`BENCH-RESULT {...}` line of in-process figures that `run.py` collects. `time.time()` stamps
are wall-clock times that `run.py` compares with the moment it started the process.

    serve               a Range-honouring HTTP server on 127.0.0.1 (tests/http_server.py) for a folder
    maintainer          baseline 2: load_dataset("webdataset") once, route rows with split_of, to_parquet per split
    webdataset-iter     baseline 3: the upstream snippet, WebDataset(shards).decode("pil") + a map, to the end
    datasets-webdataset baseline 4: load_dataset("webdataset", data_files=..., split="train"), fresh cache
    reghead-prepare     RegHead(data_dir=...).download_and_prepare(), fresh cache
    reghead-stream      RegHead(...).as_streaming_dataset(split): the first row, or every row with images decoded;
                        `import_torch` imports torch first, as a training script would
    read-parquet        pyarrow.parquet.read_table(files, columns=...): bytes read and time

The converter (`convert/push.py`) and `cp` are run as they are, with no wrapper.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

T_START = time.time()  # as early as possible: the process's own start-up is measured by run.py

# The project measured: this repository, or another checkout of it (`run.py --project`).
REPO = Path(os.environ.get("REGHEAD_BENCH_PROJECT") or Path(__file__).resolve().parent.parent)
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import report

# The 10 expressions in the upstream order. Written out here so that the webdataset baseline
# does not import `datasets` (through reghead_release.schema); run.py checks it is the same list.
EXPRESSIONS = (
    "open_m_open_e",
    "halfo_m_o_e",
    "close_m_o_e",
    "close_m_halfo_e",
    "close_m_0_25o_e",
    "close_m_0_75o_e",
    "close_m_close_e",
    "close_m_smile",
    "raise_eyebrows",
    "frown",
)


def rchar() -> int:
    """Bytes this process has read through read()/pread() so far, page-cache hits included."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def serve(args: dict) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from http_server import RangeFileServer

    with RangeFileServer(args["root"]) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until run.py closes our stdin


def maintainer(args: dict) -> None:
    """What a maintainer does without the project: the packaged webdataset builder, then to_parquet.

    The builder knows no splits, so the whole release is loaded once as one split, the rows are
    routed with the project's own `split_of` (a filter on the key column, which only writes an
    index), and each split is written with `Dataset.to_parquet`.
    """
    import datasets

    from reghead import SPLITS, split_of

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    ds = datasets.load_dataset(
        "webdataset",
        data_files={"train": args["shards"]},
        split="train",
        cache_dir=args["cache_dir"],
        num_proc=args["num_proc"],
    )
    timings = {"load_s": time.perf_counter() - t0, "rows": len(ds), "splits": {}}
    out = Path(args["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        t1 = time.perf_counter()
        part = ds.filter(
            lambda keys, split=split: [split_of(k) == split for k in keys], input_columns="__key__", batched=True
        )
        t2 = time.perf_counter()
        path = out / f"{split}.parquet"
        part.to_parquet(str(path))
        t3 = time.perf_counter()
        timings["splits"][split] = {
            "rows": len(part),
            "filter_s": t2 - t1,
            "to_parquet_s": t3 - t2,
            "bytes": path.stat().st_size,
        }
    timings["total_s"] = time.perf_counter() - t0
    report(timings)


def webdataset_iter(args: dict) -> None:
    """The upstream way: `WebDataset(sorted(shards)).decode("pil")`, a map picking the 10 images and the JSON."""
    t_import = time.perf_counter()
    import webdataset

    t0 = time.perf_counter()

    def pick(sample):
        return {
            "key": sample["__key__"],
            "images": [sample[f"{expr}.jpg"] for expr in EXPRESSIONS],
            "meta": sample["json"],
        }

    dataset = webdataset.WebDataset(sorted(args["shards"])).decode("pil").map(pick)
    rows = 0
    first_row_s = first_row_at = None
    for row in dataset:
        if rows == 0:
            first_row_s, first_row_at = time.perf_counter() - t0, time.time()
        rows += 1
        assert len(row["images"]) == 10 and row["images"][0].size[0] > 0 and isinstance(row["meta"], dict)
    report(
        {
            "import_s": t0 - t_import,
            "rows": rows,
            "first_row_s": first_row_s,
            "first_row_at": first_row_at,
            "iter_s": time.perf_counter() - t0,
        }
    )


def datasets_webdataset(args: dict) -> None:
    """datasets' packaged webdataset builder preparing the shards (one split; it knows no others)."""
    import datasets

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    ds = datasets.load_dataset(
        "webdataset", data_files={"train": args["shards"]}, split="train", cache_dir=args["cache_dir"]
    )
    report({"rows": len(ds), "prepare_s": time.perf_counter() - t0})


def reghead_prepare(args: dict) -> None:
    import datasets

    from reghead import RegHead

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    builder = RegHead(config_name=str(args["resolution"]), data_dir=args["data_dir"], cache_dir=args["cache_dir"])
    builder.download_and_prepare()
    ds = builder.as_dataset(split="train")
    report(
        {
            "rows": {split: info.num_examples for split, info in builder.info.splits.items()},
            "train_rows": len(ds),
            "prepare_s": time.perf_counter() - t0,
        }
    )


def reghead_stream(args: dict) -> None:
    """Stream one split: time to the first row, and with `all`, every row with its 10 images decoded."""
    t_import = time.perf_counter()
    if args.get("import_torch"):
        # As a training script would have done already. Without it, datasets imports torch (when it
        # is installed) inside `as_streaming_dataset`, in IterableDataset.__init__.
        import torch  # noqa: F401
    import datasets

    from reghead import RegHead

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    kwargs = {"data_dir": args["data_dir"]} if args.get("data_dir") else {"base_url": args["base_url"]}
    builder = RegHead(config_name=str(args["resolution"]), cache_dir=args["cache_dir"], **kwargs)
    t1 = time.perf_counter()
    stream = builder.as_streaming_dataset(split=args["split"])
    rows = 0
    first_row_s = first_row_at = None
    for row in stream:
        if rows == 0:
            first_row_s, first_row_at = time.perf_counter() - t1, time.time()
            if not args["all"]:
                rows = 1
                break
        rows += 1
        images = [row[expr] for expr in EXPRESSIONS]
        for image in images:
            image.load()  # datasets' Image feature has decoded it already: this is a no-op, kept to be sure
        assert images[0].size[0] > 0 and row["sample_json"]
    report(
        {
            "import_s": t0 - t_import,
            "builder_s": t1 - t0,
            "rows": rows,
            "first_row_s": first_row_s,
            "first_row_at": first_row_at,
            "iter_s": time.perf_counter() - t1,
        }
    )


def read_parquet(args: dict) -> None:
    import pyarrow.dataset  # noqa: F401 - read_table imports it; loading it reads ~12 MB of library, not data
    import pyarrow.parquet as pq

    files = args["files"]
    before = rchar()
    t0 = time.perf_counter()
    table = pq.read_table(files, columns=args["columns"])
    seconds = time.perf_counter() - t0
    read = rchar() - before
    report(
        {
            "rows": table.num_rows,
            "columns": table.num_columns,
            "read_s": seconds,
            "bytes_read": read,
            "table_bytes": table.nbytes,
        }
    )


TASKS = {
    "serve": serve,
    "maintainer": maintainer,
    "webdataset-iter": webdataset_iter,
    "datasets-webdataset": datasets_webdataset,
    "reghead-prepare": reghead_prepare,
    "reghead-stream": reghead_stream,
    "read-parquet": read_parquet,
}


if __name__ == "__main__":
    TASKS[sys.argv[1]](json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
