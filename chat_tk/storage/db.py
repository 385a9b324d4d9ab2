"""Opening sqlite files safely, and a database thread that commits in groups.

Imports only the standard library and chat_tk.errors. Every open goes through
open_database so that WAL, the busy timeout and the "never recreate user data"
rule hold for the server and the client alike.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from chat_tk.errors import StorageError

log = logging.getLogger(__name__)

# Another process may hold the write lock for a while (a backup, a second server
# started by mistake); writers wait this long before giving up.
BUSY_TIMEOUT_SECONDS = 30.0
MAX_BATCH_OPERATIONS = 512

T = TypeVar("T")


def _explain(path: Path, exc: Exception) -> StorageError:
    return StorageError(
        f"The database file {path} cannot be used ({exc}). It may be damaged or "
        "not a chat_tk database. Nothing was changed: move the file away (or restore "
        "a backup) and start again to begin with an empty one."
    )


def open_database(
    path: Path, schema: Sequence[str], version: int
) -> sqlite3.Connection:
    """Open (or create) a database file and bring its schema to `version`.

    A file that exists but cannot be read as a database raises StorageError naming
    the file; it is never overwritten.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists() and path.stat().st_size > 0
    try:
        conn = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=True,
        )
    except sqlite3.Error as exc:
        raise _explain(path, exc) from exc
    if not existed:
        # Private keys and message history live in these files: owner only.
        with contextlib.suppress(OSError):
            os.chmod(path, 0o600)

    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        if existed:
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {row}")
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        if current > version:
            raise sqlite3.DatabaseError(
                f"made by a newer chat_tk (schema {current}, this one knows {version})"
            )
        if current < version:
            conn.execute("BEGIN IMMEDIATE")
            for statement in schema:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={int(version)}")
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise _explain(path, exc) from exc
    return conn


class DatabaseWorker:
    """One thread owns the connection; operations queue up and commit together.

    Each submitted operation runs inside its own savepoint, so one failing does not
    undo the others, and its future resolves only after the batch's COMMIT: a caller
    that waits for the future knows the change is on disk (group commit).
    """

    def __init__(self, path: Path, schema: Sequence[str], version: int) -> None:
        self.path = path
        self._jobs: queue.Queue[
            tuple[Callable[[sqlite3.Connection], Any], Future[Any]] | None
        ]
        self._jobs = queue.Queue()
        self._opened: Future[None] = Future()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, args=(schema, version), name="db-writer", daemon=True
        )
        self._thread.start()
        self._opened.result()  # re-raises StorageError from the thread
        self.batches = 0
        self.operations = 0

    def submit(self, operation: Callable[[sqlite3.Connection], T]) -> Future[T]:
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(StorageError(f"database {self.path} is closed"))
            return future
        self._jobs.put((operation, future))
        return future

    def call(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run an operation and wait for its commit (for non-async callers)."""
        return self.submit(operation).result()

    def close(self) -> None:
        """Finish every queued operation, commit, and close the file."""
        self._closed = True
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()

        # Anything that slipped in while closing is refused rather than left hanging.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job[1].set_exception(StorageError(f"database {self.path} is closed"))

    def _run(self, schema: Sequence[str], version: int) -> None:
        try:
            conn = open_database(self.path, schema, version)
        except StorageError as exc:
            self._opened.set_exception(exc)
            return
        self._opened.set_result(None)

        try:
            stopping = False
            while not stopping:
                batch, stopping = self._take_batch()
                if batch:
                    self._commit_batch(conn, batch)
        finally:
            conn.close()
            log.debug("database %s closed", self.path)

    def _take_batch(
        self,
    ) -> tuple[list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]], bool]:
        first = self._jobs.get()
        if first is None:
            return [], True

        batch = [first]
        while len(batch) < MAX_BATCH_OPERATIONS:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            batch.append(job)
        return batch, False

    def _commit_batch(
        self,
        conn: sqlite3.Connection,
        batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]],
    ) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, future in batch:
                # A caller may have given up waiting (its connection closed); from
                # here on its future can no longer be cancelled under our feet.
                if not future.set_running_or_notify_cancel():
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    result = operation(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.exception("commit of %d operations failed", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = StorageError(f"database {self.path} write failed: {exc}")
            for _, future in batch:
                if not future.cancelled():
                    future.set_exception(failure)
            return

        self.batches += 1
        self.operations += len(batch)
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
