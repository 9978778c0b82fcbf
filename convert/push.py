"""Convert RegHead releases to the Hub's parquet layout, render the dataset card, and push them.

    python convert/push.py                                   # demo: a sample release -> ./reghead-parquet
    python convert/push.py --release 512=dl512 --release 1024=dl1024 --output-dir out
    python convert/push.py --release 512=dl512 --release 1024=dl1024 --repo-id snap-research/RegHead

With no `--release`, a small sample release is written at both resolutions and converted, so
that `load_dataset("reghead-parquet", "512")` works in the current folder right after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's modules importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "convert"

import pyarrow as pa  # noqa: E402
from datasets.utils import tqdm as hf_tqdm  # noqa: E402
from datasets.utils.logging import disable_progress_bar  # noqa: E402

from reghead_release.errors import ReleaseError, logger  # noqa: E402
from reghead_release.sample import real_identity_dirs, write_sample_release  # noqa: E402
from reghead_release.schema import RESOLUTIONS  # noqa: E402

from .card import PREVIEW_PATH, write_card  # noqa: E402
from .conversion import CARD_PATH, WORK_DIR, exclusive_output, plan_jobs, publish, remove_work_dir, run_jobs  # noqa: E402
from .upload import PushError, push_folder  # noqa: E402

# Not "reghead": that is the checkout's folder name, and load_dataset("reghead") from the folder
# above the checkout would find the checkout (its reghead.py) instead of the converted data.
DEFAULT_OUTPUT = "reghead-parquet"

# The builder's words in `ReleaseError` hints -> this command's options, applied in order to the
# hint only. The reader and the builder keep their own words; this is the one translation.
# `base_url=` / `REGHEAD_BASE_URL` have no counterpart: the converter reads downloaded folders only.
CLI_WORDS: tuple[tuple[str, str], ...] = (
    (r"\bthe config '(\d+)'", r"--release \1=DIR"),
    (r"\bdata_dir at the (\d+) release\b", r"--release \1=DIR at the \1 release"),
    (r"\bdata_dir= ", "--release RES=DIR, DIR being "),
    (r"\bdata_dir=?", "--release RES=DIR"),
    (r"\bverify_checksums=False\b", "--no-verify"),
    (r"\bread with strict=False\b", "run with --lenient"),
    (r"\bstrict=False\b", "--lenient"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python convert/push.py",
        description=(
            "Convert RegHead WebDataset releases to parquet in the Hugging Face Hub layout "
            "(<out>/<config>/<split>-NNNNN-of-NNNNN.parquet and a dataset card), then optionally "
            "push them to a Hub dataset repo. With no --release, converts a small sample release "
            "written on the spot (the demo)."
        ),
    )
    parser.add_argument(
        "--release",
        action="append",
        default=[],
        metavar="RES=DIR",
        help="a downloaded release folder and its resolution, e.g. 512=reghead_download; repeat for 1024",
    )
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT, help=f"where to write the Hub layout (default: ./{DEFAULT_OUTPUT})")
    parser.add_argument("--repo-id", help="push to this Hub dataset repo, e.g. snap-research/RegHead (default: no push)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the token saved by `hf auth login`)")
    parser.add_argument("--commit-message", default="Upload RegHead", help="message of the Hub commits")
    parser.add_argument("--gated", action="store_true", help="add the gated-access prompt and fields to the card")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count() or 1, help="shards converted at once, in threads (default: all cores)")
    parser.add_argument("--no-verify", action="store_true", help="do not check shards against SHA256SUMS")
    parser.add_argument("--lenient", action="store_true", help="skip bad samples with a warning instead of stopping")
    parser.add_argument(
        "--sample-images",
        metavar="DIR",
        help="demo only: real images laid out as <identity>/<expression>.jpg instead of drawn ones",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    args = parser.parse_args(argv)
    args.releases = {}
    for value in args.release:
        resolution, sep, folder = value.partition("=")
        if not sep or resolution not in {str(r) for r in RESOLUTIONS} or not folder:
            parser.error(f"--release {value!r}: expected RES=DIR with RES one of {list(RESOLUTIONS)}")
        if resolution in args.releases:
            parser.error(f"--release {value!r}: resolution {resolution} given twice")
        args.releases[resolution] = folder
    if args.sample_images and not (Path(args.sample_images).is_dir() and real_identity_dirs(args.sample_images)):
        parser.error(f"--sample-images {args.sample_images!r}: expected a folder of <identity>/<expression>.jpg with all 10 expressions")
    return args


def in_cli_words(hint: str | None) -> str | None:
    """A `ReleaseError` hint with the builder's option names replaced by this command's (CLI_WORDS)."""
    for builder_words, cli_words in CLI_WORDS:
        hint = re.sub(builder_words, cli_words, hint) if hint else hint
    return hint


def load_hint(results, out_dir: str) -> str:
    """How to load the folder just written, with a config it has."""
    config = next((r.config for r in results if r.config == "512"), results[0].config)
    return f"Load it: datasets.load_dataset({json.dumps(out_dir)}, {json.dumps(config)})"


def write_demo_releases(work: Path, images_dir: str | None) -> dict[str, str]:
    """The embedded sample release, written at both resolutions under `work`."""
    return {
        str(resolution): str(write_sample_release(work / f"sample-{resolution}", resolution=resolution, images_dir=images_dir).root)
        for resolution in RESOLUTIONS
    }


def convert(args: argparse.Namespace) -> tuple[list, float]:
    """Convert the releases; a bad release is reported in this command's words (`in_cli_words`)."""
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_output(out_dir):
            results = _convert_locked(args, out_dir)
            remove_work_dir(out_dir)  # the card is written: the folder is complete
    except ReleaseError as error:
        raise error.with_hint(in_cli_words(error.hint)) from error
    return results


