"""The client against the real server when links and processes fail.

Each test drives real ChatClients against a real server on 127.0.0.1, stops and
restarts that server on its port, freezes the link with a small proxy, or restarts a
client on its data directory, and checks what the user would see: events, states in
the local history, and the order of messages (docs/protocol.md, "Direct messages").
Reconnect and keep-alive timings are monkeypatched down to fractions of a second.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import threading
import time
from types import SimpleNamespace

import pytest
from conftest import wait_for_event

from chat_tk import crypto
from chat_tk.client import core
from chat_tk.client import events as ev
from chat_tk.server.runner import add_user
from chat_tk.storage import client_store as cs


@pytest.fixture
def quick_reconnect(monkeypatch):
    monkeypatch.setattr(core, "RECONNECT_FIRST_SECONDS", 0.2)
    monkeypatch.setattr(core, "RECONNECT_MAX_SECONDS", 1.0)


def expect(client, predicate, seen=None, timeout: float = 15.0):
    """The next event matching `predicate`; fail at once if the client stops."""
    seen = [] if seen is None else seen
    stopped = (ev.SessionEnded, ev.LoginFailed)
    event = wait_for_event(
        client.events, lambda e: predicate(e) or isinstance(e, stopped), timeout, seen
    )
    assert predicate(event), f"the client stopped: {event!r}; saw {seen!r}"
    return event


def log_in(make_client, server, name: str, **options):
    client = make_client(server, name, login=False, **options)
    outcome = wait_for_event(
        client.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
    )
    assert isinstance(outcome, ev.LoggedIn), outcome
    return client


def come_back(make_client, server, name: str, **options):
    """The same account again, from the same data directory (a restarted app)."""
    return log_in(
        make_client, server, name, register=False, home=f"home-{name}", **options
    )


def with_key_published(make_client, server, name: str) -> None:
    """Register `name` and log in once, so the server holds a key; then go away."""
    log_in(make_client, server, name).stop()


def reach_state(client, records, state: str, seen=None, timeout: float = 15.0):
    """Wait until every record reached `state`; return the updates in arrival order."""
    waiting = {record.seq for record in records}
    arrived = []

    def matches(e):
        return (
            isinstance(e, ev.MessageUpdated)
            and e.record.seq in waiting
            and e.record.state == state
        )

    while waiting:
        record = expect(client, matches, seen, timeout).record
        waiting.discard(record.seq)
        arrived.append(record)
    return arrived


def receive(client, count: int, seen=None, timeout: float = 15.0):
    def matches(e):
        return isinstance(e, ev.MessageAdded)

    return [expect(client, matches, seen, timeout).record for _ in range(count)]


def drain(client) -> list:
    events = []
    while not client.events.empty():
        events.append(client.events.get_nowait())
    return events


# ---------------------------------------------------------------------------- outbox


def test_outbox_survives_a_server_restart_in_order(
    server, make_client, quick_reconnect
):
    with_key_published(make_client, server, "bob")
    alice = log_in(make_client, server, "alice")
    server.stop()

    texts = ["one", "two", "three"]
    sent = [alice.send_text("bob", text) for text in texts]
    assert [record.state for record in sent] == [cs.PENDING] * 3
    assert [(r.text, r.state) for r in alice.history("bob")] == [
        (text, cs.PENDING) for text in texts
    ]
    assert alice.outbox_size() == 3
    lost = expect(alice, lambda e: isinstance(e, ev.ConnectionLost))
    assert lost.retry_in_seconds <= 1.0

    server.start(server.port)
    stored = reach_state(alice, sent, cs.STORED)
    assert [r.seq for r in stored] == [r.seq for r in sent]
    # history is ordered by the server's clock: the server took them in order too
    assert [(r.text, r.state) for r in alice.history("bob")] == [
        (text, cs.STORED) for text in texts
    ]
    assert len({r.server_time for r in alice.history("bob")}) == 3
    assert alice.outbox_size() == 0

    bob = come_back(make_client, server, "bob")
    assert [r.text for r in receive(bob, 3)] == texts
    assert [r.text for r in bob.history("alice")] == texts
    assert {r.id for r in bob.history("alice")} == {r.id for r in sent}


def test_restarted_client_sends_what_it_queued_offline(
    server, make_client, quick_reconnect
):
    with_key_published(make_client, server, "bob")
    alice = log_in(make_client, server, "alice")
    server.stop()
    expect(alice, lambda e: isinstance(e, ev.ConnectionLost))
    sent = [alice.send_text("bob", text) for text in ("queued 1", "queued 2")]
    alice.stop()
    assert not alice.running

    server.start(server.port)
    again = come_back(make_client, server, "alice")
    stored = reach_state(again, sent, cs.STORED)
    assert [r.id for r in stored] == [r.id for r in sent]

    bob = come_back(make_client, server, "bob")
    assert [r.text for r in receive(bob, 2)] == ["queued 1", "queued 2"]


def test_message_delivered_twice_is_shown_once(server, make_client):
    alice = log_in(make_client, server, "alice")
    bob = log_in(make_client, server, "bob")

    # This bob stores what arrives but never acknowledges it: the server keeps the
    # message and gives it again at bob's next login.
    real_send, swallowed = bob._send, []

    def send_without_acks(message):
        if message.get("action") == "ack":
            swallowed.append(message["id"])
            return
        real_send(message)

    bob._send = send_without_acks
    sent = alice.send_text("bob", "exactly once")
    reach_state(alice, [sent], cs.STORED)
    first = receive(bob, 1)[0]
    assert first.id == sent.id
    assert swallowed == [sent.id]
    bob.stop()

    again = come_back(make_client, server, "bob")
    reach_state(alice, [sent], cs.DELIVERED)  # the redelivery was acknowledged
    time.sleep(0.2)
    repeats = [
        e
        for e in drain(again)
        if isinstance(e, ev.MessageAdded) and e.record.id == sent.id
    ]
    assert repeats == []
    assert [r.text for r in again.history("alice")] == ["exactly once"]


def test_delivered_receipt_reaches_a_sender_who_was_offline(
    server, make_client, quick_reconnect
):
    with_key_published(make_client, server, "bob")
    alice = log_in(make_client, server, "alice")
    sent = alice.send_text("bob", "read this later")
    reach_state(alice, [sent], cs.STORED)
    alice.stop()

    bob = come_back(make_client, server, "bob")
    assert receive(bob, 1)[0].text == "read this later"
    bob.stop()  # its ack was sent before the goodbye

    again = come_back(make_client, server, "alice")
    reach_state(again, [sent], cs.DELIVERED)
    assert [r.state for r in again.history("bob")] == [cs.DELIVERED]


# ---------------------------------------------------------------------------- addressing


def test_message_to_an_unknown_user_fails(server, make_client):
    alice = log_in(make_client, server, "alice")
    sent = alice.send_text("nobody", "anyone there?")

    failed = reach_state(alice, [sent], cs.FAILED)[0]
    assert failed.problem == "no such user"
    assert [r.state for r in alice.history("nobody")] == [cs.FAILED]
    assert alice.outbox_size() == 0

    # The session goes on: a later message to a real user still goes out.
    with_key_published(make_client, server, "bob")
    later = alice.send_text("bob", "still here")
    reach_state(alice, [later], cs.STORED)
    assert alice.running


def test_a_burst_from_the_outbox_stays_under_the_rate_limits(
    server, make_client, caplog
):
    """450 messages written offline go out at reconnect without one 429."""
    with_key_published(make_client, server, "bob")
    alice = log_in(make_client, server, "alice")
    alice.send_text("bob", "first")
    reach_state(alice, alice.history("bob"), cs.STORED)
    alice.stop()

    offline = core.ChatClient(
        alice.data_dir,
        alice.host,
        alice.port,
        "alice",
        "secret-pw",
        key_bits=alice.key_bits,
    )
    records = [offline.send_text("bob", f"burst {n}") for n in range(450)]
    offline.start()
    try:
        reach_state(offline, records, cs.STORED, timeout=60)
    finally:
        offline.stop()
    refused = [r for r in caplog.records if "rate exceeded" in r.getMessage()]
    assert refused == []


def slow_first_key(monkeypatch, seconds: float = 1.0) -> None:
    """Make key generation take a while, as a real 2048-bit one does (1 to 15 s)."""
    generate = crypto.generate_key_pair

    def slowly(*args, **kwargs):
        time.sleep(seconds)
        return generate(*args, **kwargs)

    monkeypatch.setattr(crypto, "generate_key_pair", slowly)


def test_message_waits_for_a_user_without_a_key_until_they_log_in(
    server, make_client, monkeypatch
):
    add_user(server.data_dir, "carol", "carol-password")
    alice = log_in(make_client, server, "alice")
    sent = alice.send_text("carol", "welcome, carol")

    waiting = reach_state(alice, [sent], cs.PENDING)[0]
    assert "waiting for carol to log in" in waiting.problem
    assert alice.outbox_size() == 1

    slow_first_key(monkeypatch)
    carol = log_in(
        make_client, server, "carol", password="carol-password", register=False
    )
    reach_state(alice, [sent], cs.STORED, timeout=6)
    assert receive(carol, 1)[0].text == "welcome, carol"


def test_message_waits_for_a_contact_without_a_key_until_they_log_in(
    server, make_client, monkeypatch
):
    add_user(server.data_dir, "carol", "carol-password")
    alice = log_in(make_client, server, "alice")
    alice.add_contact("carol")
    expect(
        alice,
        lambda e: (
            isinstance(e, ev.ContactsChanged)
            and [c.name for c in e.contacts] == ["carol"]
        ),
    )
    sent = alice.send_text("carol", "welcome, contact")
    assert "waiting for carol" in reach_state(alice, [sent], cs.PENDING)[0].problem

    # carol is online (her contacts hear of it) a moment before her key exists
    slow_first_key(monkeypatch)
    log_in(make_client, server, "carol", password="carol-password", register=False)
    reach_state(alice, [sent], cs.STORED, timeout=6)


# ---------------------------------------------------------------------------- the link


class FreezableProxy:
    """A TCP relay to the server that can stop passing bytes without closing."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = threading.Event()
        self.links = 0
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, upstream]
            self.links += 1
            self._spawn(self._relay, client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        other = {client: upstream, upstream: client}
        while not self._closing.is_set():
            if self.frozen.is_set():
                time.sleep(0.02)
                continue
            try:
                readable, _, _ = select.select(list(other), [], [], 0.05)
                for sock in readable:
                    data = sock.recv(65_536)
                    if not data:
                        raise ConnectionError("closed")
                    other[sock].sendall(data)
            except (OSError, ValueError):
                break
        for sock in other:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxy(server):
    relay = FreezableProxy(server.port)
    try:
        yield relay
    finally:
        relay.close()


def test_frozen_link_is_detected_by_keep_alive_and_recovered(
    server, make_client, proxy, monkeypatch, quick_reconnect
):
    monkeypatch.setattr(core, "DEAD_AFTER_SECONDS", 2.0)
    monkeypatch.setattr(core, "PROBE_EVERY_SECONDS", 0.5)
    monkeypatch.setattr(core, "ANSWER_TIMEOUT_SECONDS", 3.0)
    alice = log_in(make_client, SimpleNamespace(port=proxy.port), "alice")
    time.sleep(1.2)  # probes are answered while the link is healthy
    assert not [e for e in drain(alice) if isinstance(e, ev.ConnectionLost)]

    proxy.frozen.set()
    frozen_at = time.monotonic()
    lost = expect(alice, lambda e: isinstance(e, ev.ConnectionLost), timeout=10)
    assert "keep-alive" in lost.reason
    assert 1.5 < time.monotonic() - frozen_at < 6.0

    proxy.frozen.clear()
    expect(alice, lambda e: isinstance(e, ev.StatusChanged) and e.connected)
    assert proxy.links >= 2
    alice.request_online()
    listed = expect(alice, lambda e: isinstance(e, ev.OnlineListed))
    assert "alice" in listed.names


def test_status_texts_follow_the_connection(server, make_client, monkeypatch):
    monkeypatch.setattr(core, "RECONNECT_FIRST_SECONDS", 1.0)
    monkeypatch.setattr(core, "RECONNECT_MAX_SECONDS", 1.0)
    address = f"127.0.0.1:{server.port}"
    seen = []
    alice = make_client(server, "alice", login=False)
    expect(alice, lambda e: isinstance(e, ev.StatusChanged) and e.connected, seen)

    server.stop()
    lost = expect(alice, lambda e: isinstance(e, ev.ConnectionLost), seen)
    offline = expect(alice, lambda e: isinstance(e, ev.StatusChanged), seen)
    server.start(server.port)
    expect(alice, lambda e: isinstance(e, ev.StatusChanged) and e.connected, seen)

    statuses = [e for e in seen if isinstance(e, ev.StatusChanged)]
    assert statuses[0].text == f"Connecting to {address}…"
    assert not statuses[0].connected
    assert statuses[-1].text == f"Connected to {address} as alice"
    assert [s.connected for s in statuses].count(True) == 2
    shape = re.fullmatch(r"Offline: (.+)\. Reconnecting in (\d+) s…", offline.text)
    assert shape, offline.text
    assert shape.group(1) == lost.reason
    assert shape.group(2) == f"{lost.retry_in_seconds:.0f}"
    assert not offline.connected
    after_offline = statuses[statuses.index(offline) + 1 :]
    assert after_offline[0].text == f"Connecting to {address}…"


def test_second_login_ends_the_first_session_for_good(
    server, make_client, quick_reconnect
):
    alice = log_in(make_client, server, "alice")
    laptop = log_in(make_client, server, "alice", register=False, home="alice-laptop")

    seen = []
    ended = wait_for_event(
        alice.events, lambda e: isinstance(e, ev.SessionEnded), 10, seen
    )
    assert "another place" in ended.reason
    assert not [e for e in seen if isinstance(e, ev.ConnectionLost)]
    deadline = time.monotonic() + 5
    while alice.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alice.running

    time.sleep(1.5)  # long enough for a reconnect loop to show itself
    assert not [
        e for e in drain(laptop) if isinstance(e, (ev.ConnectionLost, ev.SessionEnded))
    ]
    laptop.request_online()
    assert "alice" in expect(laptop, lambda e: isinstance(e, ev.OnlineListed)).names
