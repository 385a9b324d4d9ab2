"""The server's tables and the queries on them; each function takes a connection.

These functions run on the DatabaseWorker thread. Names are stored twice: as
registered (shown to users) and as their comparison key (protocol.name_key).
Message payloads are ciphertext envelopes; the server never holds message text.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA_VERSION = 1
SCHEMA = (
    """CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    """CREATE TABLE users (
        name_key TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        skeleton TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        public_key TEXT,
        created REAL NOT NULL,
        messages_sent INTEGER NOT NULL DEFAULT 0,
        messages_received INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE contacts (
        owner TEXT NOT NULL REFERENCES users(name_key) ON DELETE CASCADE,
        contact TEXT NOT NULL REFERENCES users(name_key) ON DELETE CASCADE,
        PRIMARY KEY (owner, contact))""",
    """CREATE TABLE logins (
        user TEXT NOT NULL REFERENCES users(name_key) ON DELETE CASCADE,
        time REAL NOT NULL,
        address TEXT NOT NULL)""",
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sender TEXT NOT NULL,
        message_id TEXT NOT NULL,
        recipient TEXT NOT NULL,
        frame TEXT,
        server_time REAL NOT NULL,
        acked_time REAL,
        receipt_sent INTEGER NOT NULL DEFAULT 0,
        UNIQUE (sender, message_id))""",
    "CREATE INDEX messages_pending ON messages (recipient, seq) WHERE acked_time IS NULL",
    "CREATE INDEX messages_receipts ON messages (sender, seq) WHERE receipt_sent = 0",
)

# An acknowledged message keeps only its (sender, id) for this long, so that a late
# retry of it is recognised as a repeat and not delivered a second time.
TOMBSTONE_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class Account:
    name_key: str
    name: str
    password_hash: str
    public_key: str | None


@dataclass(frozen=True)
class StoredMessage:
    seq: int
    sender: str
    message_id: str
    recipient: str
    frame: dict[str, Any]
    server_time: float
    new: bool


# --------------------------------------------------------------------------- settings


def get_setting(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


# --------------------------------------------------------------------------- accounts


def create_account(
    conn: sqlite3.Connection,
    key: str,
    name: str,
    skeleton: str,
    password_hash: str,
    now: float,
) -> bool:
    """Insert an account; False when the name (or a look-alike of it) is taken."""
    try:
        conn.execute(
            "INSERT INTO users (name_key, name, skeleton, password_hash, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, name, skeleton, password_hash, now),
        )
    except sqlite3.IntegrityError:
        return False
    return True


def get_account(conn: sqlite3.Connection, key: str) -> Account | None:
    row = conn.execute(
        "SELECT name_key, name, password_hash, public_key FROM users WHERE name_key = ?",
        (key,),
    ).fetchone()
    return None if row is None else Account(*row)


def delete_account(conn: sqlite3.Connection, key: str) -> bool:
    deleted = conn.execute("DELETE FROM users WHERE name_key = ?", (key,)).rowcount
    conn.execute("DELETE FROM messages WHERE recipient = ? OR sender = ?", (key, key))
    return deleted > 0


def list_accounts(conn: sqlite3.Connection) -> list[str]:
    names = [row[0] for row in conn.execute("SELECT name FROM users")]
    return sorted(names)


def account_stats(conn: sqlite3.Connection) -> list[tuple[str, int, int, float | None]]:
    """(name, sent, received, last login time) for the operator's user list."""
    rows = conn.execute(
        "SELECT name, messages_sent, messages_received, "
        "(SELECT MAX(time) FROM logins WHERE user = users.name_key) FROM users"
    ).fetchall()
    return sorted((str(r[0]), int(r[1]), int(r[2]), r[3]) for r in rows)


def set_public_key(conn: sqlite3.Connection, key: str, public_key: str) -> bool:
    """Store a user's key; True when it differs from the one held before."""
    row = conn.execute(
        "SELECT public_key FROM users WHERE name_key = ?", (key,)
    ).fetchone()
    changed = row is not None and row[0] is not None and row[0] != public_key
    conn.execute(
        "UPDATE users SET public_key = ? WHERE name_key = ?", (public_key, key)
    )
    return changed


def record_login(conn: sqlite3.Connection, key: str, now: float, address: str) -> None:
    conn.execute(
        "INSERT INTO logins (user, time, address) VALUES (?, ?, ?)", (key, now, address)
    )


def login_history(conn: sqlite3.Connection, key: str) -> list[tuple[float, str]]:
    rows = conn.execute(
        "SELECT time, address FROM logins WHERE user = ? ORDER BY time", (key,)
    ).fetchall()
    return [(float(t), str(a)) for t, a in rows]


