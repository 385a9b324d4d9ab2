"""A real ChatClient against a scripted server that lies, tampers and talks nonsense.

The client must treat the server as a relay it does not trust (docs/protocol.md,
"End-to-end envelope"): whatever fails a check is stored and shown as unreadable with
its reason, never as text, and the socket thread keeps going. FakeServer below speaks
just enough of the protocol for a login and then lets each test push crafted frames.
Everything is checked through the client's events and its local history.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import select
import socket
import threading
import time
from typing import Any

import pytest
import rsa
from conftest import wait_for_event

from chat_tk import crypto
from chat_tk.client import core
from chat_tk.client import events as ev
from chat_tk.protocol import BadFrame, FrameDecoder, name_key
from chat_tk.storage import client_store as cs


class FakeServer:
    """A scripted chat_tk server on 127.0.0.1 that a test steers and inspects.

    It answers the login sequence, serves whatever peer keys the test puts in
    `keys`, accepts every `msg` with 200 and records each frame it receives.
    """

    def __init__(self, server_key_pem: str) -> None:
        self.hello: dict[str, Any] | None = {"server": "fake/1", "key": server_key_pem}
        self.users = ["alice", "bob", "carol"]
        self.keys: dict[str, str] = {}
        self.contacts: list[str] = []
        self.add_contact_code = 200
        self.published: list[str] = []
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.connections = 0

        self._current: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._closing = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    # ------------------------------------------------------------ what the test uses

    def frames(self, action: str) -> list[dict[str, Any]]:
        return [frame for _, frame in self.received if frame.get("action") == action]

    def actions_on(self, connection: int) -> list[Any]:
        return [
            frame.get("action")
            for number, frame in self.received
            if number == connection
        ]

    def acks(self) -> list[str]:
        return [frame.get("id") for frame in self.frames("ack")]

    def messages(self) -> dict[str, dict[str, Any]]:
        return {frame["id"]: frame for frame in self.frames("msg")}

    @property
    def client_key(self) -> crypto.PublicKey:
        """The key the logged-in client published with `presence`."""
        return crypto.load_public_key(self.published[-1])

    def push(self, frame: dict[str, Any] | bytes) -> None:
        """Send a frame (or raw bytes) to the most recent connection."""
        data = frame if isinstance(frame, bytes) else json.dumps(frame).encode() + b"\n"
        with self._send_lock:
            assert self._current is not None, "no client connected"
            self._current.sendall(data)

    def drop(self) -> None:
        """Close the current connection, as a crash or a network fault would."""
        with self._send_lock:
            conn, self._current = self._current, None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()
        for conn in self._sockets:
            conn.close()

    # ------------------------------------------------------------ serving

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._sockets.append(conn)
            self._spawn(self._serve, conn, self.connections)

    def _serve(self, conn: socket.socket, number: int) -> None:
        conn.settimeout(5)
        with self._send_lock:
            self._current = conn
        if self.hello is not None:
            nonce = secrets.token_hex(16)
            self._write(
                conn,
                {"action": "hello", "time": time.time(), "nonce": nonce, **self.hello},
            )

        decoder = FrameDecoder()
        while not self._closing.is_set():
            try:
                readable, _, _ = select.select([conn], [], [], 0.1)
                data = conn.recv(65_536) if readable else None
            except (OSError, ValueError):
                return
            if data == b"":
                return
            for frame in decoder.feed(data or b""):
                if isinstance(frame, BadFrame):
                    continue
                self.received.append((number, frame))
                self._write(conn, self._answer(frame))

    def _write(self, conn: socket.socket, message: dict[str, Any]) -> None:
        with self._send_lock, contextlib.suppress(OSError):
            conn.sendall(json.dumps(message).encode() + b"\n")

    def _answer(self, frame: dict[str, Any]) -> dict[str, Any]:
        action = frame.get("action")
        user = frame.get("user") if isinstance(frame.get("user"), dict) else {}
        code, data = 200, None

        if action == "register":
            code = 201
        elif action == "authenticate":
            data = user.get("account_name")
        elif action == "presence":
            self.published.append(user.get("public_key"))
        elif action == "get_contacts":
            code, data = 202, list(self.contacts)
        elif action == "get_users":
            code, data = 202, list(self.users)
        elif action == "get_online":
            code, data = 202, []
        elif action == "add_contact":
            code = self.add_contact_code
            if code == 200 and frame.get("user_id") not in self.contacts:
                self.contacts.append(frame.get("user_id"))
        elif action == "pubkey_need":
            pem = self.keys.get(name_key(str(frame.get("user_login"))))
            code, data = (511, pem) if pem else (404, "no such user, or no key yet")
        elif action not in ("probe", "ack", "msg", "del_contact", "exit", "quit"):
            code, data = 400, "unknown action"

        reply: dict[str, Any] = {"response": code}
        reply["alert" if code < 300 or code == 511 else "error"] = data
        if "id" in frame:
            reply["id"] = frame["id"]
        if action == "msg":
            reply["server_time"] = time.time()
        return reply


# ---------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def pairs() -> dict[str, crypto.KeyPair]:
    """Other people's 1024-bit key pairs, plus an old pair of alice's (case 07)."""
    names = ("bob", "bob_new", "carol", "alice_old")
    return {name: crypto.generate_key_pair(1024) for name in names}


@pytest.fixture
def fake(server_pair, pairs):
    server = FakeServer(server_pair.public.pem)
    server.keys = {"bob": pairs["bob"].public.pem, "carol": pairs["carol"].public.pem}
    try:
        yield server
    finally:
        server.close()


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def log_in(make_client, server, name: str = "alice", **options):
    """Start a client and return it once it is logged in (fail fast otherwise)."""
    client = make_client(server, name, login=False, **options)
    outcome = wait_for_event(
        client.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
    )
    assert isinstance(outcome, ev.LoggedIn), outcome
    return client


def new_id() -> str:
    return secrets.token_urlsafe(18)


def sealed_frame(
    text: str,
    sender_pair: crypto.KeyPair,
    recipient_key: crypto.PublicKey,
    sender: str = "bob",
    recipient: str = "alice",
) -> dict[str, Any]:
    """A msg frame as an honest server relays an honest sender's message."""
    message_id, now = new_id(), time.time()
    payload = crypto.seal_envelope(
        text, sender, recipient, message_id, now, sender_pair, recipient_key
    )
    return {
        "action": "msg",
        "id": message_id,
        "time": now,
        "from": sender,
        "to": recipient,
        "encoding": crypto.ENVELOPE_ENCODING,
        "message": payload,
        "server_time": now,
    }


