"""Convert RegHead releases to the Hub's parquet layout, render the dataset card, and push them.

    python convert/push.py                                   # demo: a sample release -> ./reghead-parquet
    python convert/push.py --release 512=dl512 --release 1024=dl1024 --output-dir out
    python convert/push.py --release 512=dl512 --release 1024=dl1024 --repo-id snap-research/RegHead
    python convert/push.py --from-release --repo-id snap-research/RegHead    # GitHub -> Hub, streamed

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
from reghead_release.release import BASE_URL_ENV, base_url_for  # noqa: E402
from reghead_release.sample import real_identity_dirs, write_sample_release  # noqa: E402
from reghead_release.schema import RESOLUTIONS  # noqa: E402

from .card import CARD_FILES, write_card  # noqa: E402
from .conversion import WORK_DIR, exclusive_output, plan_jobs, publish, remove_work_dir, run_jobs  # noqa: E402
from .hub_upload import convert_and_push  # noqa: E402
from .parquet import memory_pool_name  # noqa: E402
from .upload import PushError, push_folder  # noqa: E402

# Not "reghead": that is the checkout's folder name, and load_dataset("reghead") from the folder
# above the checkout would find the checkout (its reghead.py) instead of the converted data.
DEFAULT_OUTPUT = "reghead-parquet"

# The builder's words in `ReleaseError` hints -> this command's options, applied in order to the
# hint only. The reader and the builder keep their own words; this is the one translation.
CLI_WORDS: tuple[tuple[str, str], ...] = (
    (r"\bthe config '(\d+)'", r"--release \1=DIR"),
    (r"\bdata_dir at the (\d+) release\b", r"--release \1=DIR at the \1 release"),
    (r"\bdata_dir= ", "--release RES=DIR, DIR being "),
    (r"\bdata_dir=?", "--release RES=DIR"),
    (r"\bverify_checksums=False\b", "--no-verify"),
    (r"\bread with strict=False\b", "run with --lenient"),
    (r"\bstrict=False\b", "--lenient"),
    (r"\bbase_url\b", "--base-url"),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python convert/push.py",
        description=(
            "Convert RegHead WebDataset releases to parquet in the Hugging Face Hub layout "
            "(<out>/<config>/<split>-NNNNN-of-NNNNN-<tag>.parquet, a dataset card and croissant.json), "
            "then optionally push them to a Hub dataset repo. With no --release, converts a small sample release "
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
    parser.add_argument(
        "--from-release",
        nargs="*",
        metavar="RES",
        help="read the official release assets over HTTP (<base>/<tag>/<asset>), one or both resolutions "
        "(default: both), streamed into the converter; with --repo-id each file is uploaded as soon as it is made",
    )
    parser.add_argument(
        "--base-url",
        help=f"where --from-release finds the release tags (default: ${BASE_URL_ENV}, else GitHub's release downloads)",
    )
    parser.add_argument(
        "--output-dir",
        help="where to write the Hub layout (default: ./reghead-parquet; with --from-release and --repo-id, "
        "files are removed once uploaded unless this is given)",
    )
    parser.add_argument("--repo-id", help="push to this Hub dataset repo, e.g. snap-research/RegHead (default: no push)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    parser.add_argument("--token", help="Hub token (default: HF_TOKEN or the token saved by `hf auth login`)")
    parser.add_argument("--commit-message", default="Upload RegHead", help="message of the Hub commits")
    parser.add_argument("--gated", action="store_true", help="add the gated-access prompt and fields to the card")
    parser.add_argument(
        "--num-proc",
        type=int,
        help="shards converted (and, with --from-release, read) at once, each in a process of its own (default: all cores)",
    )
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
    for resolution in (args.from_release or [str(r) for r in RESOLUTIONS]) if args.from_release is not None else ():
        if resolution not in {str(r) for r in RESOLUTIONS}:
            parser.error(f"--from-release {resolution!r}: expected one of {list(RESOLUTIONS)}")
        if resolution in args.releases:
            parser.error(f"resolution {resolution} given twice (--release and --from-release)")
        args.releases[resolution] = base_url_for(int(resolution), args.base_url)
    if args.base_url and args.from_release is None:
        parser.error("--base-url goes with --from-release")
    if args.num_proc is None:
        # Not more with --from-release, where reading waits on the network: each job is a process
        # that holds its own buffers, so more jobs than cores only hold more memory (docs/BENCHMARKS.md).
        args.num_proc = os.cpu_count() or 1
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


def output_folder(args: argparse.Namespace) -> Path:
    return Path(args.output_dir or DEFAULT_OUTPUT)


def write_demo_releases(work: Path, images_dir: str | None) -> dict[str, str]:
    """The embedded sample release, written at both resolutions under `work`."""
    return {
        str(resolution): str(write_sample_release(work / f"sample-{resolution}", resolution=resolution, images_dir=images_dir).root)
        for resolution in RESOLUTIONS
    }


def convert(args: argparse.Namespace) -> tuple[list, float]:
    out_dir = output_folder(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_output(out_dir):
        results = _convert_locked(args, out_dir)
        remove_work_dir(out_dir)  # the card is written: the folder is complete
    return results


def _convert_locked(args: argparse.Namespace, out_dir: Path) -> tuple[list, float]:
    releases = args.releases or write_demo_releases(out_dir / WORK_DIR / "sample-release", args.sample_images)
    started = time.perf_counter()
    jobs = plan_jobs(releases, out_dir, verify=not args.no_verify, strict=not args.lenient)
    all_jobs = [job for config in sorted(jobs, key=int) for job in jobs[config]]
    total = sum(job.shard.size or 0 for job in all_jobs)  # local: read from the disk; remote: the manifest's
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
        write_card=lambda results: write_card(
            results, out_dir, repo_id=args.repo_id, revision=args.revision, gated=args.gated
        ),
        card_files=CARD_FILES,
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


def hub_target(args: argparse.Namespace) -> dict:
    """Where a push goes and how it commits, as `push_folder` and `convert_and_push` take it."""
    return {
        "repo_id": args.repo_id,
        "token": args.token,
        "private": args.private,
        "revision": args.revision,
        "create_pr": args.create_pr,
        "commit_message": args.commit_message,
    }


def pushed_line(pushed, seconds: float, sent: str) -> str:
    """The closing line of a push: what was sent, kept and deleted, in how many commits."""
    return (
        f"Pushed to {pushed.repo_url} in {seconds:.1f} s: {sent}, {pushed.unchanged} unchanged, "
        f"{len(pushed.deleted)} deleted, {len(pushed.commits)} commits"
        + (f", pull request {pushed.pull_request}" if pushed.pull_request else "")
    )


def os_error_line(error: OSError, out_dir: Path) -> str:
    """One line for a failed write: what failed and where (the file, or else the output folder)."""
    path = error.filename or out_dir
    reason = error.strerror or str(error)
    return f"cannot write {str(path)!r}: {reason}. Fix it and run the same command again: finished shards are kept."


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pa.set_memory_pool(getattr(pa, f"{memory_pool_name()}_memory_pool")())  # the job processes' too
    level = logger.level
    if args.quiet:
        disable_progress_bar()
        logger.setLevel(logging.ERROR)  # no summaries of skipped samples and notes
    try:
        if args.from_release is not None and args.repo_id:
            return upload_as_you_go(args)
        results, seconds = convert(args)
        if not args.quiet:
            print(summary(results, seconds, output_folder(args)))
        if args.repo_id:
            started = time.perf_counter()
            pushed = push_folder(output_folder(args), **hub_target(args))
            if not args.quiet:
                print(pushed_line(pushed, time.perf_counter() - started, f"{len(pushed.uploaded)} files sent"))
        elif not args.quiet:
            print(load_hint(results, str(output_folder(args))))
    except ReleaseError as error:  # in this command's words (`in_cli_words`), not the builder's
        print(f"error: {error.with_hint(in_cli_words(error.hint))}", file=sys.stderr)
        return 1
    except PushError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # a full disk, a folder without write access: not a bug to trace
        print(f"error: {os_error_line(error, output_folder(args))}", file=sys.stderr)
        return 1
    finally:
        logger.setLevel(level)
    return 0


def converting_bar(*, total: int, configs: list[str]):
    """Bytes read from the release and converted (one stream), with an ETA; files uploaded after it."""
    return hf_tqdm(total=total or None, unit="B", unit_scale=True, desc=f"Downloading and converting {'+'.join(configs)}")


def upload_as_you_go(args: argparse.Namespace) -> int:
    """--from-release with --repo-id: convert and upload in one pass (convert/hub_upload.py)."""
    run = convert_and_push(
        args.releases,
        out_dir=Path(args.output_dir) if args.output_dir else None,  # given: the files stay there
        **hub_target(args),
        gated=args.gated,
        num_proc=args.num_proc,
        verify=not args.no_verify,
        strict=not args.lenient,
        progress_bar=converting_bar,
    )
    if not args.quiet:
        print(summary(run.results, run.seconds, Path(args.output_dir or args.repo_id)))
        sent = f"{run.files_sent} files sent as they were made, {len(run.pushed.uploaded)} committed"
        print(pushed_line(run.pushed, run.seconds, sent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
