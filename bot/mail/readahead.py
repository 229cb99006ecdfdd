"""Read and parse mail files in reader processes while the importer writes.

Parsing headers is pure Python and takes about as long as writing the rows, so a large
file import splits its folders into chunks (``FilesSource.plan``) and forks reader
processes that read, parse and prepare chunk after chunk. Reader ``k`` of ``n`` takes
chunks ``k``, ``k + n``, ``k + 2n`` … and sends each prepared batch through its own
pipe. The importer receives the chunks in their order and writes them with their
cursors, as it does when it reads them itself. Prepared rows are tuples of plain values,
so sending them costs little next to parsing.

The chunks of several mailboxes can go to one set of readers, which then parse the next
mailbox while the importer writes the last batches of the one before, and keep their
parse caches from one mailbox to the next.

Readers are forked, so they share the parent's loaded modules and caches and need no
start-up. Forking is safe only while the parent runs a single thread, so ``auto_readers``
gives 0 otherwise, and for imports too small to repay a fork.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
from typing import TYPE_CHECKING, Iterator, NamedTuple

from bot.mail.ingest import PrepareContext, PreparedBatch, Preparer

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from bot.mail.files import FilesSource, ReadChunk

log = logging.getLogger(__name__)

# Imports of fewer messages run in one process: forking and the pipes cost a few
# milliseconds, which only a large import repays.
MIN_MESSAGES = 500
# An mbox is counted as one message per this many bytes, a typical size of mail
# without large attachments.
MBOX_BYTES_PER_MESSAGE = 4096
MAX_READERS = 2
# The first chunks are made this small, so that the importer has rows to write soon
# after the readers start.
FIRST_CHUNK_FILES = 100


class ReadAheadFailed(Exception):
    """A reader process stopped on a chunk; the importer reads from there itself."""

    def __init__(self, chunk_index: int, reason: str):
        super().__init__(f"reader process failed on chunk {chunk_index}: {reason}")
        self.chunk_index = chunk_index
        self.reason = reason


def auto_readers(chunks: list[ReadChunk]) -> int:
    """Return how many reader processes suit an import of these chunks on this machine."""
    if _message_estimate(chunks) < MIN_MESSAGES or threading.active_count() > 1:
        return 0
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2:
        return 0
    return min(MAX_READERS, cores)


def _message_estimate(chunks: list[ReadChunk]) -> int:
    count = 0
    for chunk in chunks:
        if chunk.files is not None:
            count += len(chunk.files)
        elif chunk.mbox_path is not None:
            try:
                count += os.stat(chunk.mbox_path).st_size // MBOX_BYTES_PER_MESSAGE
            except OSError:
                pass  # reading it reports the error
    return count


class ReadJob(NamedTuple):
    """A mailbox's file source and the values its rows are prepared with."""

    source: FilesSource
    context: PrepareContext


def _reader_main(
    jobs: list[ReadJob],
    chunks: list[tuple[int, ReadChunk]],
    first: int,
    step: int,
    connection: Connection,
) -> None:
    # A reader lives for one import and makes almost no reference cycles (about 1,700
    # objects for the Enron corpus), so the cyclic collector would only scan live rows.
    gc.disable()
    preparers: dict[int, Preparer] = {}
    normalized: dict[bool, dict[str, str | None]] = {}
    index = first
    try:
        for index in range(first, len(chunks), step):
            job_index, chunk = chunks[index]
            job = jobs[job_index]
            preparer = preparers.get(job_index)
            if preparer is None:
                # Mailboxes that normalise alike share the cache of normalised addresses.
                shared = normalized.setdefault(job.context.fold_plus, {})
                preparer = preparers[job_index] = Preparer(job.context, normalized=shared)
            for batch in job.source.read_chunk(chunk):
                connection.send((index, preparer.prepare(batch)))
            connection.send((index, None))
    except (BrokenPipeError, EOFError):
        pass  # the importer stopped reading
    except BaseException as exc:  # noqa: BLE001 - the importer decides what to do
        try:
            connection.send((index, f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        connection.close()


# Linux lets a pipe buffer grow to /proc/sys/fs/pipe-max-size (1 MB by default) with
# this fcntl command.
_F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


def _widen(connection: Connection) -> None:
    """Let a reader's pipe hold about a megabyte, so that a reader hands over a batch and
    goes on parsing while the importer is still writing the batch before it."""
    try:
        import fcntl

        fcntl.fcntl(connection.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, OSError):
        pass  # another system, or a lower limit: the default buffer works, only slower


class ReadAhead:
    """Reader processes for the chunks of file imports, received in chunk order.

    ``chunks`` pairs each chunk with the index of its job in ``jobs``.
    """

    def __init__(self, jobs: list[ReadJob], chunks: list[tuple[int, ReadChunk]], readers: int):
        if chunks:
            job_index, first_chunk = chunks[0]
            chunks = [*((job_index, part) for part in first_chunk.split(FIRST_CHUNK_FILES)), *chunks[1:]]
        self.chunks = chunks
        self._connections: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        fork = multiprocessing.get_context("fork")
        count = max(1, min(readers, len(chunks)))
        try:
            for first in range(count):
                receiver, sender = fork.Pipe(duplex=False)
                _widen(sender)
                process = fork.Process(
                    target=_reader_main,
                    args=(jobs, chunks, first, count, sender),
                    name=f"mail-reader-{first}",
                    daemon=True,
                )
                process.start()
                sender.close()
                self._connections.append(receiver)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[tuple[int, PreparedBatch]]:
        """Yield (chunk index, prepared batch) in chunk order; raise ReadAheadFailed."""
        count = len(self._connections)
        for index in range(len(self.chunks)):
            connection = self._connections[index % count]
            while True:
                try:
                    got, payload = connection.recv()
                except (EOFError, OSError) as exc:
                    raise ReadAheadFailed(index, f"the reader process ended ({type(exc).__name__})") from None
                if got != index:
                    raise ReadAheadFailed(index, f"the reader sent chunk {got} out of order")
                if payload is None:
                    break
                if isinstance(payload, str):
                    raise ReadAheadFailed(index, payload)
                yield index, payload

    def close(self) -> None:
        """Stop the readers that are still running and wait for them."""
        for connection in self._connections:
            connection.close()
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=5)
        self._connections = []
        self._processes = []

    def __enter__(self) -> ReadAhead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