# --------------------------------------------------------------------------- contacts


def add_contact(conn: sqlite3.Connection, owner: str, contact: str) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO contacts (owner, contact) VALUES (?, ?)",
        (owner, contact),
    )


def del_contact(conn: sqlite3.Connection, owner: str, contact: str) -> None:
    conn.execute(
        "DELETE FROM contacts WHERE owner = ? AND contact = ?", (owner, contact)
    )


def list_contacts(conn: sqlite3.Connection, owner: str) -> list[str]:
    rows = conn.execute(
        "SELECT users.name FROM contacts JOIN users ON users.name_key = contacts.contact "
        "WHERE contacts.owner = ?",
        (owner,),
    )
    return sorted(row[0] for row in rows)


def watchers_of(conn: sqlite3.Connection, key: str) -> list[str]:
    """Keys of the users who have `key` in their contacts."""
    rows = conn.execute("SELECT owner FROM contacts WHERE contact = ?", (key,))
    return [row[0] for row in rows]


# --------------------------------------------------------------------------- messages


def store_message(
    conn: sqlite3.Connection,
    sender: str,
    message_id: str,
    recipient: str,
    frame: dict[str, Any],
    now: float,
) -> StoredMessage:
    """Queue a message for its recipient; a repeated (sender, id) is stored once."""
    row = conn.execute(
        "SELECT seq, frame, server_time FROM messages WHERE sender = ? AND message_id = ?",
        (sender, message_id),
    ).fetchone()
    if row is not None:
        stored_frame = json.loads(row[1]) if row[1] is not None else frame
        return StoredMessage(
            row[0], sender, message_id, recipient, stored_frame, row[2], False
        )

    text = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
    cursor = conn.execute(
        "INSERT INTO messages (sender, message_id, recipient, frame, server_time) "
        "VALUES (?, ?, ?, ?, ?)",
        (sender, message_id, recipient, text, now),
    )
    conn.execute(
        "UPDATE users SET messages_sent = messages_sent + 1 WHERE name_key = ?",
        (sender,),
    )
    conn.execute(
        "UPDATE users SET messages_received = messages_received + 1 WHERE name_key = ?",
        (recipient,),
    )
    seq = cursor.lastrowid
    assert seq is not None
    return StoredMessage(seq, sender, message_id, recipient, frame, now, True)


def pending_messages(
    conn: sqlite3.Connection, recipient: str, after_seq: int = 0, limit: int = 500
) -> list[tuple[int, dict[str, Any]]]:
    """Messages not yet acknowledged by `recipient`, oldest first, one page at a time."""
    rows = conn.execute(
        "SELECT seq, frame FROM messages WHERE recipient = ? AND acked_time IS NULL "
        "AND seq > ? ORDER BY seq LIMIT ?",
        (recipient, after_seq, limit),
    ).fetchall()
    return [(int(seq), json.loads(frame)) for seq, frame in rows]


def acknowledge(
    conn: sqlite3.Connection, recipient: str, message_id: str, now: float
) -> tuple[str, str] | None:
    """Forget an acknowledged message's payload; return (sender key, id) when it was held."""
    row = conn.execute(
        "SELECT seq, sender FROM messages WHERE recipient = ? AND message_id = ? "
        "AND acked_time IS NULL",
        (recipient, message_id),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE messages SET acked_time = ?, frame = NULL WHERE seq = ?", (now, row[0])
    )
    return str(row[1]), message_id


def pending_receipts(
    conn: sqlite3.Connection, sender: str
) -> list[tuple[str, str, float]]:
    """(id, recipient name, acked time) of delivered messages the sender was not told of."""
    rows = conn.execute(
        "SELECT messages.message_id, users.name, messages.acked_time FROM messages "
        "JOIN users ON users.name_key = messages.recipient "
        "WHERE messages.sender = ? AND messages.receipt_sent = 0 "
        "AND messages.acked_time IS NOT NULL ORDER BY messages.seq",
        (sender,),
    ).fetchall()
    return [(str(i), str(n), float(t)) for i, n, t in rows]


def mark_receipts_sent(
    conn: sqlite3.Connection, sender: str, message_ids: list[str]
) -> None:
    conn.executemany(
        "UPDATE messages SET receipt_sent = 1 WHERE sender = ? AND message_id = ?",
        [(sender, message_id) for message_id in message_ids],
    )


def purge_tombstones(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(
        "DELETE FROM messages WHERE acked_time IS NOT NULL AND acked_time < ?",
        (now - TOMBSTONE_SECONDS,),
    ).rowcount
