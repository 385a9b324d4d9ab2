"""The server as a real process: kill -9 under load, SIGTERM, and a corrupt database.

Every message answered 200 must survive the process dying at any instant and be
delivered after a restart, in order per sender.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from wire import WireClient, WireClosed

from chat_tk import crypto
from chat_tk.server.net import SERVER_KEY_SETTING, open_server_database
from chat_tk.storage import server_store

REPO = Path(__file__).resolve().parent.parent
SENDERS = 4
MESSAGES_PER_SENDER = 380  # inside the per-session burst allowance
WINDOW = 20  # frames in flight per sender


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "run.py",
                "server",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--open-registration",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()[0]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("server did not start")

    def output(self) -> str:
        assert self.process is not None
        return self.process.communicate(timeout=30)[0]


@pytest.fixture
def server_process(
    tmp_path: Path, server_pair: crypto.KeyPair
) -> Iterator[ServerProcess]:
    data_dir = tmp_path / "server"
    seeded = open_server_database(
        data_dir
    )  # reuse the session key: keygen takes seconds
    seeded.call(
        lambda c: server_store.set_setting(
            c, SERVER_KEY_SETTING, server_pair.private_pem
        )
    )
    seeded.close()

    running = ServerProcess(data_dir, free_port())
    running.start()
    yield running
    if running.process is not None:
        if running.process.poll() is None:
            running.process.kill()
        running.process.communicate(timeout=30)


def send_until_cut(client: WireClient, prefix: str, acknowledged: list[str]) -> None:
    """Send numbered messages with a window in flight; record each id answered 200."""
    in_flight: list[str] = []
    try:
        for number in range(MESSAGES_PER_SENDER):
            message_id = f"{prefix}-{number:06d}-abcdefgh"
            client.send(client.msg_frame("inbox", f"opaque {number}", id=message_id))
            in_flight.append(message_id)
            if len(in_flight) >= WINDOW:
                reply = client.recv()
                assert reply == {
                    "response": 200,
                    "id": in_flight[0],
                    "server_time": reply["server_time"],
                }
                acknowledged.append(in_flight.pop(0))
        while in_flight:
            reply = client.recv()
            assert reply["response"] == 200
            assert reply["id"] == in_flight[0]
            acknowledged.append(in_flight.pop(0))
    except (WireClosed, OSError, TimeoutError):
        return


def test_kill_9_under_load_loses_no_acknowledged_message(
    server_process: ServerProcess,
) -> None:
    port = server_process.port
    with WireClient(port) as inbox:
        assert inbox.register("inbox", "inbox-password")["response"] == 201
    senders = []
    for index in range(SENDERS):
        client = WireClient(port)
        assert client.register(f"sender{index}", "sender-password")["response"] == 201
        assert client.login(f"sender{index}", "sender-password")["response"] == 200
        senders.append(client)

    acknowledged: list[list[str]] = [[] for _ in senders]
    threads = [
        threading.Thread(
            target=send_until_cut, args=(client, f"s{index}", acknowledged[index])
        )
        for index, client in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while sum(map(len, acknowledged)) < SENDERS * MESSAGES_PER_SENDER // 2:
        assert time.monotonic() < deadline, "traffic did not get going"
        time.sleep(0.005)
    assert server_process.process is not None
    server_process.process.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=30)
    for client in senders:
        client.close()
    server_process.output()

    answered = {message_id for ids in acknowledged for message_id in ids}
    assert (
        SENDERS * MESSAGES_PER_SENDER // 2
        <= len(answered)
        < SENDERS * MESSAGES_PER_SENDER
    )

    server_process.start()
    received: list[str] = []
    with WireClient(port) as inbox:
        assert inbox.login("inbox", "inbox-password")["response"] == 200
        while True:
            try:
                frame = inbox.next_msg(timeout=3)
            except TimeoutError:
                break
            received.append(frame["id"])

    print(
        f"\nkill -9: {len(answered)} messages answered 200 before the kill, {len(received)} delivered after restart"
    )
    assert answered <= set(received)
    assert len(received) == len(set(received))
    for index in range(SENDERS):
        from_sender = [m for m in received if m.startswith(f"s{index}-")]
        assert from_sender == sorted(from_sender)


def test_sigterm_stops_cleanly_and_keeps_what_was_answered(
    server_process: ServerProcess,
) -> None:
    port = server_process.port
    with WireClient(port) as inbox:
        assert inbox.register("inbox", "inbox-password")["response"] == 201
    sender = WireClient(port)
    assert sender.register("sender0", "sender-password")["response"] == 201
    assert sender.login("sender0", "sender-password")["response"] == 200

    acknowledged: list[str] = []
    thread = threading.Thread(target=send_until_cut, args=(sender, "s0", acknowledged))
    thread.start()
    while len(acknowledged) < 50:
        time.sleep(0.005)
    assert server_process.process is not None
    server_process.process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    sender.close()

    assert server_process.process.wait(timeout=15) == 0
    output = server_process.output()
    assert "server stopped" in output
    assert "Traceback" not in output

    server_process.start()
    with WireClient(port) as inbox:
        assert inbox.login("inbox", "inbox-password")["response"] == 200
        received = []
        while True:
            try:
                received.append(inbox.next_msg(timeout=3)["id"])
            except TimeoutError:
                break
    assert set(acknowledged) <= set(received)


def test_corrupt_server_database_gives_a_clear_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    damaged = data_dir / "server.sqlite"
    damaged.write_bytes(
        b"this is not a database, it is user data we must not overwrite" * 100
    )
    before = damaged.read_bytes()

    result = subprocess.run(
        [
            sys.executable,
            "run.py",
            "server",
            "-a",
            "127.0.0.1",
            "-p",
            str(free_port()),
            "--data-dir",
            str(data_dir),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 1
    assert str(damaged) in result.stderr
    assert "move the file away" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert damaged.read_bytes() == before
