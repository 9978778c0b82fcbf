"""The Python contenders, each run as a whole process by run.py: `python benchmarks/jobs.py JOB OUT INPUT...`.

    diy OUT SHARD...         the do-it-yourself path: datasets' packaged webdataset builder, rows routed
                             to the project's splits (`split_of`), `to_parquet` per split
    webdataset OUT SHARD...  datasets' packaged webdataset builder: `download_and_prepare()`
    reghead OUT RELEASE      the project's builder: `RegHead(data_dir=RELEASE).download_and_prepare()`

OUT is the `datasets` cache (and the parquet folder for `diy`); run.py empties it before each run.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def diy(out: Path, shards: list[str]) -> None:
    import datasets

    from reghead_release.schema import SPLITS, split_of

    files = {"train": shards}
    dataset = datasets.load_dataset("webdataset", data_files=files, split="train", cache_dir=str(out / "cache"))
    for split in SPLITS:

        def in_split(keys: list[str], split: str = split) -> list[bool]:
            return [split_of(key) == split for key in keys]

        part = dataset.filter(in_split, input_columns="__key__", batched=True)
        part.to_parquet(str(out / f"{split}.parquet"))


def webdataset(out: Path, shards: list[str]) -> None:
    import datasets

    builder = datasets.load_dataset_builder("webdataset", data_files={"train": shards}, cache_dir=str(out))
    builder.download_and_prepare()


def reghead(out: Path, inputs: list[str]) -> None:
    from reghead import RegHead

    RegHead(config_name="512", data_dir=inputs[0], cache_dir=str(out)).download_and_prepare()


JOBS = {"diy": diy, "webdataset": webdataset, "reghead": reghead}

if __name__ == "__main__":
    import datasets

    datasets.disable_progress_bars()
    JOBS[sys.argv[1]](Path(sys.argv[2]), sys.argv[3:])
