"""The client's own database: its key pair, contacts, known users, pinned keys, history.

One file per account and server. Each thread gets its own sqlite connection, so the
socket thread can store a message while the Tk thread reads history. Message text
is stored here in the clear: this file is the user's own, on the user's computer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from chat_tk.storage.db import open_database

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE own_key (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        private_pem TEXT NOT NULL,
        created REAL NOT NULL)""",
    """CREATE TABLE users (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL)""",
    """CREATE TABLE contacts (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL)""",
    """CREATE TABLE peer_keys (
        name_key TEXT PRIMARY KEY,
        pem TEXT NOT NULL,
        offered_pem TEXT,
        pinned REAL NOT NULL)""",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        peer_key TEXT NOT NULL,
        peer TEXT NOT NULL,
        outgoing INTEGER NOT NULL,
        text TEXT NOT NULL,
        state TEXT NOT NULL,
        problem TEXT,
        payload TEXT,
        local_time REAL NOT NULL,
        server_time REAL,
        unread INTEGER NOT NULL DEFAULT 0,
        UNIQUE (peer_key, outgoing, id))""",
    "CREATE INDEX messages_by_peer ON messages (peer_key, server_time)",
    "CREATE INDEX messages_outbox ON messages (state, seq) WHERE state = 'pending'",
)

# States of a message row.
PENDING = "pending"  # written, not yet stored by the server (the outbox)
STORED = "stored"  # the server answered 200
DELIVERED = "delivered"  # the recipient acknowledged it
FAILED = "failed"  # the server refused it
REJECTED = "rejected"  # the recipient could not open it (made for an old key of theirs)
RECEIVED = "received"
UNREADABLE = "unreadable"  # could not be verified or decrypted; `problem` says why


@dataclass(frozen=True)
class MessageRecord:
    seq: int
    id: str
    peer: str
    outgoing: bool
    text: str
    state: str
    problem: str | None
    local_time: float
    server_time: float | None

    @property
    def sort_time(self) -> float:
        return self.server_time if self.server_time is not None else self.local_time


@dataclass(frozen=True)
class PeerKey:
    pem: str
    offered_pem: str | None  # a different key the server now gives, not yet accepted


_MESSAGE_COLUMNS = (
    "seq, id, peer, outgoing, text, state, problem, local_time, server_time"
)


def _record(row: tuple[object, ...]) -> MessageRecord:
    seq, mid, peer, outgoing, text, state, problem, local_time, server_time = row
    return MessageRecord(
        int(seq),  # type: ignore[call-overload]
        str(mid),
        str(peer),
        bool(outgoing),
        str(text),
        str(state),
        None if problem is None else str(problem),
        float(local_time),  # type: ignore[arg-type]
        None if server_time is None else float(server_time),  # type: ignore[arg-type]
    )


class ClientStore:
    """Access to one account's database from any thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.conn.execute("SELECT 1")  # open now: a damaged file is reported at once

    @property
    def conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_database(self.path, SCHEMA, SCHEMA_VERSION)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def close_thread_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                self._all.remove(conn)

    # ----------------------------------------------------------------- own key

    def own_private_key(self) -> str | None:
        row = self.conn.execute("SELECT private_pem FROM own_key").fetchone()
        return None if row is None else str(row[0])

    def save_own_private_key(self, pem: str) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO own_key (id, private_pem, created) VALUES (1, ?, ?)",
            (pem, time.time()),
        )

    # ----------------------------------------------------------------- people

    def set_users(self, names: dict[str, str]) -> None:
        """Replace the known users with {name_key: name}."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM users")
            self.conn.executemany("INSERT INTO users VALUES (?, ?)", names.items())

    def users(self) -> list[str]:
        return sorted(r[0] for r in self.conn.execute("SELECT name FROM users"))

    def set_contacts(self, names: dict[str, str]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.execute("DELETE FROM contacts")
            self.conn.executemany("INSERT INTO contacts VALUES (?, ?)", names.items())

    def add_contact(self, key: str, name: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO contacts VALUES (?, ?)", (key, name))

    def remove_contact(self, key: str) -> None:
        self.conn.execute("DELETE FROM contacts WHERE name_key = ?", (key,))

    def contacts(self) -> list[str]:
        return sorted(r[0] for r in self.conn.execute("SELECT name FROM contacts"))

    def unread_counts(self) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT peer_key, SUM(unread) FROM messages GROUP BY peer_key HAVING SUM(unread) > 0"
        )
        return {str(k): int(n) for k, n in rows}

    def mark_read(self, peer_key: str) -> None:
        self.conn.execute(
            "UPDATE messages SET unread = 0 WHERE peer_key = ? AND unread = 1",
            (peer_key,),
        )

    # ----------------------------------------------------------------- keys

    def peer_key(self, key: str) -> PeerKey | None:
        row = self.conn.execute(
            "SELECT pem, offered_pem FROM peer_keys WHERE name_key = ?", (key,)
        ).fetchone()
        return None if row is None else PeerKey(str(row[0]), row[1])

    def pin_peer_key(self, key: str, pem: str) -> None:
        """Trust `pem` for this peer (first contact, or the user accepted a change)."""
        self.conn.execute(
            "INSERT OR REPLACE INTO peer_keys (name_key, pem, offered_pem, pinned) "
            "VALUES (?, ?, NULL, ?)",
            (key, pem, time.time()),
        )

    def offer_peer_key(self, key: str, pem: str | None) -> None:
        """Remember a changed key that the user has not accepted (None clears it)."""
        self.conn.execute(
            "UPDATE peer_keys SET offered_pem = ? WHERE name_key = ?", (pem, key)
        )

    # ----------------------------------------------------------------- messages

    def add_outgoing(
        self, message_id: str, peer_key: str, peer: str, text: str
    ) -> MessageRecord:
        """Put a message in the outbox; it is sent when the connection allows."""
        now = time.time()
        cursor = self.conn.execute(
            "INSERT INTO messages (id, peer_key, peer, outgoing, text, state, local_time) "
            "VALUES (?, ?, ?, 1, ?, ?, ?)",
            (message_id, peer_key, peer, text, PENDING, now),
        )
        assert cursor.lastrowid is not None
        return self.message(cursor.lastrowid)

    def add_incoming(
        self,
        message_id: str,
        peer_key: str,
        peer: str,
        text: str,
        state: str,
        problem: str | None,
        payload: str | None,
        server_time: float,
    ) -> MessageRecord | None:
        """Store a received message once; None when this id was seen already."""
        try:
            cursor = self.conn.execute(
                "INSERT INTO messages (id, peer_key, peer, outgoing, text, state, problem, "
                "payload, local_time, server_time, unread) VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, 1)",
                (
                    message_id,
                    peer_key,
                    peer,
                    text,
                    state,
                    problem,
                    payload,
                    time.time(),
                    server_time,
                ),
            )
        except sqlite3.IntegrityError:
            return None
        assert cursor.lastrowid is not None
        return self.message(cursor.lastrowid)

    def has_incoming(self, peer_key: str, message_id: str) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM messages WHERE peer_key = ? AND outgoing = 0 AND id = ?",
            (peer_key, message_id),
        ).fetchone()
        return row is not None

    def message(self, seq: int) -> MessageRecord:
        row = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE seq = ?", (seq,)
        ).fetchone()
        return _record(row)

    def outgoing_by_id(self, message_id: str) -> MessageRecord | None:
        row = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE outgoing = 1 AND id = ?",
            (message_id,),
        ).fetchone()
        return None if row is None else _record(row)

    def set_state(
        self,
        seq: int,
        state: str,
        problem: str | None = None,
        server_time: float | None = None,
    ) -> MessageRecord:
        self.conn.execute(
            "UPDATE messages SET state = ?, problem = ?, server_time = COALESCE(?, server_time) "
            "WHERE seq = ?",
            (state, problem, server_time, seq),
        )
        return self.message(seq)

    def set_opened(self, seq: int, text: str) -> MessageRecord:
        """A message that could not be opened before has now been verified and read."""
        self.conn.execute(
            "UPDATE messages SET text = ?, state = ?, problem = NULL, payload = NULL WHERE seq = ?",
            (text, RECEIVED, seq),
        )
        return self.message(seq)

    def rejected_to(self, peer_key: str) -> list[MessageRecord]:
        rows = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE outgoing = 1 AND peer_key = ? "
            "AND state = ? ORDER BY seq",
            (peer_key, REJECTED),
        )
        return [_record(r) for r in rows]

    def requeue(self, seq: int, new_id: str) -> MessageRecord:
        """Send a rejected message again, under a new id (the old one is spent)."""
        self.conn.execute(
            "UPDATE messages SET id = ?, state = ?, problem = NULL, server_time = NULL "
            "WHERE seq = ?",
            (new_id, PENDING, seq),
        )
        return self.message(seq)

    def outbox(self) -> list[MessageRecord]:
        rows = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE state = ? ORDER BY seq",
            (PENDING,),
        )
        return [_record(r) for r in rows]

    def unreadable_from(self, peer_key: str) -> list[tuple[MessageRecord, str]]:
        """Messages that failed to open, with their raw payload, for another try."""
        rows = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS}, payload FROM messages "
            "WHERE peer_key = ? AND state = ? AND payload IS NOT NULL ORDER BY seq",
            (peer_key, UNREADABLE),
        )
        return [(_record(r[:-1]), str(r[-1])) for r in rows]

    def history(self, peer_key: str, limit: int = 1000) -> list[MessageRecord]:
        """The latest messages with a peer, oldest first (server time when known)."""
        rows = self.conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE peer_key = ? "
            "ORDER BY COALESCE(server_time, local_time) DESC, seq DESC LIMIT ?",
            (peer_key, limit),
        ).fetchall()
        return [_record(r) for r in reversed(rows)]


class KnownServers:
    """Server keys pinned on first contact, like ssh's known_hosts."""

    SCHEMA = (
        """CREATE TABLE servers (
            address TEXT PRIMARY KEY,
            pem TEXT NOT NULL,
            first_seen REAL NOT NULL)""",
    )

    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self) -> sqlite3.Connection:
        return open_database(self.path, self.SCHEMA, 1)

    def pinned(self, address: str) -> str | None:
        conn = self._open()
        try:
            row = conn.execute(
                "SELECT pem FROM servers WHERE address = ?", (address,)
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else str(row[0])

    def pin(self, address: str, pem: str) -> None:
        conn = self._open()
        try:
            conn.execute(
                "INSERT OR REPLACE INTO servers VALUES (?, ?, ?)",
                (address, pem, time.time()),
            )
        finally:
            conn.close()

    def forget(self, address: str) -> bool:
        conn = self._open()
        try:
            return (
                conn.execute(
                    "DELETE FROM servers WHERE address = ?", (address,)
                ).rowcount
                > 0
            )
        finally:
            conn.close()
