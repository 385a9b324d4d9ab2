"""The wire contract (/work/shared/PROTOCOL.md) checked rule by rule over 127.0.0.1.

Server rules are checked through tests/wire.py, not through the real client, so
that what is tested is the contract and not our own client's habits. The few rules
that bind clients (pinning the server key, refusing an over-long password, showing
a repeated message once) are checked on the real ChatClient.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import RunningServer, wait_for_event

from chat_tk import crypto, protocol
from chat_tk.client import events as ev
from chat_tk.server import net
from chat_tk.server.hub import Limits
from chat_tk.server.net import DATABASE_FILE, SERVER_KEY_SETTING, ServerConfig
from chat_tk.server.runner import HostedServer, remove_user
from chat_tk.storage import server_store
from tests.wire import (
    RecordingRelay,
    WireClient,
    WireClosed,
    WirePool,
    encode,
    make_envelope,
    new_id,
    open_envelope,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse 1"
OTHER_PASSWORD = "battery staple 2"
GENEROUS = Limits(
    requests_per_second=1e6,
    request_burst=1e6,
    messages_per_second=1e6,
    message_burst=1e6,
)


@pytest.fixture(scope="module")
def user_pairs() -> tuple[crypto.KeyPair, crypto.KeyPair]:
    return crypto.generate_key_pair(1024), crypto.generate_key_pair(1024)


# How long the server gets to finish with closed connections before a fixture
# stops it: a stop that cancels a database wait kills the database thread (see
# test_client_leaving_while_database_busy_keeps_server_working), which would
# otherwise be reported against whichever test happens to end at that moment.
SETTLE_SECONDS = 0.15


@pytest.fixture
def wire(server):
    pool = WirePool(server.port)
    yield pool
    pool.close_all()
    time.sleep(SETTLE_SECONDS)


def message_rows(data_dir: Path, sender: str, message_id: str) -> list[tuple]:
    """Rows for (sender, id) read through a connection of our own."""
    with contextlib.closing(
        sqlite3.connect(data_dir / DATABASE_FILE, timeout=10)
    ) as conn:
        return conn.execute(
            "SELECT sender, message_id, recipient, frame FROM messages "
            "WHERE sender = ? AND message_id = ?",
            (protocol.name_key(sender), message_id),
        ).fetchall()


def wait_until(condition, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def online_names(client: WireClient) -> list[str]:
    reply = client.request({"action": "get_online"})
    assert reply["response"] == 202, reply
    return reply["alert"]


def assert_no_msg(client: WireClient, seconds: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        client.next_msg(timeout=seconds)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- hello


def test_hello_fields(server, wire):
    before = time.time()
    hello = wire.connect().hello

    assert hello["action"] == "hello"
    assert isinstance(hello["time"], (int, float))
    assert not isinstance(hello["time"], bool)
    assert abs(hello["time"] - before) < 5
    assert isinstance(hello["server"], str)
    assert hello["server"]

    key = crypto.load_public_key(hello["key"])
    assert hello["key"].startswith("-----BEGIN RSA PUBLIC KEY-----")  # PKCS#1
    assert key.bits >= 2048

    nonce = hello["nonce"]
    assert isinstance(nonce, str)
    int(nonce, 16)  # hexadecimal
    assert len(nonce) * 4 >= 128


def test_each_connection_gets_its_own_nonce(server, wire):
    nonces = {wire.connect().nonce for _ in range(5)}
    assert len(nonces) == 5


def login_count(data_dir: Path, name: str) -> int:
    with contextlib.closing(
        sqlite3.connect(data_dir / DATABASE_FILE, timeout=10)
    ) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM logins WHERE user = ?", (name,)
        ).fetchone()
        return int(row[0])


def test_server_key_kept_across_restart_and_pinned_by_clients(
    tmp_path, server_pair, make_client
):
    data_dir = tmp_path / "own-key"
    config = ServerConfig(
        host="127.0.0.1", port=0, data_dir=data_dir, open_registration=True
    )
    first = HostedServer(config)  # no key given: the server makes its own
    port = first.start()
    try:
        with WireClient(port) as client:
            made = client.hello["key"]
        make_client(type("Address", (), {"port": port})(), "alice").stop()
    finally:
        time.sleep(SETTLE_SECONDS)
        first.stop()
    assert crypto.load_public_key(made).bits >= 2048
    assert made != server_pair.public.pem

    config.port = port
    second = HostedServer(config)
    second.start()
    try:
        with WireClient(port) as client:
            assert client.hello["key"] == made
        make_client(
            type("Address", (), {"port": port})(), "alice", register=False
        ).stop()
        assert login_count(data_dir, "alice") == 2  # the pinned key still matches
    finally:
        time.sleep(SETTLE_SECONDS)
        second.stop()

    impostor = RunningServer(data_dir, server_pair, open_registration=True)
    impostor.start(port)  # same address, same accounts, another key
    try:
        client = make_client(impostor, "alice", register=False, login=False)
        outcome = wait_for_event(
            client.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
        )
        assert isinstance(outcome, ev.LoginFailed), outcome
        assert "different identity key" in outcome.reason
        client.stop()
        # Had the password been sent, it would have opened the account here.
        assert login_count(data_dir, "alice") == 2
    finally:
        time.sleep(SETTLE_SECONDS)
        impostor.stop()


def test_client_refuses_a_password_too_long_for_one_block(server, make_client):
    client = make_client(server, "alice", password="p" * 250, login=False)
    outcome = wait_for_event(
        client.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
    )
    assert isinstance(outcome, ev.LoginFailed), outcome
    assert "too long" in outcome.reason


# --------------------------------------------------------------------------- transport


def test_frame_split_into_single_bytes(server, wire):
    client = wire.connect()
    for byte in encode({"action": "probe", "id": "one-byte-at-a-time"}):
        client.send_raw(bytes([byte]))
        time.sleep(0.002)
    reply = client.recv()
    assert reply == {"response": 200, "id": "one-byte-at-a-time"}


def test_several_frames_in_one_write(server, wire):
    client = wire.connect()
    frames = [{"action": "probe", "id": f"merged-{n}"} for n in range(3)]
    client.send_raw(
        b"".join(encode(f) for f in frames)
        + encode({"action": "probe", "id": "tail"})[:5]
    )
    replies = [client.recv() for _ in range(3)]
    assert [r["id"] for r in replies] == ["merged-0", "merged-1", "merged-2"]
    assert all(r["response"] == 200 for r in replies)

    client.send_raw(encode({"action": "probe", "id": "tail"})[5:])
    assert client.recv()["id"] == "tail"


def padded_probe(total_bytes: int, newline: bool = True) -> bytes:
    """A probe frame of exactly `total_bytes` (counting the newline when there is one)."""
    empty = encode({"action": "probe", "id": "big", "pad": ""})
    pad = "x" * (total_bytes - len(empty))
    frame = encode({"action": "probe", "id": "big", "pad": pad})
    assert len(frame) == total_bytes
    return frame if newline else frame[:-1] + b"x"


def test_frame_of_exactly_the_limit_is_accepted(server, wire):
    client = wire.connect()
    client.send_raw(padded_probe(65_536))
    assert client.recv() == {"response": 200, "id": "big"}
    assert client.is_open()


@pytest.mark.parametrize(
    "data",
    [padded_probe(65_537), padded_probe(65_536, newline=False)],
    ids=["65537-bytes-with-newline", "65536-bytes-no-newline"],
)
def test_oversized_frame_gets_400_then_close(server, wire, data):
    client = wire.connect()
    client.send_raw(data)
    frames = client.wait_closed(timeout=10)
    assert [f.get("response") for f in frames] == [400], frames
    assert isinstance(frames[0]["error"], str)


@pytest.mark.parametrize(
    "line",
    [
        b'{"action": "probe", "x": "\xff\xfe"}',
        b'{"action": "probe",',
        b"NaN",
        b'{"action": "probe", "time": NaN}',
        b'{"action": "probe", "time": Infinity}',
        b'[{"action": "probe"}]',
        b"42",
        b'"probe"',
        b"null",
        b"",
        b"   ",
    ],
    ids=[
        "bad-utf8",
        "bad-json",
        "nan",
        "nan-inside",
        "infinity-inside",
        "array",
        "number",
        "string",
        "null",
        "blank-line",
        "spaces-only",
    ],
)
@pytest.mark.parametrize(
    "logged_in", [False, True], ids=["before-login", "after-login"]
)
def test_non_object_frame_gets_400_and_connection_stays(server, wire, line, logged_in):
    client = wire.user("alice", PASSWORD) if logged_in else wire.connect()
    client.send_raw(line + b"\n")
    reply = client.recv()
    assert reply["response"] == 400, reply
    assert isinstance(reply["error"], str)
    assert client.request({"action": "probe", "id": "still-here"})["response"] == 200


# --------------------------------------------------------------------------- order


def test_answers_come_in_request_order_with_ids(server, wire):
    wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    requests, expected = [], []
    for n in range(50):
        kind = n % 10
        tag = f"req-{n:02d}-{'x' * 10}"
        if kind == 0:
            requests.append({"action": "probe", "id": tag})
            expected.append(200)
        elif kind == 1:
            requests.append(alice.msg_frame("bob", f"payload {n}", id=tag))
            expected.append(200)
        elif kind == 2:
            requests.append({"action": "get_users", "id": tag})
            expected.append(202)
        elif kind == 3:
            requests.append({"action": "ack", "id": tag})
            expected.append(200)
        elif kind == 4:
            requests.append({"action": "get_online", "id": tag})
            expected.append(202)
        elif kind == 5:
            requests.append(
                {"action": "get_contacts", "user_login": "alice", "id": tag}
            )
            expected.append(202)
        elif kind == 6:
            requests.append({"action": "pubkey_need", "user_login": "bob", "id": tag})
            expected.append(404)
        elif kind == 7:
            requests.append({"action": "no_such_action", "id": tag})
            expected.append(400)
        elif kind == 8:
            requests.append(alice.msg_frame("nobody", "lost", id=tag))
            expected.append(404)
        else:
            requests.append({"action": "add_contact", "user_id": "bob", "id": tag})
            expected.append(200)

    for request in requests:  # fifty writes, nothing read in between
        alice.send(request)
    replies = [alice.recv(timeout=20) for _ in requests]

    assert [r.get("id") for r in replies] == [r["id"] for r in requests]
    assert [r["response"] for r in replies] == expected


def test_answers_in_order_before_login(server, wire):
    client = wire.connect()
    sealed = client.seal(PASSWORD)
    user = {"account_name": "carol", "password": sealed}
    requests = [
        {"action": "probe", "id": "a1"},
        {"action": "get_users", "id": "a2"},
        {"action": "register", "time": time.time(), "user": user, "id": "a3"},
        {"action": "nonsense", "id": "a4"},
        {"action": "authenticate", "time": time.time(), "user": user, "id": "a5"},
        {"action": "get_users", "id": "a6"},
    ]
    client.send_raw(b"".join(encode(r) for r in requests))
    replies = [client.recv() for _ in requests]
    assert [(r["id"], r["response"]) for r in replies] == [
        ("a1", 200),
        ("a2", 401),
        ("a3", 201),
        ("a4", 401),
        ("a5", 200),
        ("a6", 202),
    ]


# --------------------------------------------------------------------------- before login


def test_unknown_action_401_before_login_400_after(server, wire):
    client = wire.connect()
    assert client.request({"action": "dance"})["response"] == 401
    assert client.request({"no_action": True})["response"] == 401

    client.register("alice", PASSWORD)
    client.login("alice", PASSWORD)
    assert client.request({"action": "dance"})["response"] == 400
    assert client.request({"no_action": True})["response"] == 400


@pytest.mark.parametrize(
    "request_",
    [
        {
            "action": "presence",
            "type": "status",
            "user": {"account_name": "alice", "status": ""},
        },
        {"action": "get_contacts", "user_login": "alice"},
        {"action": "add_contact", "user_id": "alice"},
        {"action": "del_contact", "user_id": "alice"},
        {"action": "get_users"},
        {"action": "get_online"},
        {"action": "pubkey_need", "user_login": "alice"},
        {
            "action": "msg",
            "id": "a" * 20,
            "time": 1.0,
            "from": "alice",
            "to": "alice",
            "encoding": "x",
            "message": "x",
        },
        {"action": "ack", "id": "a" * 20},
    ],
    ids=lambda r: r["action"],
)
def test_actions_before_login_get_401(server, wire, request_):
    client = wire.connect()
    client.register("alice", PASSWORD)
    reply = client.request({**request_, "time": time.time()})
    assert reply["response"] == 401, reply


def test_probe_before_and_after_login(server, wire):
    client = wire.connect()
    assert client.request({"action": "probe"})["response"] == 200
    client.register("alice", PASSWORD)
    client.login("alice", PASSWORD)
    assert client.request({"action": "probe", "time": time.time()})["response"] == 200


@pytest.mark.parametrize("action", ["exit", "quit"])
@pytest.mark.parametrize(
    "logged_in", [False, True], ids=["before-login", "after-login"]
)
def test_exit_answers_200_then_closes(server, wire, action, logged_in):
    client = wire.user("alice", PASSWORD) if logged_in else wire.connect()
    client.send({"action": action, "id": "bye-bye"})
    frames = client.wait_closed(timeout=5)
    assert [(f["response"], f.get("id")) for f in frames] == [(200, "bye-bye")]


# --------------------------------------------------------------------------- register


def test_register_creates_once_and_does_not_log_in(server, wire):
    client = wire.connect()
    assert client.register("alice", PASSWORD)["response"] == 201
    assert client.request({"action": "get_users"})["response"] == 401
    assert client.register("alice", OTHER_PASSWORD)["response"] == 409
    assert wire.connect().register("alice", PASSWORD)["response"] == 409


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Alice", "alice"),
        ("alice", "ALICE"),
        ("ace", "асе"),  # Latin, then Cyrillic letters that look the same
        ("асе", "ace"),
        ("é", "e\u0301"),  # the same name before and after NFC
        ("Straße", "STRASSE"),  # casefold, not lower()
    ],
)
def test_register_conflict_ignores_case_and_lookalikes(server, wire, first, second):
    client = wire.connect()
    assert client.register(first, PASSWORD)["response"] == 201
    assert client.register(second, PASSWORD)["response"] == 409


def test_register_mixed_script_name_400(server, wire):
    reply = wire.connect().register("аlice", PASSWORD)  # Cyrillic а, then Latin
    assert reply["response"] == 400


def test_register_forbidden_when_server_closed(make_server, wire):
    closed = make_server("closed", open_registration=False)
    reply = wire.connect(port=closed.port).register("alice", PASSWORD)
    assert reply["response"] == 403


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 33,
        "-abc",
        "_abc",
        ".abc",
        "a b",
        "a@b",
        "a/b",
        "\u0301abc",
        "abc!",
        42,
        None,
    ],
    ids=repr,
)
def test_register_invalid_name_400(server, wire, name):
    client = wire.connect()
    user = {"account_name": name, "password": client.seal(PASSWORD)}
    reply = client.request({"action": "register", "time": time.time(), "user": user})
    assert reply["response"] == 400, reply


@pytest.mark.parametrize(
    "name",
    ["a" * 32, "e\u0301" * 32, "7up", "Дмитрий", "名前", "a-b_c.d", "ab\u0301c"],
    ids=repr,
)
def test_register_valid_names_201(server, wire, name):
    assert wire.connect().register(name, PASSWORD)["response"] == 201


@pytest.mark.parametrize(
    "kind", ["not-base64", "random-bytes", "other-nonce", "no-nonce"]
)
def test_register_unopenable_seal_400(server, wire, kind):
    client = wire.connect()
    if kind == "not-base64":
        sealed = "this is not base64!"
    elif kind == "random-bytes":
        sealed = "QUJDREVGR0g=" * 20
    elif kind == "other-nonce":
        sealed = crypto.seal_password(PASSWORD, "00" * 16, client.server_key)
    else:
        sealed = crypto.seal_password(PASSWORD, "", client.server_key)
    user = {"account_name": "alice", "password": sealed}
    reply = client.request({"action": "register", "time": time.time(), "user": user})
    assert reply["response"] == 400, reply

    assert (
        client.register("alice", PASSWORD)["response"] == 201
    )  # the name is still free


# --------------------------------------------------------------------------- authenticate


def test_login_answers_200_with_registered_spelling(server, wire):
    wire.connect().register("Alice", PASSWORD)
    client = wire.connect()
    reply = client.login("aLICE", PASSWORD)
    assert reply["response"] == 200
    assert reply["alert"] == "Alice"


def test_login_failures_share_one_answer(server, wire):
    wire.connect().register("alice", PASSWORD)
    client = wire.connect()

    wrong = client.login("alice", OTHER_PASSWORD)
    unknown = client.login("nobody", PASSWORD)
    user = {"account_name": "alice", "password": "Z2FyYmFnZQ=="}
    garbage = client.request(
        {"action": "authenticate", "time": time.time(), "user": user}
    )
    user = {"account_name": "alice", "password": "%%% not base64 %%%"}
    junk = client.request({"action": "authenticate", "time": time.time(), "user": user})

    answers = [wrong, unknown, garbage, junk]
    assert [a["response"] for a in answers] == [402] * 4
    assert len({a["error"] for a in answers}) == 1, answers
    assert client.request({"action": "get_users"})["response"] == 401

    # The nonce holds for every attempt on the connection: the right password works.
    assert client.login("alice", PASSWORD)["response"] == 200


def test_login_failures_take_about_the_same_time(server, wire):
    """The contract asks for the same timing; allow a generous factor for noise."""
    wire.connect().register("alice", PASSWORD)
    client = wire.connect()
    durations: dict[str, list[float]] = {"wrong": [], "unknown": [], "garbage": []}
    for attempt in range(4):
        for kind in durations:
            if kind == "wrong":
                frame = client._login_frame("authenticate", "alice", f"nope {attempt}")
            elif kind == "unknown":
                frame = client._login_frame("authenticate", f"ghost{attempt}", PASSWORD)
            else:
                user = {"account_name": f"alice{attempt}", "password": "R2FyYmFnZQ=="}
                frame = {"action": "authenticate", "time": time.time(), "user": user}
            started = time.perf_counter()
            assert client.request(frame)["response"] == 402
            durations[kind].append(time.perf_counter() - started)
    medians = {kind: statistics.median(values) for kind, values in durations.items()}
    assert max(medians.values()) < 3 * min(medians.values()), medians


def test_captured_login_cannot_be_replayed(server, wire):
    wire.connect().register("alice", PASSWORD)
    victim = wire.connect()
    assert victim.login("alice", PASSWORD)["response"] == 200
    captured = victim.last_sealed

    attacker = wire.connect()
    assert attacker.nonce != victim.nonce
    user = {"account_name": "alice", "password": captured}
    reply = attacker.request(
        {"action": "authenticate", "time": time.time(), "user": user}
    )
    assert reply["response"] == 402
    assert attacker.request({"action": "get_users"})["response"] == 401


@pytest.mark.parametrize("exists", [True, False], ids=["existing-name", "unknown-name"])
def test_five_failures_lock_the_name(server, wire, exists):
    wire.connect().register("alice", PASSWORD)
    wire.connect().register("bob", PASSWORD)
    name = "alice" if exists else "ghost"

    for attempt in range(5):
        client = wire.connect()
        spelling = name.upper() if attempt % 2 else name  # one name, however spelled
        assert client.login(spelling, OTHER_PASSWORD)["response"] == 402

    locked = wire.connect().login(name, PASSWORD)
    assert locked["response"] == 429, locked
    assert isinstance(locked["error"], str)
    assert wire.connect().login("bob", PASSWORD)["response"] == 200  # others unaffected


def test_login_elsewhere_closes_the_older_connection(server, wire):
    wire.connect().register("alice", PASSWORD)
    older = wire.user("alice", PASSWORD, register=False)
    newer = wire.user("alice", PASSWORD, register=False)

    older.wait_closed(timeout=5)
    assert newer.is_open()
    assert online_names(newer) == ["alice"]


# --------------------------------------------------------------------------- presence


def test_presence_stores_the_key_verbatim(server, wire, user_pairs):
    alice = wire.user("alice", PASSWORD)
    bob = wire.user("bob", PASSWORD)
    odd_pem = (
        user_pairs[0].public.pem.replace("\n", "\r\n") + "\r\n"
    )  # still a valid PEM

    assert alice.presence(odd_pem)["response"] == 200
    reply = bob.request({"action": "pubkey_need", "user_login": "ALICE"})
    assert reply["response"] == 511
    assert reply["alert"] == odd_pem

    assert (
        alice.presence(user_pairs[1].public.pem, account_name="Alice")["response"]
        == 200
    )
    reply = bob.request({"action": "pubkey_need", "user_login": "alice"})
    assert reply["alert"] == user_pairs[1].public.pem


@pytest.mark.parametrize("other", ["bob", "ghost"])
def test_presence_for_another_account_403(server, wire, user_pairs, other):
    alice = wire.user("alice", PASSWORD)
    wire.user("bob", PASSWORD)
    assert (
        alice.presence(user_pairs[0].public.pem, account_name=other)["response"] == 403
    )
    reply = alice.request({"action": "pubkey_need", "user_login": "bob"})
    assert reply["response"] == 404  # nothing was stored for bob


def test_pubkey_need_511_or_404(server, wire, user_pairs):
    alice = wire.user("alice", PASSWORD)
    wire.connect().register("carol", PASSWORD)  # registered, never logged in
    alice.presence(user_pairs[0].public.pem)

    reply = alice.request({"action": "pubkey_need", "user_login": "alice"})
    assert (reply["response"], reply["alert"]) == (511, user_pairs[0].public.pem)
    assert (
        alice.request({"action": "pubkey_need", "user_login": "carol"})["response"]
        == 404
    )
    assert (
        alice.request({"action": "pubkey_need", "user_login": "ghost"})["response"]
        == 404
    )


# --------------------------------------------------------------------------- contacts and lists


def test_contacts_add_list_delete(server, wire):
    for name in ("Zoe", "bob", "Émile", "ärger"):
        wire.connect().register(name, PASSWORD)
    alice = wire.user("alice", PASSWORD)

    for name in ("ZOE", "Bob", "émile", "ärger"):
        reply = alice.request(
            {"action": "add_contact", "user_id": name, "user_login": "alice"}
        )
        assert reply["response"] == 200, reply
    reply = alice.request(
        {"action": "add_contact", "user_id": "bob"}
    )  # user_login optional
    assert reply["response"] == 200

    reply = alice.request({"action": "get_contacts", "user_login": "alice"})
    assert reply["response"] == 202
    assert reply["alert"] == sorted(["Zoe", "bob", "Émile", "ärger"])
    assert reply["alert"] == ["Zoe", "bob", "Émile", "ärger"]  # code point order

    assert alice.request({"action": "del_contact", "user_id": "BOB"})["response"] == 200
    reply = alice.request({"action": "get_contacts", "user_login": "ALICE"})
    assert reply["alert"] == ["Zoe", "Émile", "ärger"]


def test_contacts_of_someone_else_403(server, wire):
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    assert (
        alice.request({"action": "get_contacts", "user_login": "bob"})["response"]
        == 403
    )
    reply = alice.request(
        {"action": "add_contact", "user_id": "alice", "user_login": "bob"}
    )
    assert reply["response"] == 403
    reply = alice.request(
        {"action": "del_contact", "user_id": "alice", "user_login": "bob"}
    )
    assert reply["response"] == 403


@pytest.mark.parametrize("action", ["add_contact", "del_contact"])
def test_contact_unknown_user_404(server, wire, action):
    alice = wire.user("alice", PASSWORD)
    assert alice.request({"action": action, "user_id": "ghost"})["response"] == 404


def test_users_and_online_sorted_by_code_point(server, wire):
    # U+FF71 sorts before U+1D538 by code point but after it in UTF-16 order.
    names = ["bob", "Zed", "émile", "Ärger", "𝔸", "ｱ", "Борис", "alice"]
    for name in names:
        assert wire.connect().register(name, PASSWORD)["response"] == 201
    by_code_point = sorted(names)
    assert by_code_point != sorted(names, key=str.casefold)
    assert by_code_point != sorted(names, key=lambda n: n.encode("utf-16-be"))

    alice = wire.user("alice", PASSWORD, register=False)
    reply = alice.request({"action": "get_users"})
    assert reply["response"] == 202
    assert reply["alert"] == by_code_point

    for name in ("𝔸", "ｱ", "Zed", "émile"):
        wire.user(name, PASSWORD, register=False)
    assert online_names(alice) == sorted(["alice", "𝔸", "ｱ", "Zed", "émile"])


def test_online_from_login_to_end_of_connection(server, wire):
    alice = wire.user("alice", PASSWORD)
    bob = wire.user("bob", PASSWORD)  # no presence sent: still online
    assert online_names(alice) == ["alice", "bob"]

    bob.close()
    assert wait_until(lambda: online_names(alice) == ["alice"], timeout=5)


# --------------------------------------------------------------------------- messages


def test_msg_answered_only_once_stored_durably(server, wire):
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    for n in range(20):
        message_id = new_id()
        reply = alice.send_msg("bob", f"opaque {n}", id=message_id)
        assert reply["response"] == 200
        assert reply["id"] == message_id
        rows = message_rows(server.data_dir, "alice", message_id)  # read at once
        assert len(rows) == 1, f"message {n} answered 200 but not in the database"


def test_msg_survives_server_process_kill(tmp_path, server_pair):
    data_dir = tmp_path / "killed"
    db = net.open_server_database(data_dir)
    db.call(
        lambda c: server_store.set_setting(
            c, SERVER_KEY_SETTING, server_pair.private_pem
        )
    )
    db.close()
    port = free_port()
    command = [
        sys.executable, "run.py", "server", "-a", "127.0.0.1", "-p", str(port),
        "--data-dir", str(data_dir), "--open-registration",
    ]  # fmt: skip

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def listening() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), 0.2),
            ):
                return True
            return False

        assert wait_until(listening, timeout=30), "the server process did not start"
        return process

    process = start()
    pool = WirePool(port)
    try:
        pool.connect().register("bob", PASSWORD)
        alice = pool.user("alice", PASSWORD)
        sent = []
        for n in range(20):
            reply = alice.send_msg("bob", f"survivor {n}")
            assert reply["response"] == 200
            sent.append(reply["id"])
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        pool.close_all()

        process = start()
        bob = pool.user("bob", PASSWORD, register=False)
        received = [bob.next_msg()["id"] for _ in sent]
        print(f"phase receive done {time.perf_counter():.1f}")
        assert received == sent
    finally:
        pool.close_all()
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=10)


def test_msg_retry_is_answered_and_stored_once(server, wire):
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    message_id = new_id()
    first = alice.send_msg("bob", "once", id=message_id)
    again = alice.send_msg("bob", "once", id=message_id)
    assert (first["response"], first["id"]) == (200, message_id)
    assert (again["response"], again["id"]) == (200, message_id)
    assert len(message_rows(server.data_dir, "alice", message_id)) == 1

    assert bob.next_msg()["id"] == message_id
    assert_no_msg(bob)


def test_msg_to_unknown_recipient_404(server, wire):
    alice = wire.user("alice", PASSWORD)
    message_id = new_id()
    reply = alice.send_msg("ghost", "hello?", id=message_id)
    assert (reply["response"], reply["id"]) == (404, message_id)
    assert message_rows(server.data_dir, "alice", message_id) == []


def test_msg_from_someone_else_403(server, wire):
    wire.connect().register("bob", PASSWORD)
    wire.connect().register("carol", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    reply = alice.send_msg("bob", "forged", **{"from": "carol"})
    assert reply["response"] == 403
    reply = alice.send_msg("bob", "forged", **{"from": "ghost"})
    assert reply["response"] == 403
    assert alice.send_msg("bob", "fine", **{"from": "ALICE"})["response"] == 200


BAD_MSG_FIELDS = {
    "no-id": {"id": None},
    "short-id": {"id": "a" * 15},
    "long-id": {"id": "a" * 65},
    "id-with-space": {"id": "abcdefgh ijklmnop"},
    "id-with-plus": {"id": "abcdefghijklmnop+"},
    "id-non-ascii": {"id": "abcdefghijklmnoä"},
    "id-number": {"id": 12345678901234567890},
    "no-time": {"time": None},
    "time-text": {"time": "abc"},
    "time-digits-as-text": {"time": "1700000000"},
    "time-bool": {"time": True},
    "time-null": {"time": "null"},
    "no-to": {"to": None},
    "to-number": {"to": 7},
    "to-invalid-name": {"to": "b o b"},
    "no-from": {"from": None},
    "from-list": {"from": ["alice"]},
    "no-encoding": {"encoding": None},
    "encoding-number": {"encoding": 1},
    "no-message": {"message": None},
    "message-number": {"message": 5},
    "message-object": {"message": {"r": "x"}},
}


@pytest.mark.parametrize("change", BAD_MSG_FIELDS.values(), ids=BAD_MSG_FIELDS.keys())
def test_msg_missing_or_mistyped_field_400(server, wire, change):
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    frame = alice.msg_frame("bob", "payload")
    for field, value in change.items():
        if value is None:
            del frame[field]
        elif value == "null":
            frame[field] = None
        else:
            frame[field] = value
    alice.send(frame)
    reply = alice.recv()
    assert reply["response"] == 400, reply
    assert alice.is_open()


def msg_of_size(client: WireClient, to: str, total_bytes: int, fill: str) -> dict:
    """A msg frame of exactly `total_bytes` on the wire, newline included."""
    frame = client.msg_frame(to, "")
    room = total_bytes - len(encode(frame))
    unit = len(fill.encode())
    frame["message"] = fill * (room // unit) + "x" * (room % unit)
    assert len(encode(frame)) == total_bytes
    return frame


@pytest.mark.parametrize("fill", ["x", "ж"], ids=["ascii", "cyrillic"])
def test_msg_frame_of_64000_bytes_is_relayed(server, wire, fill):
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    frame = msg_of_size(alice, "bob", 64_000, fill)
    assert alice.request(frame)["response"] == 200
    assert bob.next_msg()["message"] == frame["message"]


@pytest.mark.parametrize(
    ("fill", "total_bytes"),
    [("x", 64_002), ("ж", 64_002), ("ж", 65_400), ("ж", 65_530)],
    ids=["ascii-64002", "cyrillic-64002", "cyrillic-65400", "cyrillic-65530"],
)
def test_msg_frame_over_64000_bytes_refused(server, wire, fill, total_bytes):
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    frame = msg_of_size(alice, "bob", total_bytes, fill)
    reply = alice.request(frame)
    try:
        delivered = bob.next_msg(timeout=1)["id"] == frame["id"]
    except TimeoutError:
        delivered = False
    assert reply["response"] == 400, (
        f"a msg frame of {total_bytes} bytes got {reply['response']} instead of 400 "
        f"(and the recipient {'did' if delivered else 'did not'} receive it)"
    )
    assert message_rows(server.data_dir, "alice", frame["id"]) == []


def test_recipient_gets_the_frame_plus_server_time(server, wire, user_pairs):
    alice_pair, bob_pair = user_pairs
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    message_id = new_id()
    envelope = make_envelope(
        "tea at five?", "alice", "bob", message_id, alice_pair, bob_pair
    )
    frame = alice.msg_frame(
        "BOB", envelope, id=message_id, encoding=crypto.ENVELOPE_ENCODING
    )

    before = time.time()
    reply = alice.request(frame)
    assert reply["response"] == 200
    pushed = bob.next_msg()

    server_time = pushed.pop("server_time")
    assert isinstance(server_time, (int, float))
    assert before - 1 <= server_time <= time.time() + 1
    assert {k: v for k, v in pushed.items() if k != "to"} == {
        k: v for k, v in frame.items() if k != "to"
    }
    assert protocol.name_key(pushed["to"]) == "bob"
    assert open_envelope(pushed, alice_pair, bob_pair) == "tea at five?"


@pytest.mark.parametrize(
    "payload",
    ["", "two\nlines", '{"action":"exit"}', '\u2028 😀 \\ "', "\x00\x1f", "ж" * 1000],
    ids=["empty", "newline", "json", "separators", "control", "cyrillic"],
)
def test_payload_is_relayed_verbatim(server, wire, payload):
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    assert alice.send_msg("bob", payload, encoding="anything at all")["response"] == 200
    pushed = bob.next_msg()
    assert (pushed["message"], pushed["encoding"]) == (payload, "anything at all")


def test_client_shows_a_message_once_even_if_it_arrives_twice(server, make_client):
    relay = RecordingRelay(server.port)
    via_relay = type("Address", (), {"port": relay.port})()
    try:
        alice = make_client(server, "alice")
        relay.drop_upstream = lambda line: b'"action":"ack"' in line
        bob = make_client(via_relay, "bob")
        alice.send_text("bob", "only once, please")
        wait_for_event(
            bob.events,
            lambda e: (
                isinstance(e, ev.MessageAdded) and e.record.text == "only once, please"
            ),
        )
        bob.stop()
        assert relay.dropped, "the relay never saw an ack to drop"

        relay.drop_upstream = None
        again = make_client(via_relay, "bob", register=False)
        with contextlib.closing(
            sqlite3.connect(server.data_dir / DATABASE_FILE)
        ) as conn:
            # The server holds the message until the second session acknowledges it.
            def acknowledged() -> bool:
                row = conn.execute("SELECT acked_time FROM messages").fetchone()
                return row[0] is not None

            assert wait_until(acknowledged, timeout=10), (
                "the message was not sent again"
            )
        time.sleep(0.5)
        shown = []
        while not again.events.empty():
            event = again.events.get()
            if isinstance(event, ev.MessageAdded):
                shown.append(event.record.text)
        assert shown == []
        assert [r.text for r in again.history("alice")] == ["only once, please"]
        again.stop()
        alice.stop()
    finally:
        time.sleep(SETTLE_SECONDS)
        relay.stop()


def test_ack_answered_200_also_for_unknown_id(server, wire):
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    message_id = alice.send_msg("bob", "ack me")["id"]
    assert bob.next_msg()["id"] == message_id

    assert bob.ack(message_id) == {"response": 200, "id": message_id}
    assert bob.ack(message_id)["response"] == 200  # no longer held
    assert bob.ack(new_id())["response"] == 200  # never existed
    assert alice.ack(message_id)["response"] == 200  # not even hers


def test_unacked_messages_resent_in_order_at_next_login(server, wire):
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    sent = [alice.send_msg("bob", f"queued {n}")["id"] for n in range(6)]

    bob = wire.user("bob", PASSWORD, register=False)
    assert [bob.next_msg()["id"] for _ in sent] == sent
    bob.close()  # nothing acknowledged

    bob = wire.user("bob", PASSWORD, register=False)
    assert [bob.next_msg()["id"] for _ in sent] == sent
    for message_id in sent[:2]:
        assert bob.ack(message_id)["response"] == 200
    live = alice.send_msg("bob", "while online")["id"]
    assert bob.next_msg()["id"] == live
    bob.close()

    bob = wire.user("bob", PASSWORD, register=False)
    assert [bob.next_msg()["id"] for _ in range(5)] == sent[2:] + [live]
    assert_no_msg(bob)


def test_delivered_notice_reaches_the_sender(server, wire):
    """Observed: {"action": "delivered", "id", "to": recipient, "time": ack time},
    pushed at once when the sender is online, else after the queue at next login,
    and only once."""
    bob = wire.user("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)

    first = alice.send_msg("bob", "one")["id"]
    bob.ack(bob.next_msg()["id"])
    notice = alice.recv_until(lambda f: f.get("action") == "delivered")
    assert (notice["id"], notice["to"]) == (first, "bob")
    assert isinstance(notice["time"], (int, float))

    second = alice.send_msg("bob", "two")["id"]
    alice.close()
    bob.ack(bob.next_msg()["id"])
    alice = wire.user("alice", PASSWORD, register=False)
    notice = alice.recv_until(lambda f: f.get("action") == "delivered")
    assert (notice["id"], notice["to"]) == (second, "bob")
    alice.close()

    alice = wire.user("alice", PASSWORD, register=False)
    with pytest.raises(TimeoutError):
        alice.recv_until(lambda f: f.get("action") == "delivered", timeout=0.5)


def test_contact_status_pushed_to_watchers(server, wire):
    wire.connect().register("Bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    carol = wire.user("carol", PASSWORD)  # does not watch Bob
    alice.request({"action": "add_contact", "user_id": "bob"})

    bob = wire.user("BOB", PASSWORD, register=False)
    status = alice.recv_until(lambda f: f.get("action") == "contact_status")
    assert (status["user"], status["online"]) == ("Bob", True)

    bob.request({"action": "exit"})
    status = alice.recv_until(lambda f: f.get("action") == "contact_status")
    assert (status["user"], status["online"]) == ("Bob", False)
    with pytest.raises(TimeoutError):
        carol.recv_until(lambda f: f.get("action") == "contact_status", timeout=0.5)


# --------------------------------------------------------------------------- cases


def test_case_09_client_clocks(server, wire):
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    now = time.time()
    sent = []
    for claimed in (now + 5 * 3600, 0, -1, 1e20, now - 86_400):
        reply = alice.send_msg("bob", f"sent at {claimed}", time=claimed)
        assert reply["response"] == 200, reply
        sent.append((reply["id"], claimed))
    assert alice.send_msg("bob", "bad clock", time="abc")["response"] == 400

    bob = wire.user("bob", PASSWORD, register=False)
    received = [bob.next_msg() for _ in sent]
    assert [(f["id"], f["time"]) for f in received] == sent
    stamps = [f["server_time"] for f in received]
    assert all(abs(stamp - time.time()) < 10 for stamp in stamps), stamps
    assert stamps == sorted(stamps)
    assert_no_msg(bob)


def test_case_01_multibyte_split_over_socket(server, wire):
    olga = wire.user("Ольга", PASSWORD)
    dima = wire.user("Дмитрий", PASSWORD)
    text = "привет 👋"
    frame = encode(dima.msg_frame("ольга", text, id="case-01-split-frame"))
    cut = frame.index(text.encode()) + len("п".encode()) + 1
    assert frame[cut - 1] == 0xD1

    dima.send_raw(frame[:cut])
    time.sleep(0.1)
    dima.send_raw(frame[cut:])
    assert (
        dima.recv_until(lambda f: f.get("id") == "case-01-split-frame")["response"]
        == 200
    )

    pushed = olga.next_msg()
    assert pushed["message"] == text
    assert pushed["from"] == "Дмитрий"
    assert dima.is_open()
    assert olga.is_open()


def exchange_latencies(
    alice: WireClient, bob: WireClient, count: int
) -> tuple[list, list]:
    """(answer, delivery) latencies in seconds of `count` messages sent both ways."""
    answered, delivered = [], []
    for n in range(count):
        sender, recipient = (alice, bob) if n % 2 == 0 else (bob, alice)
        peer = "bob" if sender is alice else "alice"
        started = time.perf_counter()
        reply = sender.send_msg(peer, f"ping {n}")
        answered.append(time.perf_counter() - started)
        assert reply["response"] == 200
        pushed = recipient.next_msg()
        delivered.append(time.perf_counter() - started)
        assert pushed["id"] == reply["id"]
        recipient.ack(pushed["id"])
    return answered, delivered


def summary(name: str, values: list) -> str:
    return f"{name}: median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def check_half_frame_peer(server, wire, monkeypatch):
    monkeypatch.setattr(net, "PARTIAL_FRAME_SECONDS", 1.5)
    slow = wire.user("slowpoke", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    bob = wire.user("bob", PASSWORD)

    slow.send_raw(b'{"action":"presence"')
    stalled_at = time.monotonic()
    answered, delivered = exchange_latencies(alice, bob, 200)
    exchange_seconds = time.monotonic() - stalled_at
    slow.wait_closed(timeout=10)
    closed_after = time.monotonic() - stalled_at

    print(
        f"\ncase 02 (a): 200 messages in {exchange_seconds:.2f} s beside a half frame; "
        f"{summary('answer', answered)}; {summary('delivery', delivered)}; "
        f"half-frame peer closed after {closed_after:.2f} s"
    )
    assert max(answered) < 2
    assert max(delivered) < 2
    assert 1.4 <= closed_after <= 6
    assert "slowpoke" not in online_names(alice)


def check_peer_that_never_reads(make_server, monkeypatch):
    monkeypatch.setattr(net, "MAX_PENDING_OUTPUT_BYTES", 256 * 1024)
    hosted = make_server("never-reads", limits=GENEROUS)
    pool = WirePool(hosted.port)
    try:
        lazy = pool.connect(receive_buffer_bytes=4096)
        lazy.register("lazy", PASSWORD)
        assert lazy.login("lazy", PASSWORD)["response"] == 200
        sender = pool.user("sender", PASSWORD)

        # About the size of a real envelope between 2048-bit keys.
        payload = "e" * 1_200
        sent, codes, slowest = [], [], 0.0
        for _batch in range(50):
            frames = [sender.msg_frame("lazy", payload) for _ in range(100)]
            started = time.perf_counter()
            sender.send_raw(b"".join(encode(f) for f in frames))
            for frame in frames:
                reply = sender.recv_until(
                    lambda f, i=frame["id"]: f.get("id") == i, timeout=20
                )
                codes.append(reply["response"])
            slowest = max(slowest, time.perf_counter() - started)
            sent += [f["id"] for f in frames]
        print(
            f"\ncase 02 (b): slowest batch of 100 answered in {slowest * 1000:.0f} ms"
        )
        assert codes == [200] * 5000

        cut_off = wait_until(lambda: "lazy" not in online_names(sender), timeout=10)
        assert cut_off, "the server kept a peer that does not read"
        lazy.close()

        # A real client would ack each message; acks are committed one at a time
        # (milliseconds each), so 5,000 of them would only make this test slow.
        again = pool.connect()
        assert again.login("lazy", PASSWORD)["response"] == 200
        received: list[str] = []
        try:
            while len(received) < len(sent):
                frame = again.recv(timeout=20)
                if frame.get("action") == "msg":
                    received.append(frame["id"])
        except WireClosed as exc:
            pytest.fail(
                f"the server dropped the returning reader after {len(received)} of "
                f"{len(sent)} queued messages ({exc})"
            )
        assert received == sent
    finally:
        pool.close_all()
        time.sleep(SETTLE_SECONDS)


@pytest.mark.parametrize("peer", ["half_frame", "never_reads"])
def test_case_02_slow_peer(server, wire, make_server, monkeypatch, peer):
    if peer == "half_frame":
        check_half_frame_peer(server, wire, monkeypatch)
    else:
        check_peer_that_never_reads(make_server, monkeypatch)


def test_client_leaving_while_database_busy_keeps_server_working(
    monkeypatch, server, wire
):
    """Case 05 has another process hold the write lock for 10 s. A client that
    leaves meanwhile has its unanswered request given up after the grace period;
    the server must go on answering everyone once the lock is released."""
    monkeypatch.setattr(net, "SHUTDOWN_GRACE_SECONDS", 0.5)
    wire.connect().register("bob", PASSWORD)
    alice = wire.user("alice", PASSWORD)
    assert alice.is_open()  # the login's own database work is finished

    database = server.data_dir / DATABASE_FILE
    with contextlib.closing(sqlite3.connect(database, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        alice.send(alice.msg_frame("bob", "sent just before leaving"))
        time.sleep(0.2)
        alice.close()
        time.sleep(1.5)  # longer than the grace period
        other.execute("COMMIT")

    later = wire.connect(timeout=3)
    try:
        reply = later.register("carol", PASSWORD)
    except TimeoutError:
        pytest.fail("the server stopped answering requests that need the database")
    finally:
        # Stop while the short grace period is still patched in.
        wire.close_all()
        server.stop()
    assert reply["response"] == 201


# --------------------------------------------------------------------------- deadlines and rates


def test_idle_connection_is_closed(server, wire, monkeypatch):
    monkeypatch.setattr(net, "IDLE_TIMEOUT_SECONDS", 1.0)
    client = wire.user("alice", PASSWORD)
    quiet_since = time.monotonic()
    client.wait_closed(timeout=10)
    assert 0.9 <= time.monotonic() - quiet_since <= 6


def test_probes_keep_a_connection_alive(server, wire, monkeypatch):
    monkeypatch.setattr(net, "IDLE_TIMEOUT_SECONDS", 0.6)
    client = wire.user("alice", PASSWORD)
    for _ in range(8):
        time.sleep(0.2)
        assert client.request({"action": "probe"})["response"] == 200


def test_partial_frame_must_be_completed_in_time(server, wire, monkeypatch):
    monkeypatch.setattr(net, "PARTIAL_FRAME_SECONDS", 0.5)
    client = wire.connect()
    frame = encode({"action": "probe", "id": "dribbled-out-slowly"})
    started = time.monotonic()
    for byte in frame[:10]:  # activity, but the frame never ends in time
        with contextlib.suppress(OSError):
            client.send_raw(bytes([byte]))
        time.sleep(0.1)
    client.wait_closed(timeout=5)
    assert time.monotonic() - started < 3


def test_message_flood_gets_429(make_server, wire):
    limited = make_server(
        "limited", limits=Limits(messages_per_second=1, message_burst=5)
    )
    wire.user("bob", PASSWORD, port=limited.port)
    alice = wire.user("alice", PASSWORD, port=limited.port)
    frames = [alice.msg_frame("bob", f"flood {n}") for n in range(30)]
    alice.send_raw(b"".join(encode(f) for f in frames))
    replies = [alice.recv_until(lambda f: "response" in f) for _ in frames]

    assert [r["id"] for r in replies] == [f["id"] for f in frames]
    codes = [r["response"] for r in replies]
    assert set(codes) == {200, 429}
    assert 5 <= codes.count(200) <= 8, codes
    assert alice.is_open()


def test_request_flood_gets_429(make_server, wire):
    limited = make_server(
        "busy", limits=Limits(requests_per_second=1, request_burst=10)
    )
    alice = wire.user("alice", PASSWORD, port=limited.port)
    alice.send_raw(
        b"".join(encode({"action": "get_users", "id": f"r{n}"}) for n in range(40))
    )
    codes = [alice.recv()["response"] for _ in range(40)]
    assert 429 in codes
    assert 202 in codes


def test_removed_account_can_no_longer_send(server, wire):
    """The operator removes an account while it is logged in: its next msg is refused."""
    zoe = wire.user("Zoë", "zoe-password")
    wire.user("alice", "alice-password").close()
    assert zoe.send_msg("alice", "before removal")["response"] == 200

    remove_user(server.data_dir, "zoë")
    reply = zoe.send_msg("alice", "after removal")

    assert reply["response"] == 401
    assert "removed" in reply["error"]
    zoe.wait_closed(timeout=5)