def with_envelope_field(
    frame: dict[str, Any], field: str, value: str
) -> dict[str, Any]:
    envelope = json.loads(frame["message"])
    envelope[field] = value
    return {**frame, "message": json.dumps(envelope)}


def with_changed_bytes(frame: dict[str, Any], field: str, change) -> dict[str, Any]:
    raw = base64.b64decode(json.loads(frame["message"])[field])
    return with_envelope_field(frame, field, base64.b64encode(change(raw)).decode())


def flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x40]) + data[middle + 1 :]


def rsa_blocks(data: bytes, key: crypto.PublicKey) -> bytes:
    room = key.block_bytes - 11
    return b"".join(
        rsa.encrypt(data[i : i + room], key.key) for i in range(0, len(data), room)
    )


def forged_frame(
    inner: dict[str, Any],
    outer: dict[str, str],
    signer: crypto.KeyPair,
    recipient_key: crypto.PublicKey,
) -> dict[str, Any]:
    """An envelope whose signature is valid for the outer fields but whose sealed
    header says something else: what a sender colluding with the server could make."""
    plain = json.dumps(inner).encode() + b"\nforged text"
    r, s = rsa_blocks(plain, recipient_key), rsa_blocks(plain, signer.public)
    header = json.dumps([name_key(outer["from"]), name_key(outer["to"]), outer["id"]])
    signed = (
        b"chat_tk envelope v1\n"
        + header.encode()
        + b"\n"
        + f"{len(r)} {len(s)}\n".encode()
        + r
        + s
    )
    payload = {
        "v": 1,
        "r": base64.b64encode(r).decode(),
        "s": base64.b64encode(s).decode(),
        "sig": base64.b64encode(rsa.sign(signed, signer.private, "SHA-256")).decode(),
    }
    now = time.time()
    return {
        "action": "msg",
        "time": now,
        "server_time": now,
        "encoding": crypto.ENVELOPE_ENCODING,
        "message": json.dumps(payload),
        **outer,
    }


