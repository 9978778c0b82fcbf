"""The shared-memory buffers a DataLoader worker decodes its batches into, used directly."""

import threading
import time

from reghead_release import shared_batches
from reghead_release.shared_batches import COUNTER, RELEASES, _Buffers

BATCH = (4, 64, 64, 3)


def sent(buffers: _Buffers, tensor) -> shared_batches._Buffer:
    """The buffer of `tensor`, as after the worker sent it to the main process and dropped it."""
    buffer = buffers.by_address[tensor.untyped_storage().data_ptr()]
    buffer.count_send()
    return buffer


def release(buffer: shared_batches._Buffer) -> None:
    """What the main process does when it frees its storage of the buffer."""
    (releases,) = COUNTER.unpack_from(buffer.map, buffer.capacity + RELEASES)
    COUNTER.pack_into(buffer.map, buffer.capacity + RELEASES, releases + 1)


def test_a_free_buffer_is_taken_again_also_by_a_smaller_batch():
    buffers = _Buffers()
    first = buffers.take(BATCH)
    address = first.untyped_storage().data_ptr()
    del first
    last = buffers.take((1, 64, 64, 3))  # the last batch of an epoch
    assert last.untyped_storage().data_ptr() == address and len(buffers.buffers) == 1


def test_two_buffers_are_made_without_waiting(monkeypatch):
    monkeypatch.setattr(shared_batches, "NEW_PAGE_SECONDS", 10.0)  # a wait would not end
    buffers = _Buffers()
    held = [buffers.take(BATCH), buffers.take(BATCH)]
    assert len(buffers.buffers) == 2 and buffers.waited == 0 and len({t.data_ptr() for t in held}) == 2


def test_a_worker_waits_for_a_buffer_the_main_process_lets_go(monkeypatch):
    monkeypatch.setattr(shared_batches, "NEW_PAGE_SECONDS", 1.0)  # a budget of seconds: the release comes first
    buffers = _Buffers()
    kept, gone = buffers.take(BATCH), buffers.take(BATCH)
    buffer = sent(buffers, gone)
    del gone
    timer = threading.Timer(0.05, release, (buffer,))
    timer.start()
    again = buffers.take(BATCH)
    timer.join()
    assert again.untyped_storage().data_ptr() == buffer.address and len(buffers.buffers) == 2
    assert 0.04 < buffers.waited < 1.0
    assert kept.untyped_storage().data_ptr() != buffer.address


def test_a_worker_waits_no_longer_than_new_buffers_cost(monkeypatch):
    monkeypatch.setattr(shared_batches, "NEW_PAGE_SECONDS", 0.01)
    buffers = _Buffers()
    pages = -(-shared_batches._nbytes(BATCH) // shared_batches.PAGE)
    held = [sent(buffers, buffers.take(BATCH)), sent(buffers, buffers.take(BATCH))]  # never released
    started = time.perf_counter()
    third = buffers.take(BATCH)
    waited = time.perf_counter() - started
    assert pages * 0.01 <= waited < pages * 0.01 + 0.5
    assert len(buffers.buffers) == 3 and buffers.waited == 0  # the count starts over with the new buffer
    assert third.untyped_storage().data_ptr() not in {buffer.address for buffer in held}
