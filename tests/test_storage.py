"""sqlite storage on real files in tmp_path: opening, group commit, server and client tables.

Case numbers refer to CASES.md.
"""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from chat_tk.errors import StorageError
from chat_tk.protocol import confusable_skeleton, name_key
from chat_tk.storage import client_store, db
from chat_tk.storage import server_store as store
from chat_tk.storage.client_store import ClientStore, KnownServers

ITEMS_SCHEMA = ("CREATE TABLE items (n INTEGER PRIMARY KEY, who TEXT NOT NULL)",)
NOW = 1_700_000_000.0
PEM_A = "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
PEM_B = "-----BEGIN RSA PUBLIC KEY-----\nBBBB\n-----END RSA PUBLIC KEY-----\n"


def insert_item(n, who="test"):
    def operation(conn):
        conn.execute("INSERT INTO items (n, who) VALUES (?, ?)", (n, who))
        return n

    return operation


def read_items(path):
    """Read the committed rows through a connection of our own, as another reader would."""
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT n, who FROM items").fetchall())
    finally:
        conn.close()


def msg_id(n):
    return f"msg-{n:012d}-xyz"


@pytest.fixture
def worker(tmp_path):
    running = db.DatabaseWorker(tmp_path / "items.db", ITEMS_SCHEMA, 1)
    yield running
    running.close()


class Blocker:
    """An operation that holds the database thread until released, so that work
    submitted meanwhile queues up and is taken as one batch."""

    def __init__(self):
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn):
        self.started.set()
        assert self.release.wait(10)

    def hold(self, worker):
        future = worker.submit(self)
        assert self.started.wait(10)
        return future


# --------------------------------------------------------------------------- open_database


def test_open_database_creates_a_wal_database(tmp_path):
    path = tmp_path / "sub" / "chat.db"
    conn = db.open_database(path, ITEMS_SCHEMA, 3)
    try:
        conn.execute("INSERT INTO items VALUES (1, 'x')")

        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert (tmp_path / "sub" / "chat.db-wal").exists()
        assert (tmp_path / "sub" / "chat.db-shm").exists()
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == int(
            db.BUSY_TIMEOUT_SECONDS * 1000
        )
    finally:
        conn.close()


def test_reopening_keeps_the_data_and_does_not_rerun_the_schema(tmp_path):
    path = tmp_path / "chat.db"
    conn = db.open_database(path, ITEMS_SCHEMA, 1)
    conn.execute("INSERT INTO items VALUES (7, 'kept')")
    conn.close()

    conn = db.open_database(path, ITEMS_SCHEMA, 1)
    try:
        assert conn.execute("SELECT who FROM items WHERE n = 7").fetchone() == ("kept",)
    finally:
        conn.close()


def make_real_database(path):
    conn = db.open_database(path, store.SCHEMA, store.SCHEMA_VERSION)
    for n in range(400):
        store.set_setting(conn, f"key-{n}", "value " * 40)
    conn.close()


def scribble_over_pages(path):
    """Overwrite everything after the first page with random bytes."""
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = random.Random(1).randbytes(len(data) - page)
    path.write_bytes(bytes(data))


def fill_with_random_bytes(path):
    path.write_bytes(random.Random(2).randbytes(16_384))


def write_a_text_file(path):
    path.write_text("Shopping list\n- milk\n- bread\n" * 20, encoding="utf-8")


def write_a_tiny_text_file(path):
    path.write_text("notes\n", encoding="utf-8")


@pytest.mark.parametrize(
    "damage",
    [
        scribble_over_pages,
        fill_with_random_bytes,
        write_a_text_file,
        write_a_tiny_text_file,
    ],
)
def test_unreadable_file_is_reported_and_left_alone(tmp_path, damage):
    path = tmp_path / "chat.db"
    make_real_database(path)
    damage(path)
    before = path.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())

    with pytest.raises(StorageError) as caught:
        db.open_database(path, store.SCHEMA, store.SCHEMA_VERSION)

    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_schema_of_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "chat.db"
    conn = db.open_database(path, ITEMS_SCHEMA, 1)
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    before = path.read_bytes()

    with pytest.raises(StorageError) as caught:
        db.open_database(path, ITEMS_SCHEMA, 1)

    assert str(path) in str(caught.value)
    assert path.read_bytes() == before


