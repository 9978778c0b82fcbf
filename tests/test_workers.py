"""Shard jobs in processes of their own (convert/workers.py): what a job in a thread did, they do."""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from convert import conversion, workers
from reghead_release.errors import ChecksumMismatch, ReleaseError
from reghead_release.sample import write_release_assets, write_sample_release

from conftest import members, write_members

REPO = Path(__file__).resolve().parent.parent


def plan(release, out, **sizes):
    return conversion.plan_jobs({"512": str(release.root)}, out, verify=True, strict=True, **sizes)["512"]


def leftovers(jobs) -> list[str]:
    return [p.name for job in jobs if job.folder.exists() for p in job.folder.iterdir() if p.name.endswith(".tmp")]


def spoil_first_image(release):
    """The first image of the first shard is not a JPEG; the checksums say so: a bad sample, not a bad shard."""
    shard = release.shard_paths[0]
    items = members(shard)
    write_members(shard, [(name, b"not a jpeg" if i == 0 else data) for i, (name, data) in enumerate(items)])
    write_release_assets(release.root, resolution=release.resolution, shard_paths=list(release.shard_paths))
    return shard


@pytest.fixture
def release(tmp_path):
    return write_sample_release(tmp_path / "release", num_identities=24, samples_per_shard=8)


def test_release_errors_survive_the_trip_between_processes():
    error = ChecksumMismatch(file="s.tar", expected="a" * 64, actual="b" * 64, hint="fetch it again")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ChecksumMismatch and str(copy) == str(error)
    assert (copy.file, copy.expected, copy.actual, copy.hint) == ("s.tar", "a" * 64, "b" * 64, "fetch it again")
    plain = pickle.loads(pickle.dumps(ReleaseError("bad", file="f", key="k")))
    assert (str(plain), plain.message, plain.file, plain.key) == (str(ReleaseError("bad", file="f", key="k")), "bad", "f", "k")


def test_processes_give_the_records_of_threads(release, tmp_path):
    one = conversion.run_jobs(plan(release, tmp_path / "one"), num_proc=1, progress=lambda n: None)
    jobs = plan(release, tmp_path / "two")
    reported = []
    two = conversion.run_jobs(jobs, num_proc=2, progress=reported.append)
    assert [r.to_json() for r in one] == [r.to_json() for r in two]
    assert sum(reported) == sum(s.image_bytes for r in two for s in r.stats.values())
    for job, record in zip(jobs, two):
        for parts in record.parts.values():
            for part in parts:
                assert (job.folder / part.name).stat().st_size == part.size
    assert not multiprocessing.active_children()


def test_a_failing_job_raises_its_own_error_and_stops_the_others(release, tmp_path):
    shard = release.shard_paths[1]
    data = bytearray(shard.read_bytes())
    data[5000] ^= 0xFF
    shard.write_bytes(bytes(data))
    jobs = plan(release, tmp_path / "out")
    with pytest.raises(ChecksumMismatch) as error:
        conversion.run_jobs(jobs, num_proc=2, progress=lambda n: None)
    assert error.value.file == shard.name and len(error.value.actual) == 64
    assert not jobs[1].record_path.exists()
    assert leftovers(jobs) == []  # a stopped job removes its unfinished files
    assert not multiprocessing.active_children()


def test_the_jobs_log_records_reach_the_parents_logger(release, tmp_path, caplog):
    shard = spoil_first_image(release)
    jobs = conversion.plan_jobs({"512": str(release.root)}, tmp_path / "out", verify=True, strict=False)["512"]
    with caplog.at_level(logging.WARNING, logger="reghead"):
        conversion.run_jobs(jobs, num_proc=2, progress=lambda n: None)
    summaries = [r for r in caplog.records if r.name == "reghead" and shard.name in r.getMessage()]
    assert summaries and "skipped" in summaries[0].getMessage()
    assert all(r.levelno == logging.WARNING for r in summaries)


def test_quiet_parent_gets_no_log_records(release, tmp_path, caplog):
    spoil_first_image(release)
    jobs = conversion.plan_jobs({"512": str(release.root)}, tmp_path / "out", verify=True, strict=False)["512"]
    logger = logging.getLogger("reghead")
    level = logger.level
    logger.setLevel(logging.ERROR)  # as --quiet does
    try:
        conversion.run_jobs(jobs, num_proc=2, progress=lambda n: None)
    finally:
        logger.setLevel(level)
    assert not [r for r in caplog.records if r.name == "reghead"]


def test_a_job_waits_while_its_part_is_handed_on(tmp_path):
    release = write_sample_release(tmp_path / "release", num_identities=40, samples_per_shard=40)
    jobs = plan(release, tmp_path / "out", row_group_bytes=600_000, file_bytes=1_200_000)
    seen = []

    def on_part(job, part):
        before = sorted(p.name for p in job.folder.iterdir())
        time.sleep(0.5)  # a slow uploader: the job may not write on meanwhile
        assert sorted(p.name for p in job.folder.iterdir()) == before
        seen.append(part.name)

    [record] = conversion.run_jobs(jobs, num_proc=2, progress=lambda n: None, on_part=on_part)
    assert len(seen) == sum(len(parts) for parts in record.parts.values()) > 2


def test_stop_ends_the_jobs_within_a_sample(tmp_path):
    release = write_sample_release(tmp_path / "release", num_identities=40, samples_per_shard=20)
    jobs = plan(release, tmp_path / "out", row_group_bytes=300_000, file_bytes=600_000)
    stop = threading.Event()

    def on_part(job, part):
        stop.set()  # as the run does when another job fails or Ctrl-C is pressed

    with pytest.raises(conversion.Cancelled):
        conversion.run_jobs(jobs, num_proc=2, progress=lambda n: None, on_part=on_part, stop=stop)
    assert not any(job.record_path.exists() for job in jobs)
    assert leftovers(jobs) == []
    assert not multiprocessing.active_children()


def test_a_long_temporary_folder_path_is_no_obstacle(release, tmp_path):
    # The fork server's socket lives in the temporary folder, and a socket path has at most 107 bytes.
    long_tmp = tmp_path / ("t" * 60) / ("m" * 60)
    long_tmp.mkdir(parents=True)
    command = [sys.executable, str(REPO / "convert" / "push.py"), f"--release=512={release.root}", "--num-proc=2", "--quiet"]
    done = subprocess.run([*command, f"--output-dir={tmp_path / 'out'}"], env={**os.environ, "TMPDIR": str(long_tmp)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "out" / "512").glob("train-*.parquet"))


def test_the_fork_server_starts_with_the_converter_imported(tmp_path):
    # Whatever the current folder and PYTHONPATH: a job process then starts in milliseconds,
    # sharing the imported modules' memory with the server instead of importing them itself.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from multiprocessing import forkserver\n"
        "from convert import workers\n"
        "workers.context()\n"
        "import time; pid = forkserver._forkserver._forkserver_pid\n"
        "deadline = time.monotonic() + 60  # the server imports after it started\n"
        "while 'libparquet' not in open(f'/proc/{pid}/maps').read() and time.monotonic() < deadline: time.sleep(0.1)\n"
        "print('libparquet' in open(f'/proc/{pid}/maps').read(), workers.ARROW_POOL_VARIABLE in open(f'/proc/{pid}/environ').read())\n"
    )
    environment = {name: value for name, value in os.environ.items() if name not in ("PYTHONPATH", workers.ARROW_POOL_VARIABLE)}
    done = subprocess.run([sys.executable, "-c", script, str(REPO)], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True"], done.stderr
