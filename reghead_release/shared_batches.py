"""Batches decoded in a DataLoader worker, in shared memory the worker uses again.

A worker hands its batches to the main process through shared memory: torch's own collate puts
each batch in a new shared-memory file. On this kind of machine a new page costs about 1.8 us
the first time it is written (the kernel finds and zeroes it), a third of what decoding a 512
image costs (docs/BENCHMARKS-decoding.md). So a worker here keeps a few shared-memory buffers
(`memfd`s) and decodes each batch into one that nobody holds any more:

- `batch_tensor(shape)` is a uint8 tensor in such a buffer (in a worker; elsewhere a plain
  `torch.empty`, since memory a process frees and takes again is not new pages).
- When the batch is sent to the main process, torch pickles its storage; in a worker, the
  storages of these buffers are pickled by `_reduce_storage`, which sends the buffer's file
  descriptor (as torch does for its own shared memory) and counts the send. The main process
  maps the same pages and counts the release when its storage is freed (a finalizer).
- A buffer is taken again only when the worker's own tensor is gone and every send has been
  released: a batch the main process still holds is never written over.
- When no buffer is free, the worker first waits for the main process to let one go, as long
  as a new buffer's pages would cost (`NEW_PAGE_SECONDS` each), counted over all its waits
  since its last new buffer (from its third buffer on): a worker never waits more than new
  buffers would have cost, and with a training loop that holds one batch at a time (a `for`
  loop) a worker gets by with two buffers. Any free buffer large enough takes a smaller batch
  (the last one of an epoch).

Each buffer holds one batch; its last page holds the two counters (sends, releases), each
written by one process only.

`prepare_worker` sets up Arrow in a worker, once: the parquet reader of a stream allocates each
row group's buffers anew, and with Arrow's default pool (mimalloc) that is new pages again and
again; from jemalloc a streamed epoch was about 17% faster on a 2-core machine (some pages are
still new: docs/LOADING.md's `pre_buffer=False` saves most of the rest on a local disk). Arrow's
CPU pool gets one thread per worker, as torch's intra-op pool does in its workers.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time
import weakref

import torch
from torch.multiprocessing.reductions import reduce_storage as _torch_reduce_storage

PAGE = mmap.PAGESIZE
# Buffers one worker keeps: the batches in flight (prefetch_factor per worker, 2 by default), the
# one being decoded and the ones the training loop holds.
MAX_BUFFERS = 8
# A new page's first write, rounded up from the 1.8 us above: how long a worker may wait for a
# buffer to be let go is counted against the pages a new one would cost.
NEW_PAGE_SECONDS = 2e-6
# Buffers a worker makes without waiting: one batch in the training loop's hands, one being decoded.
UNWAITED_BUFFERS = 2
POLL_SECONDS = 0.0005
COUNTER = struct.Struct("q")
SENDS, RELEASES = 0, COUNTER.size  # offsets in the counters page: the worker writes one, the main process the other
_RELEASE_LOCK = threading.Lock()  # finalizers of the main process may run in two threads at once


class _Buffer:
    """One memfd: `capacity` bytes of batch, then a page of counters."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.fd = os.memfd_create("reghead-batch", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, capacity + PAGE)
        self.map = mmap.mmap(self.fd, capacity + PAGE)
        self.held: weakref.ref | None = None  # the worker's own storage of the batch last handed out
        self.address: int | None = None

    def is_free(self) -> bool:
        if self.held is not None and self.held() is not None:
            return False
        (sends,) = COUNTER.unpack_from(self.map, self.capacity + SENDS)
        (releases,) = COUNTER.unpack_from(self.map, self.capacity + RELEASES)
        return sends == releases

    def hand_out(self, shape: tuple[int, ...]) -> torch.Tensor:
        nbytes = _nbytes(shape)
        tensor = torch.frombuffer(self.map, dtype=torch.uint8, count=nbytes)
        storage = tensor.untyped_storage()
        self.held = weakref.ref(storage)
        self.address = storage.data_ptr()
        return tensor.view(shape)

    def count_send(self) -> None:
        (sends,) = COUNTER.unpack_from(self.map, self.capacity + SENDS)
        COUNTER.pack_into(self.map, self.capacity + SENDS, sends + 1)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