def _convert_locked(args: argparse.Namespace, out_dir: Path) -> tuple[list, float]:
    releases = args.releases or write_demo_releases(out_dir / WORK_DIR / "sample-release", args.sample_images)
    started = time.perf_counter()
    jobs = plan_jobs(releases, out_dir, verify=not args.no_verify, strict=not args.lenient)
    all_jobs = [job for config in sorted(jobs, key=int) for job in jobs[config]]
    total = sum(job.shard.size for job in all_jobs)  # local shards: sizes read from the disk
    with hf_tqdm(total=total, unit="B", unit_scale=True, desc=f"Converting {'+'.join(sorted(jobs, key=int))} to parquet") as bar:
        records = run_jobs(all_jobs, num_proc=args.num_proc, progress=bar.update)
        bar.update(max(0, total - bar.n))
    produced = {}
    position = 0
    for config in sorted(jobs, key=int):
        count = len(jobs[config])
        produced[config] = (jobs[config], records[position : position + count])
        position += count
    results = publish(
        out_dir,
        produced,
        write_card=lambda results: write_card(results, out_dir, repo_id=args.repo_id, gated=args.gated),
        card_files=(CARD_PATH, PREVIEW_PATH),
    )
    return results, time.perf_counter() - started


def summary(results, seconds: float, out_dir: Path) -> str:
    lines = [f"Converted in {seconds:.1f} s to {out_dir}:"]
    for result in results:
        for split in result.splits():
            lines.append(
                f"  {result.config:>4} {split:<10} {result.stats[split].rows:>7,} rows  "
                f"{len(result.files[split]):>3} files  {result.num_bytes[split] / 2**20:>10,.1f} MiB"
            )
    rows = sum(r.stats[s].rows for r in results for s in r.splits())
    files = sum(len(r.files[s]) for r in results for s in r.splits())
    size = sum(r.num_bytes[s] for r in results for s in r.splits())
    lines.append(f"  total: {rows:,} rows, {files} parquet files, {size / 2**20:,.1f} MiB")
    return "\n".join(lines)


def os_error_line(error: OSError, out_dir: Path) -> str:
    """One line for a failed write: what failed and where (the file, or else the output folder)."""
    path = error.filename or out_dir
    reason = error.strerror or str(error)
    return f"cannot write {str(path)!r}: {reason}. Fix it and run the same command again: finished shards are kept."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Arrow's default allocator keeps freed row groups mapped; the system one gives them back.
    pa.set_memory_pool(pa.system_memory_pool())
    level = logger.level
    if args.quiet:
        disable_progress_bar()
        logger.setLevel(logging.ERROR)  # no summaries of skipped samples and notes
    try:
        results, seconds = convert(args)
        if not args.quiet:
            print(summary(results, seconds, Path(args.output_dir)))
        if args.repo_id:
            started = time.perf_counter()
            pushed = push_folder(
                Path(args.output_dir),
                repo_id=args.repo_id,
                token=args.token,
                private=args.private,
                revision=args.revision,
                create_pr=args.create_pr,
                commit_message=args.commit_message,
            )
            if not args.quiet:
                print(
                    f"Pushed to {pushed.repo_url} in {time.perf_counter() - started:.1f} s: "
                    f"{len(pushed.uploaded)} files sent, {pushed.unchanged} unchanged, {len(pushed.deleted)} deleted, "
                    f"{len(pushed.commits)} commits" + (f", pull request {pushed.pull_request}" if pushed.pull_request else "")
                )
        elif not args.quiet:
            print(load_hint(results, args.output_dir))
    except (ReleaseError, PushError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder without write access: not a bug to trace
        print(f"error: {os_error_line(error, Path(args.output_dir))}", file=sys.stderr)
        return 1
    finally:
        logger.setLevel(level)
    return 0

if __name__ == "__main__":
    sys.exit(main())
