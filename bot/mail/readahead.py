"""Read and parse mail files in reader processes while the importer writes.

Parsing headers is pure Python and takes about as long as writing the rows, so a large
file import splits its folders into chunks (``FilesSource.plan``) and forks reader
processes that read, parse and prepare chunk after chunk. Each reader claims the next
unclaimed chunk from a counter in shared memory and sends its prepared batches through
its own pipe. The importer writes the chunks in their order with their cursors, as it
does when it reads them itself. While the reader of the next chunk has sent nothing yet,
the importer claims a chunk and reads it itself, so on two cores one reader and the
importer keep both cores busy. Prepared rows are tuples of plain values, so sending them
costs little next to parsing. The importer learns when the next batch is not ready yet,
so it writes the batches it has received in one transaction before it waits or reads.

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
# How many chunks the importer reads ahead of the one it writes, while it waits for a
# reader. More would leave more batches to write after the readers end.
OWN_CHUNKS_AHEAD = 1
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
    # The importer reads chunks too while it waits, so it counts as one of the cores.
    return min(MAX_READERS, cores - 1)


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


class _Claims:
    """The counter of the next unclaimed chunk and the claimer of each chunk, in memory
    shared with the reader processes. The importer claims as -1, reader ``k`` as ``k``."""

    def __init__(self, context, total: int):  # type: ignore[no-untyped-def]
        self.total = total
        self.next = context.Value("q", 0)
        self.owners = context.Array("b", total, lock=False)

    def claim(self, claimer: int) -> int | None:
        """Claim the next unclaimed chunk and return its index, or None when none is left."""
        with self.next.get_lock():
            index = self.next.value
            if index >= self.total:
                return None
            self.next.value = index + 1
            self.owners[index] = claimer
        return index

    def owner(self, index: int) -> int | None:
        """Return the claimer of a chunk, or None while it is unclaimed."""
        with self.next.get_lock():
            return self.owners[index] if index < self.next.value else None


def _reader_main(
    jobs: list[ReadJob],
    chunks: list[tuple[int, ReadChunk]],
    claims: _Claims,
    number: int,
    connection: Connection,
) -> None:
    # A reader lives for one import and makes almost no reference cycles (about 1,700
    # objects for the Enron corpus), so the cyclic collector would only scan live rows.
    gc.disable()
    reader = _ChunkReader(jobs, chunks)
    index = -1
    try:
        while (claimed := claims.claim(number)) is not None:
            index = claimed
            for batch in reader.read(index):
                connection.send((index, batch))
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


class _ChunkReader:
    """Reader of chunks into prepared batches, with one preparer per job."""

    def __init__(self, jobs: list[ReadJob], chunks: list[tuple[int, ReadChunk]]):
        self.jobs = jobs
        self.chunks = chunks
        self._preparers: dict[int, Preparer] = {}
        self._normalized: dict[bool, dict[str, str | None]] = {}

    def read(self, index: int) -> Iterator[PreparedBatch]:
        """Read chunk ``index`` and yield its batches, prepared."""
        job_index, chunk = self.chunks[index]
        job = self.jobs[job_index]
        preparer = self._preparers.get(job_index)
        if preparer is None:
            # Mailboxes that normalise alike share the cache of normalised addresses.
            shared = self._normalized.setdefault(job.context.fold_plus, {})
            preparer = self._preparers[job_index] = Preparer(job.context, normalized=shared)
        for batch in job.source.read_chunk(chunk):
            yield preparer.prepare(batch)


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
        pass  # another system or a lower limit keeps the default buffer, which works but is slower


class ReadAhead:
    """Reader processes for the chunks of file imports, received in chunk order.

    ``chunks`` pairs each chunk with the index of its job in ``jobs``.
    """

    def __init__(self, jobs: list[ReadJob], chunks: list[tuple[int, ReadChunk]], readers: int):
        if chunks:
            job_index, first_chunk = chunks[0]
            chunks = [*((job_index, part) for part in first_chunk.split(FIRST_CHUNK_FILES)), *chunks[1:]]
        self.chunks = chunks
        self._reader = _ChunkReader(jobs, chunks)
        self._connections: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        fork = multiprocessing.get_context("fork")
        self._claims = _Claims(fork, len(chunks))
        count = max(1, min(readers, len(chunks)))
        try:
            for number in range(count):
                receiver, sender = fork.Pipe(duplex=False)
                _widen(sender)
                process = fork.Process(
                    target=_reader_main,
                    args=(jobs, chunks, self._claims, number, sender),
                    name=f"mail-reader-{number}",
                    daemon=True,
                )
                process.start()
                sender.close()
                self._connections.append(receiver)
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> Iterator[tuple[int, PreparedBatch] | None]:
        """Yield (chunk index, prepared batch) in chunk order, and raise ReadAheadFailed when a reader fails.

        None comes before each wait for a reader and before each chunk that this process
        reads itself, so the caller can write the batches it has received in the meantime.
        """
        claims = self._claims
        own: dict[int, list[PreparedBatch]] = {}  # chunks read here ahead of their turn
        for index in range(len(self.chunks)):
            if index in own:
                for batch in own.pop(index):
                    yield index, batch
                continue
            owner = claims.owner(index)
            if owner is None:
                claimed = claims.claim(-1)
                if claimed == index:
                    # The readers are behind: this process reads the chunk it writes next.
                    yield None
                    for batch in self._reader.read(index):
                        yield index, batch
                    continue
                # A reader claimed the chunk first, so the one claimed here is a later one.
                if claimed is not None:
                    yield None
                    own[claimed] = list(self._reader.read(claimed))
                owner = claims.owner(index)
            connection = self._connections[owner]  # type: ignore[index]
            while len(own) < OWN_CHUNKS_AHEAD and not connection.poll():
                # Nothing from the reader yet: read a later chunk instead of waiting.
                ahead = claims.claim(-1)
                if ahead is None:
                    break
                yield None
                own[ahead] = list(self._reader.read(ahead))
            yield from self._receive(index, connection)

    def _receive(self, index: int, connection: Connection) -> Iterator[tuple[int, PreparedBatch] | None]:
        while True:
            if not connection.poll():
                yield None
            try:
                got, payload = connection.recv()
            except (EOFError, OSError) as exc:
                raise ReadAheadFailed(index, f"the reader process ended ({type(exc).__name__})") from None
            if got != index:
                raise ReadAheadFailed(index, f"the reader sent chunk {got} out of order")
            if payload is None:
                return
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