class _Buffers:
    """The buffers of one worker process."""

    def __init__(self):
        self.pid = os.getpid()
        self.buffers: list[_Buffer] = []
        self.by_address: dict[int, _Buffer] = {}
        self.waited = 0.0  # seconds waited for a free buffer since the last new one

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        nbytes = _nbytes(shape)
        capacity = -(-nbytes // PAGE) * PAGE or PAGE
        fitting = self._fitting(nbytes)
        if fitting is None and sum(buffer.capacity >= nbytes for buffer in self.buffers) >= UNWAITED_BUFFERS:
            fitting = self._wait_for_fitting(nbytes, budget=capacity // PAGE * NEW_PAGE_SECONDS - self.waited)
        if fitting is not None:
            return self._hand_out(fitting, shape)
        free = [buffer for buffer in self.buffers if buffer.is_free()]
        if free and len(self.buffers) >= MAX_BUFFERS:
            self._drop(min(free, key=lambda b: b.capacity))  # a larger batch than before: make room
        if len(self.buffers) < MAX_BUFFERS:
            buffer = _Buffer(capacity)
            self.buffers.append(buffer)
            self.waited = 0.0
            return self._hand_out(buffer, shape)
        # Every buffer is held (the loop keeps many batches): a new one, freed with its batch.
        storage = torch.UntypedStorage._new_shared(nbytes)
        return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)

    def _fitting(self, nbytes: int) -> _Buffer | None:
        """The smallest free buffer that holds `nbytes`."""
        free = [buffer for buffer in self.buffers if buffer.capacity >= nbytes and buffer.is_free()]
        return min(free, key=lambda b: b.capacity) if free else None

    def _wait_for_fitting(self, nbytes: int, *, budget: float) -> _Buffer | None:
        """A buffer for `nbytes` the main process lets go within `budget` seconds, or None."""
        started = time.perf_counter()
        fitting = None
        while fitting is None and time.perf_counter() - started < budget:
            time.sleep(POLL_SECONDS)
            fitting = self._fitting(nbytes)
        self.waited += time.perf_counter() - started
        return fitting

    def _hand_out(self, buffer: _Buffer, shape) -> torch.Tensor:
        if buffer.address is not None:
            self.by_address.pop(buffer.address, None)
        tensor = buffer.hand_out(shape)
        self.by_address[buffer.address] = buffer
        return tensor

    def _drop(self, buffer: _Buffer) -> None:
        self.buffers.remove(buffer)
        if buffer.address is not None:
            self.by_address.pop(buffer.address, None)
        buffer.close()


_buffers: _Buffers | None = None
_prepared_pid: int | None = None


def _nbytes(shape) -> int:
    count = 1
    for side in shape:
        count *= side
    return count


def in_worker() -> bool:
    return torch.utils.data.get_worker_info() is not None


def prepare_worker() -> None:
    """In a DataLoader worker, once: Arrow allocates from jemalloc (where pyarrow has it), one CPU thread."""
    global _prepared_pid
    if _prepared_pid == os.getpid() or not in_worker():
        return
    import pyarrow as pa

    if "jemalloc" in pa.supported_memory_backends():
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    pa.set_cpu_count(1)
    _prepared_pid = os.getpid()


def batch_tensor(shape: tuple[int, ...]) -> torch.Tensor:
    """A new uint8 tensor for a batch: in a DataLoader worker, in one of its reused shared buffers."""
    global _buffers
    if not in_worker():
        return torch.empty(shape, dtype=torch.uint8)
    if _buffers is None or _buffers.pid != os.getpid():  # a process forked from one that had buffers
        _buffers = _Buffers()
        _register_reducer()
    return _buffers.take(tuple(shape))


def is_shared_batch(tensor: torch.Tensor) -> bool:
    """Whether `tensor` lies in one of this worker's buffers."""
    return _buffers is not None and _buffers.pid == os.getpid() and tensor.untyped_storage().data_ptr() in _buffers.by_address


def _register_reducer() -> None:
    from multiprocessing.reduction import ForkingPickler

    ForkingPickler.register(torch.UntypedStorage, _reduce_storage)


def _reduce_storage(storage: torch.UntypedStorage):
    """How a worker pickles a storage for another process: its own buffers by file descriptor, with a count."""
    buffer = None
    if _buffers is not None and _buffers.pid == os.getpid() and storage.device.type == "cpu":
        buffer = _buffers.by_address.get(storage.data_ptr())
    if buffer is None or storage.nbytes() > buffer.capacity:
        return _torch_reduce_storage(storage)
    from multiprocessing.reduction import DupFd

    buffer.count_send()
    return (_rebuild_storage, (DupFd(buffer.fd), storage.nbytes(), buffer.capacity))


def _rebuild_storage(fd_handle, nbytes: int, counters_offset: int) -> torch.UntypedStorage:
    """The main process's storage of a worker's buffer; freeing it counts a release."""
    fd = fd_handle.detach()
    try:
        counters = mmap.mmap(fd, PAGE, offset=counters_offset)
        storage = torch.UntypedStorage._new_shared_fd_cpu(fd, nbytes)
    finally:
        os.close(fd)
    weakref.finalize(storage, _count_release, counters)
    return storage


def _count_release(counters: mmap.mmap) -> None:
    with _RELEASE_LOCK:
        (releases,) = COUNTER.unpack_from(counters, RELEASES)
        COUNTER.pack_into(counters, RELEASES, releases + 1)
    counters.close()
