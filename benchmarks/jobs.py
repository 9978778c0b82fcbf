"""The Python contenders, each run as a whole process by run.py: `python benchmarks/jobs.py JOB OUT INPUT...`.

    diy OUT SHARD...         the do-it-yourself path: datasets' packaged webdataset builder, rows routed
                             to the project's splits (`split_of`), `to_parquet` per split
    webdataset OUT SHARD...  datasets' packaged webdataset builder: `download_and_prepare()`
    reghead OUT RELEASE      the project's builder: `RegHead(data_dir=RELEASE).download_and_prepare()`
    diy-push OUT REPO SHARD...  issue 11's do-it-yourself path: as `diy`, then `push_to_hub(REPO, "512")`
    readback OUT REPO RELEASE   streams config 512 of REPO back from the Hub (`HF_ENDPOINT`) and checks
                             its rows per split and every sample_key against the release's metadata

OUT is the `datasets` cache (and the parquet folder for `diy`); run.py empties it before each run.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def webdataset_splits(out: Path, shards: list[str]) -> dict:
    """The shards through datasets' packaged webdataset builder, rows routed to the project's splits."""
    import datasets

    from reghead_release.schema import SPLITS, split_of

    files = {"train": shards}
    dataset = datasets.load_dataset("webdataset", data_files=files, split="train", cache_dir=str(out / "cache"))

    def in_split(keys: list[str], split: str) -> list[bool]:
        return [split_of(key) == split for key in keys]

    kwargs = {"input_columns": "__key__", "batched": True}
    return datasets.DatasetDict({s: dataset.filter(in_split, fn_kwargs={"split": s}, **kwargs) for s in SPLITS})


def diy(out: Path, shards: list[str]) -> None:
    for split, part in webdataset_splits(out, shards).items():
        part.to_parquet(str(out / f"{split}.parquet"))


def diy_push(out: Path, inputs: list[str]) -> None:
    webdataset_splits(out, inputs[1:]).push_to_hub(inputs[0], config_name="512")


def readback(out: Path, inputs: list[str]) -> None:
    import collections
    import json
    import tarfile

    import datasets

    from reghead_release.schema import split_of

    repo, release = inputs
    with tarfile.open(Path(release) / "metadata.tar.gz") as archive:
        lines = archive.extractfile("metadata/webdataset_samples.jsonl").read().splitlines()
    expected = collections.defaultdict(list)
    for line in lines:
        key = json.loads(line)["sample_key"]
        expected[split_of(key)].append(key)
    pushed = datasets.load_dataset(repo, "512", streaming=True)
    got = {split: [row["sample_key"] for row in rows.select_columns(["sample_key"])] for split, rows in pushed.items()}
    for split in sorted({*expected, *got}):
        want, have = sorted(expected.get(split, [])), sorted(got.get(split, []))
        if want != have:
            sys.exit(f"error: readback of {repo!r}, split {split!r}: {len(have)} rows, the release has {len(want)}")
    counts = ", ".join(f"{split} {len(rows):,}" for split, rows in got.items())
    loaded = f"`load_dataset({repo!r}, \"512\", streaming=True)`"
    print(f"Read back from the Hub with {loaded}: rows {counts}, every sample_key as in the release.")


def webdataset(out: Path, shards: list[str]) -> None:
    import datasets

    builder = datasets.load_dataset_builder("webdataset", data_files={"train": shards}, cache_dir=str(out))
    builder.download_and_prepare()


def reghead(out: Path, inputs: list[str]) -> None:
    from reghead import RegHead

    RegHead(config_name="512", data_dir=inputs[0], cache_dir=str(out)).download_and_prepare()


JOBS = {"diy": diy, "webdataset": webdataset, "reghead": reghead, "diy-push": diy_push, "readback": readback}

if __name__ == "__main__":
    import datasets

    datasets.disable_progress_bars()
    JOBS[sys.argv[1]](Path(sys.argv[2]), sys.argv[3:])