def expect(client, predicate, seen=None, timeout: float = 10.0):
    """The next event matching `predicate`; fail at once if the client stops."""
    seen = [] if seen is None else seen
    stopped = (ev.SessionEnded, ev.LoginFailed)
    event = wait_for_event(
        client.events, lambda e: predicate(e) or isinstance(e, stopped), timeout, seen
    )
    assert predicate(event), f"the client stopped: {event!r}; saw {seen!r}"
    return event


def added(client, message_id: str, seen=None, timeout: float = 10.0):
    def matches(e):
        return isinstance(e, ev.MessageAdded) and e.record.id == message_id

    return expect(client, matches, seen, timeout).record


def updated(client, seq: int, state: str, seen=None, timeout: float = 10.0):
    def matches(e):
        return (
            isinstance(e, ev.MessageUpdated)
            and e.record.seq == seq
            and e.record.state == state
        )

    return expect(client, matches, seen, timeout).record


def state_of(client, peer: str, seq: int) -> str | None:
    return next((r.state for r in client.history(peer) if r.seq == seq), None)


def all_texts(client, *peers: str) -> list[str]:
    return [record.text for peer in peers for record in client.history(peer)]


# ---------------------------------------------------------------------------- tampering


def test_honest_message_is_shown_and_acknowledged(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    frame = sealed_frame("hello alice", pairs["bob"], fake.client_key)
    fake.push(frame)

    record = added(alice, frame["id"])
    assert (record.state, record.text, record.problem) == (
        cs.RECEIVED,
        "hello alice",
        None,
    )
    assert record.server_time == pytest.approx(frame["server_time"])
    wait_until(lambda: frame["id"] in fake.acks(), "the ack")
    assert [r.text for r in alice.history("bob")] == ["hello alice"]


TAMPERING = {
    # A relay that damages the ciphertext: the signature covers it.
    "flipped byte in r": (
        lambda f: with_changed_bytes(f, "r", flip_one_byte),
        "bob",
        "signature does not match",
    ),
    "flipped byte in s": (
        lambda f: with_changed_bytes(f, "s", flip_one_byte),
        "bob",
        "signature does not match",
    ),
    "r cut short": (
        lambda f: with_changed_bytes(f, "r", lambda b: b[: len(b) - 40]),
        "bob",
        "signature does not match",
    ),
    "r cut to nothing": (
        lambda f: with_changed_bytes(f, "r", lambda b: b""),
        "bob",
        "signature does not match",
    ),
    "flipped byte in the signature": (
        lambda f: with_changed_bytes(f, "sig", flip_one_byte),
        "bob",
        "signature does not match",
    ),
    # Payloads that are not an envelope at all.
    "invalid base64 in r": (
        lambda f: with_envelope_field(f, "r", "%%% not base64 %%%"),
        "bob",
        "could not be decrypted",
    ),
    "payload not JSON": (
        lambda f: {**f, "message": "<<garbage>>"},
        "bob",
        "could not be decrypted",
    ),
    "unknown envelope version": (
        lambda f: with_envelope_field(f, "v", 2),
        "bob",
        "could not be decrypted",
    ),
    "unknown encoding": (
        lambda f: {**f, "encoding": "plaintext"},
        "bob",
        "unknown message format",
    ),
    # The server rewrites the outer fields of an honest envelope.
    "from rewritten to another user with a key": (
        lambda f: {**f, "from": "carol"},
        "carol",
        "signature does not match",
    ),
    "id changed": (
        lambda f: {**f, "id": new_id()},
        "bob",
        "signature does not match",
    ),
    "to rewritten": (
        lambda f: {**f, "to": "dave"},
        "bob",
        "addressed to someone else",
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING), ids=list(TAMPERING))
def test_tampered_message_is_unreadable_with_its_reason(fake, make_client, pairs, case):
    alice = log_in(make_client, fake)
    tamper, stored_under, reason = TAMPERING[case]
    secret = f"plaintext that must not show ({case})"
    frame = tamper(sealed_frame(secret, pairs["bob"], fake.client_key))
    fake.push(frame)

    record = added(alice, frame["id"])
    assert record.state == cs.UNREADABLE
    assert record.text == ""
    assert reason in (record.problem or "")
    assert [r.id for r in alice.history(stored_under)] == [frame["id"]]
    assert secret not in all_texts(alice, "bob", "carol")
    wait_until(lambda: frame["id"] in fake.acks(), "the ack of an unreadable message")
    assert alice.running


def test_base64_failure_says_not_valid(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    frame = with_envelope_field(
        sealed_frame("x", pairs["bob"], fake.client_key), "sig", "!!"
    )
    fake.push(frame)

    record = added(alice, frame["id"])
    assert record.state == cs.UNREADABLE
    assert "could not be decrypted" in record.problem
    assert "not valid" in record.problem


def test_validly_signed_envelope_whose_inner_header_disagrees_is_unreadable(
    fake, make_client, pairs
):
    alice = log_in(make_client, fake)
    # carol signs; the sealed header claims bob wrote it, or another id, or another reader.
    now = time.time()
    cases = [
        (
            {"from": "bob", "to": "alice", "id": "X" * 20, "time": now},
            {"from": "carol", "to": "alice", "id": "X" * 20},
        ),
        (
            {"from": "carol", "to": "alice", "id": "Y" * 20, "time": now},
            {"from": "carol", "to": "alice", "id": "Z" * 20},
        ),
        (
            {"from": "carol", "to": "dave", "id": "W" * 20, "time": now},
            {"from": "carol", "to": "alice", "id": "W" * 20},
        ),
    ]
    for inner, outer in cases:
        fake.push(forged_frame(inner, outer, pairs["carol"], fake.client_key))

    for _, outer in cases:
        record = added(alice, outer["id"])
        assert record.state == cs.UNREADABLE
        assert record.text == ""
        assert "altered in transit" in record.problem
    assert "forged text" not in all_texts(alice, "bob", "carol")
    assert alice.history("bob") == []


def test_repeated_id_is_shown_once_and_acknowledged_each_time(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    frame = sealed_frame("only once", pairs["bob"], fake.client_key)
    fake.push(frame)
    added(alice, frame["id"])
    wait_until(lambda: fake.acks().count(frame["id"]) == 1, "the first ack")

    # Again after it is stored, then twice in one read, then a marker to sync on.
    fake.push(frame)
    fake.push(line(frame) * 2)
    marker = sealed_frame("marker", pairs["bob"], fake.client_key)
    fake.push(marker)
    seen = []
    added(alice, marker["id"], seen)

    assert not [
        e for e in seen if isinstance(e, ev.MessageAdded) and e.record.id == frame["id"]
    ]
    assert [r.text for r in alice.history("bob")] == ["only once", "marker"]
    wait_until(lambda: fake.acks().count(frame["id"]) == 4, "an ack for every copy")


def test_repeated_id_with_other_content_keeps_the_first(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    first = sealed_frame("the original", pairs["bob"], fake.client_key)
    fake.push(first)
    added(alice, first["id"])

    # The server replays the id with another (validly sealed) text.
    second = crypto.seal_envelope(
        "a replacement",
        "bob",
        "alice",
        first["id"],
        time.time(),
        pairs["bob"],
        fake.client_key,
    )
    fake.push({**first, "message": second})
    wait_until(lambda: fake.acks().count(first["id"]) == 2, "the second ack")
    assert [r.text for r in alice.history("bob")] == ["the original"]


# ---------------------------------------------------------------------------- keys


def test_case_07_cannot_decrypt_recipient_new_key(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    # bob still holds an old key of alice's; his signature is valid.
    frame = sealed_frame("for the old key", pairs["bob"], pairs["alice_old"].public)
    fake.push(frame)

    record = added(alice, frame["id"])
    assert record.state == cs.UNREADABLE
    assert record.text == ""
    assert "could not be decrypted" in record.problem
    assert "made for another key" in record.problem

    # bob is told, with a notice signed by alice's current key and carrying no text.
    wait_until(
        lambda: any(
            m.get("encoding") == core.NOTICE_ENCODING for m in fake.frames("msg")
        ),
        "a notice to the sender",
    )
    notice = next(
        m for m in fake.frames("msg") if m.get("encoding") == core.NOTICE_ENCODING
    )
    assert (notice["from"], notice["to"]) == ("alice", "bob")
    body = json.loads(notice["message"])
    assert set(body) == {"kind", "id", "sig"}
    assert (body["kind"], body["id"]) == ("unreadable", frame["id"])
    signed = json.dumps(["unreadable", "alice", "bob", frame["id"]]).encode()
    crypto.verify_notice(signed, body["sig"], fake.client_key)
    wait_until(lambda: frame["id"] in fake.acks(), "the ack")
    assert alice.running


def test_case_07_sender_is_told_and_resends_under_the_new_key(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    sent = alice.send_text("bob", "read me, bob")
    updated(alice, sent.seq, cs.STORED)

    # bob made a new key pair; his client signs the notice with it, and the
    # server now serves that key.
    fake.keys["bob"] = pairs["bob_new"].public.pem
    signed = json.dumps(["unreadable", "bob", "alice", sent.id]).encode()
    body = {
        "kind": "unreadable",
        "id": sent.id,
        "sig": crypto.sign_notice(signed, pairs["bob_new"]),
    }
    notice = {
        "action": "msg",
        "id": new_id(),
        "time": time.time(),
        "server_time": time.time(),
        "from": "bob",
        "to": "alice",
        "encoding": core.NOTICE_ENCODING,
        "message": json.dumps(body),
    }
    fake.push(notice)

    seen = []
    rejected = updated(alice, sent.seq, cs.REJECTED, seen, timeout=5)
    assert "could not decrypt" in rejected.problem
    expect(alice, lambda e: isinstance(e, ev.PeerKeyChanged), seen)
    assert not [e for e in seen if isinstance(e, ev.MessageAdded)], (
        "a notice is not a message"
    )

    alice.accept_new_key("bob")
    wait_until(lambda: len(fake.frames("msg")) == 2, "the message sent again")
    again = fake.frames("msg")[1]
    assert again["id"] != sent.id
    opened = crypto.open_envelope(
        again["message"],
        "alice",
        "bob",
        again["id"],
        fake.client_key,
        pairs["bob_new"],
        False,
    )
    assert opened.text == "read me, bob"


def test_changed_key_of_pinned_contact_holds_messages_until_accepted(
    fake, make_client, pairs
):
    alice = log_in(make_client, fake)
    first = alice.send_text("bob", "first, to the pinned key")
    updated(alice, first.seq, cs.STORED)

    fake.keys["bob"] = pairs["bob_new"].public.pem
    fake.push({"action": "key_changed", "user": "bob", "time": time.time()})
    changed = expect(alice, lambda e: isinstance(e, ev.PeerKeyChanged))
    assert changed.peer == "bob"
    assert changed.pinned_fingerprint == pairs["bob"].public.fingerprint()
    assert changed.offered_fingerprint == pairs["bob_new"].public.fingerprint()
    assert alice.fingerprint_of("bob") == (
        changed.pinned_fingerprint,
        changed.offered_fingerprint,
    )

    held = alice.send_text("bob", "second, held back")
    waiting = updated(alice, held.seq, cs.PENDING)
    assert "key changed" in waiting.problem
    assert "accept" in waiting.problem
    # Something signed with the offered key is not trusted yet either.
    incoming = sealed_frame("from the new key", pairs["bob_new"], fake.client_key)
    fake.push(incoming)
    early = added(alice, incoming["id"])
    assert (early.state, early.text) == (cs.UNREADABLE, "")
    assert held.id not in fake.messages()
    assert alice.history("bob")[1].state == cs.PENDING

    alice.accept_new_key("bob")
    wait_until(
        lambda: state_of(alice, "bob", held.seq) == cs.STORED, "the held message stored"
    )
    frame = fake.messages()[held.id]
    opened = crypto.open_envelope(
        frame["message"],
        "alice",
        "bob",
        held.id,
        fake.client_key,
        pairs["bob_new"],
        False,
    )
    assert opened.text == "second, held back"
    wait_until(lambda: state_of(alice, "bob", early.seq) == cs.RECEIVED, "a second try")
    assert [r.text for r in alice.history("bob") if r.seq == early.seq] == [
        "from the new key"
    ]


def test_sender_without_any_key_is_unreadable(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    del fake.keys["bob"]
    frame = sealed_frame("who am I", pairs["bob"], fake.client_key)
    fake.push(frame)

    record = added(alice, frame["id"])
    assert (record.state, record.text) == (cs.UNREADABLE, "")
    assert "no key known" in record.problem


# ---------------------------------------------------------------------------- garbage


def line(frame: dict[str, Any]) -> bytes:
    return json.dumps(frame).encode() + b"\n"


def garbage_frames() -> list[bytes]:
    envelope_junk = json.dumps({"v": 1, "r": 1, "s": None, "sig": []})
    msg = {"action": "msg", "from": "bob", "to": "alice", "time": 1.0}
    return [
        b"this is not json\n",
        b"\xff\xfe\xc3\n",
        b"\n",
        b"\r\n",
        b"[1, 2, 3]\n",
        b"42\n",
        b'"just a string"\n',
        b'{"action": "msg", "id": NaN}\n',
        b"{" + b"z" * 60_000 + b"\n",
        line({"action": "note", "junk": "y" * 60_000}),
        line({"action": "frobnicate", "id": 7}),
        line({"action": 12345}),
        line({"action": None, "response": None}),
        line({"action": "msg"}),
        line({**msg, "id": 1234567890123456789}),
        line({**msg, "id": "short"}),
        line({**msg, "id": new_id(), "from": 7}),
        line({**msg, "id": new_id(), "to": ["alice"]}),
        line({**msg, "id": new_id(), "from": None, "to": None}),
        line(
            {**msg, "id": new_id(), "encoding": 5, "message": 6, "server_time": "now"}
        ),
        line(
            {
                **msg,
                "id": new_id(),
                "encoding": crypto.ENVELOPE_ENCODING,
                "message": envelope_junk,
            }
        ),
        line(
            {
                **msg,
                "id": new_id(),
                "encoding": crypto.ENVELOPE_ENCODING,
                "message": "[]",
            }
        ),
        line(
            {
                **msg,
                "id": new_id(),
                "encoding": crypto.ENVELOPE_ENCODING,
                "message": "null",
            }
        ),
        line(
            {
                **msg,
                "id": new_id(),
                "encoding": core.NOTICE_ENCODING,
                "message": '{"id": 5}',
            }
        ),
        line({**msg, "id": new_id(), "encoding": core.NOTICE_ENCODING, "message": 17}),
        line(
            {
                **msg,
                "id": new_id(),
                "encoding": core.NOTICE_ENCODING,
                "message": '{"id": 1, "sig": 2}',
            }
        ),
        b'{"action": "msg", "id": "%s", "from": "bob", "to": "alice", "server_time": 1e999}\n'
        % new_id().encode(),
        line({"action": "delivered", "id": None}),
        line({"action": "delivered", "id": {"nested": [1]}}),
        line({"action": "delivered", "id": new_id(), "to": 3}),
        line({"action": "contact_status", "user": 5, "online": "yes"}),
        line({"action": "contact_status", "user": ["bob"], "online": True}),
        line({"action": "key_changed", "user": None}),
        line({"action": "key_changed", "user": 42}),
        line({"action": "hello", "key": "not a key", "nonce": 5}),
        line({"response": "ok", "id": 5}),
        line({"response": 200, "id": ["x"]}),
        line({"response": None}),
        line({"response": 511, "alert": {"pem": True}, "id": "nobody-asked"}),
    ]


def test_garbage_frames_do_not_kill_the_socket_thread(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    for data in garbage_frames():
        fake.push(data)
    frame = sealed_frame("still here", pairs["bob"], fake.client_key)
    fake.push(frame)

    seen = []
    record = added(alice, frame["id"], seen, timeout=15)
    assert (record.state, record.text) == (cs.RECEIVED, "still here")
    assert alice.running
    assert fake.connections == 1, "the garbage must not cost the connection"
    assert not [e for e in seen if isinstance(e, (ev.ConnectionLost, ev.SessionEnded))]
    assert all(r.text == "" for r in alice.history("bob") if r.state == cs.UNREADABLE)


def test_msg_from_a_name_that_is_not_an_account_name_is_survived(
    fake, make_client, pairs
):
    alice = log_in(make_client, fake)
    for bad in ("not a name!", "", "-dash", "x" * 40):
        odd = sealed_frame("odd sender", pairs["bob"], fake.client_key)
        fake.push({**odd, "from": bad})
    frame = sealed_frame("after the odd ones", pairs["bob"], fake.client_key)
    fake.push(frame)

    seen = []
    record = added(alice, frame["id"], seen)
    assert record.text == "after the odd ones"
    assert alice.running
    assert not [e for e in seen if isinstance(e, (ev.ConnectionLost, ev.SessionEnded))]


def test_refused_add_contact_for_a_new_sender_is_survived(fake, make_client, pairs):
    alice = log_in(make_client, fake)
    fake.add_contact_code = 403
    first = sealed_frame("from someone new", pairs["bob"], fake.client_key)
    fake.push(first)
    second = sealed_frame("and again", pairs["bob"], fake.client_key)
    fake.push(second)

    seen = []
    added(alice, first["id"], seen)
    record = added(alice, second["id"], seen)
    assert record.text == "and again"
    assert alice.running
    assert not [e for e in seen if isinstance(e, ev.SessionEnded)], seen


def test_oversized_frame_costs_the_connection_then_the_client_comes_back(
    fake, make_client, pairs, monkeypatch
):
    monkeypatch.setattr(core, "RECONNECT_FIRST_SECONDS", 0.1)
    monkeypatch.setattr(core, "RECONNECT_MAX_SECONDS", 0.2)
    alice = log_in(make_client, fake)
    fake.push(b"{" + b"q" * 70_000 + b"}\n")

    lost = expect(alice, lambda e: isinstance(e, ev.ConnectionLost))
    assert "oversized" in lost.reason
    expect(alice, lambda e: isinstance(e, ev.StatusChanged) and e.connected)
    assert fake.connections == 2
    frame = sealed_frame("after the reconnect", pairs["bob"], fake.client_key)
    fake.push(frame)
    assert added(alice, frame["id"]).text == "after the reconnect"


# ---------------------------------------------------------------------------- the server itself


def other_server_key(pair: crypto.KeyPair) -> str:
    """A different public key of the same size (never used to encrypt)."""
    return rsa.PublicKey(pair.public.key.n + 2, 65537).save_pkcs1().decode()


def test_server_with_a_new_identity_key_is_refused_at_login(
    fake, make_client, server_pair
):
    first = log_in(make_client, fake)
    first.stop()
    fake.hello["key"] = other_server_key(server_pair)

    again = make_client(fake, "alice", register=False, login=False, home="home-alice")
    failed = wait_for_event(
        again.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
    )
    assert isinstance(failed, ev.LoginFailed)
    assert "different identity key" in failed.reason
    assert "--forget-server" in failed.reason
    assert f"127.0.0.1:{fake.port}" in failed.reason
    assert fake.actions_on(2) == [], "the password must not be sent"


def test_server_key_changing_under_a_session_ends_it(
    fake, make_client, server_pair, monkeypatch
):
    monkeypatch.setattr(core, "RECONNECT_FIRST_SECONDS", 0.1)
    monkeypatch.setattr(core, "RECONNECT_MAX_SECONDS", 0.2)
    alice = log_in(make_client, fake)
    fake.hello["key"] = other_server_key(server_pair)
    fake.drop()

    ended = wait_for_event(alice.events, lambda e: isinstance(e, ev.SessionEnded))
    assert "different identity key" in ended.reason
    wait_until(lambda: not alice.running, "the client to stop")
    time.sleep(0.5)
    assert fake.connections == 2, "no reconnect loop against an impostor"
    assert fake.actions_on(2) == []


def test_silent_server_fails_the_login_in_time(fake, make_client, monkeypatch):
    monkeypatch.setattr(core, "HELLO_TIMEOUT_SECONDS", 2.0)
    fake.hello = None
    started = time.monotonic()
    alice = make_client(fake, "alice", login=False)

    failed = wait_for_event(
        alice.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed)), 10
    )
    elapsed = time.monotonic() - started
    assert isinstance(failed, ev.LoginFailed)
    assert "did not answer" in failed.reason
    assert 1.5 < elapsed < 5.0
    wait_until(lambda: not alice.running, "the client to stop")


BAD_HELLOS = {
    "not a hello": ({"action": "welcome"}, "not a chat_tk server"),
    "garbage key": ({"key": "-----BEGIN nonsense-----"}, "unusable key"),
    "weak key": (None, "only 1024 bits"),
}


@pytest.mark.parametrize("case", list(BAD_HELLOS), ids=list(BAD_HELLOS))
def test_bad_hello_is_refused(fake, make_client, pairs, case):
    change, reason = BAD_HELLOS[case]
    fake.hello.update(change or {"key": pairs["bob"].public.pem})
    alice = make_client(fake, "alice", login=False)

    failed = wait_for_event(
        alice.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
    )
    assert isinstance(failed, ev.LoginFailed)
    assert reason in failed.reason
    assert fake.frames("register") == fake.frames("authenticate") == []
