"""Shard jobs in processes of their own, so that two jobs use two cores.

Much of a job is Python that holds the GIL (the reader's per-member work, gathering columns), so
jobs in threads of one process convert little faster than one job (docs/BENCHMARKS.md). Each job
therefore runs in a process forked from a `forkserver` that has already imported the converter:
a fork costs milliseconds instead of a second of imports, and the server has no threads that a
fork could catch holding a lock.

The parent keeps one thread per running job, which speaks with the job's process over a pipe:

- the job sends `("progress", bytes)`, `("part", Part)`, `("log", LogRecord)`, and last
  `("done", ShardRecord)` or `("error", exception)`;
- after a part, the job waits for the parent's `GO`: the parent hands the part on (`on_part`, to an
  uploader that may make it wait) first, so a lagging uploader holds the job back as it would in
  a thread;
- the parent sends `STOP` when the run fails or is interrupted; the job ends within a sample,
  removing its unfinished files, as a job in a thread does.

As with any start method but `fork`, each job process imports the main module of the program
(as `__mp_main__`): a script that runs jobs with `num_proc` above 1 keeps its work under
`if __name__ == "__main__":`, as `convert/push.py` does.

The job's process has the modules as the fork server imported them when it started: settings
read from the environment at import (`REGHEAD_HTTP_*`) are those of the parent at the first run
with `num_proc` above 1. The job's log records are handled by the parent's `reghead` logger, so
`--quiet` and the `datasets` verbosity apply to them. Ctrl-C goes to the parent only, which stops
the jobs. When the parent dies, so does the fork server, and the jobs are killed with it (Linux's
parent-death signal); their unfinished files are in the work folder, which the next run clears.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import tempfile
import threading
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from multiprocessing import forkserver
from pathlib import Path

from reghead_release.errors import logger

from .conversion import Cancelled, ShardJob, ShardRecord, run_job_refetching
from .parquet import Part, memory_pool_name

GO, STOP = "go", "stop"
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
POLL_SECONDS = 0.2  # how often a parent thread looks at `stop` and at its job's process
STOP_GRACE_SECONDS = 10  # a stopped job removes its files; after this it is killed instead
# Imported once by the fork server, before any job: the jobs' processes start with it loaded.
PRELOAD = ["convert.conversion", "convert.workers"]

# The fork server listens on a Unix socket in a folder of its own in the temporary folder, and a
# socket's path has at most 107 bytes: under a longer TMPDIR, the server is started from this one.
SHORT_TEMP_DIR = "/tmp"
SOCKET_PATH_BYTES = 107 - len("/pymp-xxxxxxxx/listener-xxxxxxxx")
# The folder that holds the `convert` and `reghead_release` packages (the checkout, or site-packages).
PACKAGES_DIR = str(Path(__file__).resolve().parent.parent)

ARROW_POOL_VARIABLE = "ARROW_DEFAULT_MEMORY_POOL"

_context = None


def _server_environment() -> dict[str, str]:
    """What the fork server's environment must say, beyond this process's."""
    # The server does not get this process's sys.path (Python 3.11 drops it), and a preload it
    # cannot import is skipped without a word: each job would then import everything itself.
    environment = {"PYTHONPATH": os.pathsep.join(filter(None, [PACKAGES_DIR, os.environ.get("PYTHONPATH")]))}
    # Set in the environment, not by `pyarrow.set_memory_pool` in each job: the pool is then the
    # only one the server and the jobs ever allocate from (unless the user chose one).
    environment[ARROW_POOL_VARIABLE] = os.environ.get(ARROW_POOL_VARIABLE) or memory_pool_name()
    return environment


@contextmanager
def _server_starting():
    """This process's environment and temporary folder, as the fork server is to inherit them."""
    environment = _server_environment()
    saved, saved_temp = {name: os.environ.get(name) for name in environment}, tempfile.tempdir
    os.environ.update(environment)
    if len(os.fsencode(tempfile.gettempdir())) > SOCKET_PATH_BYTES and os.access(SHORT_TEMP_DIR, os.W_OK):
        tempfile.tempdir = SHORT_TEMP_DIR
    try:
        yield
    finally:
        tempfile.tempdir = saved_temp
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def context() -> multiprocessing.context.BaseContext:
    """The forkserver context, its server started (once per process) with the converter imported."""
    global _context
    if _context is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        with _server_starting():
            forkserver.ensure_running()
        _context = ctx
    return _context