def test_worker_on_a_damaged_file_raises_storage_error(tmp_path):
    path = tmp_path / "items.db"
    write_a_text_file(path)

    with pytest.raises(StorageError):
        db.DatabaseWorker(path, ITEMS_SCHEMA, 1)


# --------------------------------------------------------------------------- DatabaseWorker


def test_operations_from_many_threads_all_commit(worker):
    futures = {}
    lock = threading.Lock()

    def submit_range(first):
        for n in range(first, first + 100):
            future = worker.submit(insert_item(n, f"thread-{first}"))
            with lock:
                futures[n] = future

    threads = [threading.Thread(target=submit_range, args=(k * 100,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {n: f.result(timeout=20) for n, f in futures.items()} == {
        n: n for n in range(800)
    }
    rows = read_items(worker.path)
    assert len(rows) == 800
    assert rows[250] == "thread-200"
    assert worker.operations == 800


def test_future_resolves_only_after_commit(worker):
    # The callback runs the moment the future resolves, on the database thread: a
    # second connection must already see the row then.
    seen = []
    all_checked = threading.Event()

    def check_visible(n, future):
        seen.append((n, n in read_items(worker.path)))
        if len(seen) == 60:
            all_checked.set()

    futures = []
    for n in range(60):
        future = worker.submit(insert_item(n))
        future.add_done_callback(lambda f, n=n: check_visible(n, f))
        futures.append(future)
    for future in futures:
        future.result(timeout=20)

    assert all_checked.wait(10)
    assert all(visible for _, visible in seen)


def test_failing_operation_does_not_undo_the_rest_of_its_batch(worker):
    def insert_then_fail(conn):
        conn.execute("INSERT INTO items VALUES (2, 'half done')")
        raise ValueError("boom")

    blocker = Blocker()
    held = blocker.hold(worker)
    batches = worker.batches
    first = worker.submit(insert_item(1))
    failing = worker.submit(insert_then_fail)
    duplicate = worker.submit(insert_item(1, "again"))
    last = worker.submit(insert_item(3))
    blocker.release.set()

    held.result(timeout=10)
    assert first.result(timeout=10) == 1
    assert last.result(timeout=10) == 3
    with pytest.raises(ValueError, match="boom"):
        failing.result(timeout=10)
    with pytest.raises(sqlite3.IntegrityError):
        duplicate.result(timeout=10)
    # All four shared one batch, and only the two good ones left a trace.
    assert worker.batches == batches + 2
    assert read_items(worker.path) == {1: "test", 3: "test"}


def test_concurrent_submissions_are_committed_in_groups(worker):
    blocker = Blocker()
    held = blocker.hold(worker)
    futures = []
    lock = threading.Lock()

    def submit_range(first):
        for n in range(first, first + 50):
            future = worker.submit(insert_item(n))
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=submit_range, args=(k * 50,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    blocker.release.set()
    held.result(timeout=10)
    for future in futures:
        future.result(timeout=20)

    assert worker.operations == 201
    assert worker.batches < worker.operations
    assert worker.batches == 2
    assert len(read_items(worker.path)) == 200


def test_a_batch_holds_at_most_the_batch_limit(worker):
    blocker = Blocker()
    held = blocker.hold(worker)
    futures = [
        worker.submit(insert_item(n)) for n in range(db.MAX_BATCH_OPERATIONS + 10)
    ]
    blocker.release.set()
    held.result(timeout=10)
    for future in futures:
        future.result(timeout=20)

    assert worker.batches == 3


def test_close_finishes_queued_work(tmp_path):
    path = tmp_path / "items.db"
    worker = db.DatabaseWorker(path, ITEMS_SCHEMA, 1)
    blocker = Blocker()
    blocker.hold(worker)
    futures = [worker.submit(insert_item(n)) for n in range(100)]

    # The queue is still full when close() starts waiting.
    threading.Timer(0.2, blocker.release.set).start()
    worker.close()

    assert all(f.done() and f.exception() is None for f in futures)
    assert len(read_items(path)) == 100


# --------------------------------------------------------------------------- server tables


@pytest.fixture
def server_db(tmp_path):
    conn = db.open_database(tmp_path / "server.db", store.SCHEMA, store.SCHEMA_VERSION)
    yield conn
    conn.close()


def register(conn, name, now=NOW):
    return store.create_account(
        conn, name_key(name), name, confusable_skeleton(name), "hash", now
    )


def frame_for(sender, recipient, n):
    return {
        "action": "msg",
        "id": msg_id(n),
        "from": sender,
        "to": recipient,
        "message": f"payload {n}",
    }


def test_accounts_are_unique_ignoring_case(server_db):
    assert register(server_db, "Alice")
    assert not register(server_db, "alice")
    assert not register(server_db, "ALICE")

    account = store.get_account(server_db, name_key("aLiCe"))
    assert account == store.Account("alice", "Alice", "hash", None)
    assert store.get_account(server_db, "nobody") is None


@pytest.mark.parametrize(
    ("first", "lookalike"),
    [
        ("ace", "асе"),
        ("admin", "аdmin"),
        ("mike", "rnike"),
        ("pope", "роре"),
        ("Alice", "ALICE"),
    ],
)
def test_lookalike_account_is_refused(server_db, first, lookalike):
    assert register(server_db, first)
    assert not register(server_db, lookalike)
    assert store.list_accounts(server_db) == [first]


def test_accounts_are_listed_by_code_point(server_db):
    for name in ["bob", "Борис", "Alice", "carol"]:
        assert register(server_db, name)

    assert store.list_accounts(server_db) == ["Alice", "bob", "carol", "Борис"]


def test_public_key_change_is_reported(server_db):
    register(server_db, "alice")

    assert not store.set_public_key(server_db, "alice", PEM_A)
    assert not store.set_public_key(server_db, "alice", PEM_A)
    assert store.set_public_key(server_db, "alice", PEM_B)
    assert store.get_account(server_db, "alice").public_key == PEM_B


def test_contacts(server_db):
    for name in ["Alice", "Bob", "Борис", "carol"]:
        register(server_db, name)

    store.add_contact(server_db, "alice", "борис")
    store.add_contact(server_db, "alice", "bob")
    store.add_contact(server_db, "alice", "bob")
    store.add_contact(server_db, "carol", "bob")

    assert store.list_contacts(server_db, "alice") == ["Bob", "Борис"]
    assert sorted(store.watchers_of(server_db, "bob")) == ["alice", "carol"]
    store.del_contact(server_db, "alice", "bob")
    assert store.list_contacts(server_db, "alice") == ["Борис"]
    assert store.list_contacts(server_db, "bob") == []


def test_repeated_message_is_stored_once(server_db):
    register(server_db, "alice")
    register(server_db, "bob")
    frame = frame_for("alice", "bob", 1)

    first = store.store_message(server_db, "alice", msg_id(1), "bob", frame, NOW)
    again = store.store_message(server_db, "alice", msg_id(1), "bob", frame, NOW + 60)

    assert first.new
    assert not again.new
    assert again.seq == first.seq
    assert again.server_time == NOW
    assert store.pending_messages(server_db, "bob") == [(first.seq, frame)]
    assert store.account_stats(server_db) == [
        ("alice", 1, 0, None),
        ("bob", 0, 1, None),
    ]


def test_same_id_from_another_sender_is_another_message(server_db):
    for name in ["alice", "bob", "carol"]:
        register(server_db, name)

    one = store.store_message(
        server_db, "alice", msg_id(1), "bob", frame_for("alice", "bob", 1), NOW
    )
    two = store.store_message(
        server_db, "carol", msg_id(1), "bob", frame_for("carol", "bob", 1), NOW
    )

    assert one.new
    assert two.new
    assert len(store.pending_messages(server_db, "bob")) == 2


def test_pending_messages_are_oldest_first(server_db):
    register(server_db, "alice")
    register(server_db, "bob")
    register(server_db, "carol")
    # Server times go backwards (a clock step); the arrival order must still hold.
    senders = ["alice", "carol", "alice", "carol", "alice"]
    for n, sender in enumerate(senders):
        store.store_message(
            server_db, sender, msg_id(n), "bob", frame_for(sender, "bob", n), NOW - n
        )
    store.store_message(
        server_db, "bob", msg_id(99), "alice", frame_for("bob", "alice", 99), NOW
    )

    pending = store.pending_messages(server_db, "bob")

    assert [frame["id"] for _, frame in pending] == [msg_id(n) for n in range(5)]
    assert [seq for seq, _ in pending] == sorted(seq for seq, _ in pending)


def all_pending(conn, recipient):
    """Read a recipient's whole backlog page by page, as a login does."""
    pending, after = [], 0
    while page := store.pending_messages(conn, recipient, after_seq=after, limit=100):
        pending.extend(page)
        after = page[-1][0]
    return pending


def test_pending_messages_come_in_pages(server_db):
    register(server_db, "alice")
    register(server_db, "bob")
    for n in range(250):
        store.store_message(
            server_db, "alice", msg_id(n), "bob", frame_for("alice", "bob", n), NOW
        )
    store.acknowledge(server_db, "bob", msg_id(100), NOW)

    first = store.pending_messages(server_db, "bob", limit=100)
    second = store.pending_messages(server_db, "bob", after_seq=first[-1][0], limit=100)

    assert [f["id"] for _, f in first] == [msg_id(n) for n in range(100)]
    assert [f["id"] for _, f in second] == [msg_id(n) for n in range(101, 201)]
    assert [f["id"] for _, f in all_pending(server_db, "bob")] == [
        msg_id(n) for n in range(250) if n != 100
    ]


def test_acknowledged_message_leaves_a_tombstone(server_db):
    register(server_db, "alice")
    register(server_db, "bob")
    frame = frame_for("alice", "bob", 1)
    store.store_message(server_db, "alice", msg_id(1), "bob", frame, NOW)
    store.store_message(
        server_db, "alice", msg_id(2), "bob", frame_for("alice", "bob", 2), NOW
    )

    assert store.acknowledge(server_db, "bob", msg_id(1), NOW + 5) == (
        "alice",
        msg_id(1),
    )
    assert store.acknowledge(server_db, "bob", msg_id(1), NOW + 6) is None
    assert store.acknowledge(server_db, "bob", "never-sent-0000000", NOW) is None
    assert [f["id"] for _, f in store.pending_messages(server_db, "bob")] == [msg_id(2)]
    row = server_db.execute(
        "SELECT frame FROM messages WHERE message_id = ?", (msg_id(1),)
    ).fetchone()
    assert row == (None,)

    # A late retry of the acknowledged message is a repeat, not a new delivery.
    retry = store.store_message(server_db, "alice", msg_id(1), "bob", frame, NOW + 10)
    assert not retry.new
    assert [f["id"] for _, f in store.pending_messages(server_db, "bob")] == [msg_id(2)]


def test_tombstones_are_purged_after_their_time(server_db):
    register(server_db, "alice")
    register(server_db, "bob")
    store.store_message(
        server_db, "alice", msg_id(1), "bob", frame_for("alice", "bob", 1), NOW
    )
    store.acknowledge(server_db, "bob", msg_id(1), NOW)

    assert store.purge_tombstones(server_db, NOW + store.TOMBSTONE_SECONDS - 1) == 0
    assert store.purge_tombstones(server_db, NOW + store.TOMBSTONE_SECONDS + 1) == 1


def test_receipts_are_pending_until_marked_sent(server_db):
    register(server_db, "alice")
    register(server_db, "Bob")
    for n in range(3):
        store.store_message(
            server_db, "alice", msg_id(n), "bob", frame_for("alice", "Bob", n), NOW
        )

    assert store.pending_receipts(server_db, "alice") == []
    store.acknowledge(server_db, "bob", msg_id(2), NOW + 2)
    store.acknowledge(server_db, "bob", msg_id(0), NOW + 3)

    assert store.pending_receipts(server_db, "alice") == [
        (msg_id(0), "Bob", NOW + 3),
        (msg_id(2), "Bob", NOW + 2),
    ]
    store.mark_receipts_sent(server_db, "alice", [msg_id(0)])
    assert store.pending_receipts(server_db, "alice") == [(msg_id(2), "Bob", NOW + 2)]
    store.mark_receipts_sent(server_db, "alice", [msg_id(2)])
    assert store.pending_receipts(server_db, "alice") == []


def test_message_counters(server_db):
    for name in ["alice", "bob", "carol"]:
        register(server_db, name)
    store.record_login(server_db, "bob", NOW + 50, "127.0.0.1:5000")

    for n in range(3):
        store.store_message(
            server_db, "alice", msg_id(n), "bob", frame_for("alice", "bob", n), NOW
        )
    store.store_message(
        server_db, "bob", msg_id(9), "carol", frame_for("bob", "carol", 9), NOW
    )
    store.store_message(
        server_db, "alice", msg_id(0), "bob", frame_for("alice", "bob", 0), NOW
    )

    assert store.account_stats(server_db) == [
        ("alice", 3, 0, None),
        ("bob", 1, 3, NOW + 50),
        ("carol", 0, 1, None),
    ]


def test_case_05_server_store_under_concurrent_senders(tmp_path):
    # Case 05, server side: 20 clients send 200 messages each at once while contact
    # lists are read from another connection.
    worker = db.DatabaseWorker(
        tmp_path / "server.db", store.SCHEMA, store.SCHEMA_VERSION
    )
    try:
        senders = [f"user{k}" for k in range(20)]
        assert worker.call(lambda conn: register(conn, "inbox"))
        for name in senders:
            assert worker.call(lambda conn, name=name: register(conn, name))
            worker.call(lambda conn, name=name: store.add_contact(conn, name, "inbox"))
        futures = []
        lock = threading.Lock()
        stop = threading.Event()
        reader_errors = []

        def send_all(sender):
            for n in range(200):
                frame = frame_for(sender, "inbox", n)
                future = worker.submit(
                    lambda c, s=sender, n=n, f=frame: store.store_message(
                        c, s, msg_id(n), "inbox", f, NOW + n
                    )
                )
                with lock:
                    futures.append(future)

        def read_contacts():
            conn = db.open_database(worker.path, store.SCHEMA, store.SCHEMA_VERSION)
            try:
                while not stop.is_set():
                    if store.list_contacts(conn, "user3") != ["inbox"]:
                        reader_errors.append("contact list changed")
            except Exception as exc:
                reader_errors.append(exc)
            finally:
                conn.close()

        reader = threading.Thread(target=read_contacts)
        reader.start()
        threads = [threading.Thread(target=send_all, args=(s,)) for s in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        results = [f.result(timeout=30) for f in futures]
        stop.set()
        reader.join()

        assert reader_errors == []
        assert len(results) == 4000
        assert all(r.new for r in results)
        pending = worker.call(lambda conn: all_pending(conn, "inbox"))
        assert len(pending) == 4000
        assert len({(f["from"], f["id"]) for _, f in pending}) == 4000
        stats = worker.call(store.account_stats)
        assert {
            name: sent for name, sent, _, _ in stats if name != "inbox"
        } == dict.fromkeys(senders, 200)
        assert worker.batches < worker.operations
    finally:
        worker.close()


LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO items VALUES (-1, 'other process')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
"""

# The real case holds the lock for 10 s against a 30 s busy timeout; 3 s keeps the
# suite quick and still proves the writer waits rather than fails.
LOCK_HOLD_SECONDS = 3.0


def test_case_05_writer_waits_for_another_process_lock(worker):
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(worker.path), str(LOCK_HOLD_SECONDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()

        results = [worker.submit(insert_item(n, "worker")) for n in range(5)]

        assert [f.result(timeout=30) for f in results] == list(range(5))
        waited = time.monotonic() - started
        assert holder.wait(timeout=30) == 0, holder.stderr.read()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        holder.stderr.close()

    assert waited > LOCK_HOLD_SECONDS / 2
    assert read_items(worker.path) == {
        -1: "other process",
        **dict.fromkeys(range(5), "worker"),
    }


# --------------------------------------------------------------------------- client tables


@pytest.fixture
def client(tmp_path):
    opened = ClientStore(tmp_path / "alice.db")
    yield opened
    opened.close_thread_connection()


def test_outbox_keeps_the_writing_order(client):
    first = client.add_outgoing(msg_id(1), "bob", "Bob", "one")
    client.add_outgoing(msg_id(2), "carol", "Carol", "two")
    third = client.add_outgoing(msg_id(3), "bob", "Bob", "three")

    assert [m.text for m in client.outbox()] == ["one", "two", "three"]
    assert first.state == client_store.PENDING
    assert first.outgoing
    client.set_state(first.seq, client_store.STORED, server_time=NOW)
    assert [m.id for m in client.outbox()] == [msg_id(2), msg_id(3)]
    assert (
        client.set_state(third.seq, client_store.FAILED, problem="404").problem == "404"
    )
    assert [m.id for m in client.outbox()] == [msg_id(2)]


def test_incoming_message_is_stored_once(client):
    args = ("bob", "Bob", "hello", client_store.RECEIVED, None, None, NOW)

    record = client.add_incoming(msg_id(1), *args)

    assert record is not None
    assert record.text == "hello"
    assert not record.outgoing
    assert client.add_incoming(msg_id(1), *args) is None
    assert client.has_incoming("bob", msg_id(1))
    # The same id from another peer, or our own outgoing id, is not a repeat.
    assert client.add_incoming(
        msg_id(1), "carol", "Carol", "hi", client_store.RECEIVED, None, None, NOW
    )
    client.add_outgoing(msg_id(2), "bob", "Bob", "mine")
    assert client.add_incoming(msg_id(2), *args) is not None
    assert len(client.history("bob")) == 3
    assert client.unread_counts() == {"bob": 2, "carol": 1}
    client.mark_read("bob")
    assert client.unread_counts() == {"carol": 1}


def test_history_is_ordered_by_server_time(client):
    client.add_incoming(
        msg_id(1), "bob", "Bob", "later", client_store.RECEIVED, None, None, NOW + 100
    )
    client.add_incoming(
        msg_id(2), "bob", "Bob", "earlier", client_store.RECEIVED, None, None, NOW - 100
    )
    stored = client.add_outgoing(msg_id(3), "bob", "Bob", "mine")
    client.set_state(stored.seq, client_store.STORED, server_time=NOW)
    client.add_incoming(
        msg_id(4), "carol", "Carol", "elsewhere", client_store.RECEIVED, None, None, NOW
    )

    assert [m.text for m in client.history("bob")] == ["earlier", "mine", "later"]
    assert [m.text for m in client.history("bob", limit=2)] == ["mine", "later"]


def test_peer_keys_are_pinned_and_changes_offered(client):
    assert client.peer_key("bob") is None

    client.pin_peer_key("bob", PEM_A)
    assert client.peer_key("bob") == client_store.PeerKey(PEM_A, None)
    client.offer_peer_key("bob", PEM_B)
    assert client.peer_key("bob") == client_store.PeerKey(PEM_A, PEM_B)
    client.offer_peer_key("bob", None)
    assert client.peer_key("bob") == client_store.PeerKey(PEM_A, None)

    client.offer_peer_key("bob", PEM_B)
    client.pin_peer_key("bob", PEM_B)
    assert client.peer_key("bob") == client_store.PeerKey(PEM_B, None)


def test_requeue_gives_a_rejected_message_a_new_id(client):
    record = client.add_outgoing(msg_id(1), "bob", "Bob", "try again")
    client.set_state(
        record.seq, client_store.REJECTED, problem="old key", server_time=NOW
    )
    assert [m.id for m in client.rejected_to("bob")] == [msg_id(1)]

    requeued = client.requeue(record.seq, msg_id(2))

    assert (requeued.seq, requeued.id, requeued.text) == (
        record.seq,
        msg_id(2),
        "try again",
    )
    assert (requeued.state, requeued.problem, requeued.server_time) == (
        client_store.PENDING,
        None,
        None,
    )
    assert client.outgoing_by_id(msg_id(1)) is None
    assert client.outgoing_by_id(msg_id(2)).seq == record.seq
    assert client.rejected_to("bob") == []
    assert [m.id for m in client.outbox()] == [msg_id(2)]


def test_unreadable_message_can_be_opened_later(client):
    record = client.add_incoming(
        msg_id(1),
        "bob",
        "Bob",
        "",
        client_store.UNREADABLE,
        "signature does not match",
        "{payload}",
        NOW,
    )

    assert [(r.seq, p) for r, p in client.unreadable_from("bob")] == [
        (record.seq, "{payload}")
    ]
    opened = client.set_opened(record.seq, "now readable")
    assert (opened.text, opened.state, opened.problem) == (
        "now readable",
        client_store.RECEIVED,
        None,
    )
    assert client.unreadable_from("bob") == []


def test_own_key_and_people_lists(client, tmp_path):
    assert client.own_private_key() is None
    client.save_own_private_key("PRIVATE PEM")
    client.set_users({"bob": "Bob", "alice": "alice"})
    client.set_users({"bob": "Bob", "борис": "Борис"})
    client.set_contacts({"bob": "Bob"})
    client.add_contact("борис", "Борис")
    client.remove_contact("bob")

    reopened = ClientStore(tmp_path / "alice.db")
    try:
        assert reopened.own_private_key() == "PRIVATE PEM"
        assert reopened.users() == ["Bob", "Борис"]
        assert reopened.contacts() == ["Борис"]
    finally:
        reopened.close_thread_connection()


def test_known_servers_pin_and_forget(tmp_path):
    servers = KnownServers(tmp_path / "known_servers.db")

    assert servers.pinned("chat.example:7777") is None
    servers.pin("chat.example:7777", PEM_A)
    servers.pin("other.example:7777", PEM_B)
    assert (
        KnownServers(tmp_path / "known_servers.db").pinned("chat.example:7777") == PEM_A
    )

    servers.pin("chat.example:7777", PEM_B)
    assert servers.pinned("chat.example:7777") == PEM_B
    assert servers.forget("chat.example:7777")
    assert not servers.forget("chat.example:7777")
    assert servers.pinned("chat.example:7777") is None
    assert servers.pinned("other.example:7777") == PEM_B


def test_case_05_sqlite_and_threads(client):
    # Case 05, client side: the socket thread stores messages while the Tk thread
    # reads history; the server also re-sends what was not acknowledged yet, so a
    # second writer delivers the same messages again.
    count = 2_000
    errors = []
    stored = []

    def deliver(label):
        try:
            for n in range(count):
                record = client.add_incoming(
                    msg_id(n),
                    "bob",
                    "Bob",
                    f"message {n}",
                    client_store.RECEIVED,
                    None,
                    None,
                    NOW + n,
                )
                if record is not None:
                    stored.append((label, n))
        except Exception as exc:
            errors.append(exc)
        finally:
            client.close_thread_connection()

    writers = [
        threading.Thread(target=deliver, args=(label,))
        for label in ("socket", "redelivery")
    ]
    for writer in writers:
        writer.start()
    reads = 0
    last_length = 0
    while any(w.is_alive() for w in writers) or reads == 0:
        history = client.history("bob", limit=count * 2)
        ids = [m.id for m in history]
        assert len(ids) == len(set(ids))
        assert [m.server_time for m in history] == sorted(
            m.server_time for m in history
        )
        assert len(history) >= last_length
        last_length = len(history)
        reads += 1
    for writer in writers:
        writer.join()

    assert errors == []
    assert reads > 1
    assert sorted(n for _, n in stored) == list(range(count))
    history = client.history("bob", limit=count * 2)
    assert [m.text for m in history] == [f"message {n}" for n in range(count)]
