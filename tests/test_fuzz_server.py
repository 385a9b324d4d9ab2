"""A fuzz run of the live server over loopback with random and mutated frames.

The server must never crash or answer 500: every frame gets a 4xx/2xx answer or the
connection is closed, and other connections keep being served throughout.
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

from wire import WireClient, WireClosed

from chat_tk import protocol

FUZZ_FRAMES = 4000
SEED = 20261203
ACTIONS = [
    "register",
    "authenticate",
    "presence",
    "get_contacts",
    "add_contact",
    "del_contact",
    "get_users",
    "get_online",
    "pubkey_need",
    "probe",
    "msg",
    "ack",
    "exit",
    "quit",
    "nope",
]
ALLOWED_CODES = {200, 201, 202, 400, 401, 402, 403, 404, 409, 429, 511}


def random_json(rng: random.Random, depth: int = 0) -> Any:
    choice = rng.randrange(9 if depth < 3 else 6)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 1e20, 2**70, rng.random(), 7777])
    if choice == 3:
        return "".join(
            rng.choice('aé👋\u200b\u202e\x00\\"z0-_.') for _ in range(rng.randrange(40))
        )
    if choice == 4:
        return "x" * rng.choice([16, 33, 65, 300, 5000])
    if choice == 5:
        return rng.choice(["alice", "bob", "", "Алиса", "a" * 40])
    if choice in (6, 7):
        return {
            rng.choice(
                ["account_name", "password", "status", "public_key", "x"]
            ): random_json(rng, depth + 1)
            for _ in range(rng.randrange(4))
        }
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_frame(rng: random.Random, valid_frames: list[bytes]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:  # random bytes, any encoding
        return (
            bytes(rng.randrange(256) for _ in range(rng.randrange(200))).replace(
                b"\n", b""
            )
            + b"\n"
        )
    if kind == 1:  # a valid frame with some bytes changed, dropped or repeated
        frame = bytearray(rng.choice(valid_frames)[:-1])
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(frame))
            operation = rng.randrange(3)
            if operation == 0:
                frame[at] = rng.randrange(256)
            elif operation == 1:
                del frame[at]
            else:
                frame[at:at] = frame[at : at + rng.randrange(1, 20)]
        return bytes(frame).replace(b"\n", b" ") + b"\n"
    # a JSON object with a known action and random fields
    message: dict[str, Any] = {"action": rng.choice(ACTIONS)}
    for field in rng.sample(
        [
            "time",
            "id",
            "user",
            "to",
            "from",
            "message",
            "encoding",
            "user_id",
            "user_login",
            "type",
        ],
        rng.randrange(6),
    ):
        message[field] = random_json(rng)
    return json.dumps(message).encode() + b"\n"


def test_fuzz_live_server_with_random_and_mutated_frames(server: Any) -> None:
    rng = random.Random(SEED)
    now = time.time()
    valid_frames = [
        protocol.encode(m)
        for m in [
            {"action": "get_contacts", "time": now, "user_login": "fuzzer"},
            {"action": "add_contact", "time": now, "user_id": "canary"},
            {
                "action": "msg",
                "id": "a" * 20,
                "time": now,
                "from": "fuzzer",
                "to": "canary",
                "encoding": "x",
                "message": "opaque",
            },
            {
                "action": "presence",
                "time": now,
                "type": "status",
                "user": {"account_name": "fuzzer", "status": "hi"},
            },
            {"action": "pubkey_need", "time": now, "user_login": "canary"},
            {"action": "ack", "id": "b" * 20},
        ]
    ]

    canary = WireClient(server.port)
    assert canary.register("canary", "canary-pw")["response"] == 201
    assert canary.login("canary", "canary-pw")["response"] == 200
    with WireClient(server.port) as first:
        assert first.register("fuzzer", "fuzzer-pw")["response"] == 201

    tried = closed = 0
    answers: dict[int, int] = {}
    conn: WireClient | None = None
    logged_in = False
    while tried < FUZZ_FRAMES:
        if conn is None:
            conn = WireClient(server.port)
            logged_in = rng.random() < 0.7
            if logged_in:
                assert conn.login("fuzzer", "fuzzer-pw")["response"] == 200

        frame = random_frame(rng, valid_frames)
        tried += 1
        try:
            conn.send_raw(frame)
            reply = conn.recv_until(lambda f: "response" in f)
        except (WireClosed, OSError):
            closed += 1
            conn.close()
            conn = None
            continue

        code = reply["response"]
        answers[code] = answers.get(code, 0) + 1
        assert code in ALLOWED_CODES, (frame, reply)
        if tried % 500 == 0:  # the server keeps serving everyone else
            probe = {"action": "probe", "time": time.time(), "id": f"c{tried}"}
            assert canary.request(probe) == {"response": 200, "id": f"c{tried}"}

    canary.close()
    if conn is not None:
        conn.close()
    print(
        f"\nfuzz: {tried} frames, {closed} connections closed by the server, answers {sorted(answers.items())}"
    )
    assert tried == FUZZ_FRAMES
    assert answers.get(400, 0) > FUZZ_FRAMES // 10  # the run really exercised refusals