# --- in the job's process ----------------------------------------------------------------------


class _ParentStop:
    """`threading.Event`'s `is_set`, answered by the parent: has it sent `STOP`?"""

    def __init__(self, connection):
        self.connection = connection
        self.stopped = False

    def is_set(self) -> bool:
        if not self.stopped and self.connection.poll():
            self.stopped = self.connection.recv() == STOP
        return self.stopped


class _PipeHandler(logging.Handler):
    def __init__(self, connection):
        super().__init__()
        self.connection = connection

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = record.getMessage(), None, None, None
        self.connection.send(("log", record))


def _sendable(error: BaseException) -> BaseException:
    """The error itself when it survives pickling, else a RuntimeError that tells it."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any error that cannot travel is told in words
        text = "".join(traceback.format_exception(error)).rstrip()
        return RuntimeError(f"{type(error).__name__}: {error}\n{text}")


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: a broken pipe at the next message ends the job
        pass


def _run_in_child(job: ShardJob, connection, log_level: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it sends STOP
    logger.handlers[:] = [_PipeHandler(connection)]
    logger.propagate = False
    logger.setLevel(log_level)
    stop = _ParentStop(connection)

    def on_part(part: Part) -> None:
        connection.send(("part", part))
        if connection.recv() != GO:
            stop.stopped = True
            raise Cancelled(job.shard.name)

    try:
        record = run_job_refetching(job, lambda amount: connection.send(("progress", amount)), stop, on_part)
        connection.send(("done", record))
    except BaseException as error:  # noqa: BLE001 - every end is told to the parent
        try:
            connection.send(("error", _sendable(error)))
        except OSError:
            pass  # the parent is gone: nobody to tell
    finally:
        connection.close()


# --- in the parent -----------------------------------------------------------------------------


def run_in_process(
    job: ShardJob,
    progress: Callable[[int], None],
    stop: threading.Event,
    on_part: Callable[[Part], None] | None = None,
) -> ShardRecord:
    """`run_job_refetching(job, progress, stop, on_part)`, run in a process of its own.

    Called from one of the parent's threads; `progress` and `on_part` are called in that thread.
    """
    ctx = context()
    connection, child_end = ctx.Pipe()
    process = ctx.Process(
        target=_run_in_child, args=(job, child_end, logger.getEffectiveLevel()), name=f"reghead-{job.shard.name}", daemon=True
    )
    process.start()
    child_end.close()
    told_to_stop = False
    try:
        while True:
            if stop.is_set() and not told_to_stop:
                connection.send(STOP)
                told_to_stop = True
            if not connection.poll(POLL_SECONDS):
                continue
            try:
                kind, value = connection.recv()
            except EOFError:
                process.join()
                raise RuntimeError(
                    f"The conversion of {job.shard.name} ended without a word (exit code {process.exitcode}): "
                    "killed for lack of memory, perhaps; run again to continue"
                ) from None
            if kind == "progress":
                progress(value)
            elif kind == "log":
                logger.handle(value)
            elif kind == "part":
                if on_part is not None and not stop.is_set():
                    on_part(value)
                connection.send(STOP if stop.is_set() else GO)
                told_to_stop = told_to_stop or stop.is_set()
            elif kind == "done":
                return value
            else:
                raise value
    finally:
        _end(process, connection, told_to_stop)


def _end(process, connection, told_to_stop: bool) -> None:
    """Let the job's process end by itself (it removes its unfinished files), then make sure it did."""
    if process.is_alive() and not told_to_stop:
        try:
            connection.send(STOP)
        except OSError:
            pass
    process.join(STOP_GRACE_SECONDS)
    if process.is_alive():
        process.kill()
        process.join()
    connection.close()
