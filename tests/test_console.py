"""The terminal client and the server's operator commands, run as real processes.

Each console is `python run.py --console` with its own CHAT_TK_HOME, talking to the
in-process server over 127.0.0.1. A first login makes a 2048-bit key (seconds), so
the two main consoles start side by side.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.wire import WirePool

REPO_ROOT = Path(__file__).resolve().parent.parent
LOGIN_SECONDS = 90.0
ANSWER_SECONDS = 15.0
FINGERPRINT = r"[0-9a-f]{4}(?: [0-9a-f]{4}){7}"


def child_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["CHAT_TK_HOME"] = str(home)
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONPATH", None)
    return env


class Console:
    """A chat_tk process fed through stdin and read line by line from stdout."""

    def __init__(self, args: list[str], home: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "run.py", *args],
            cwd=REPO_ROOT,
            env=child_env(home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.readers = [
            threading.Thread(
                target=self._read, args=(self.process.stdout, True), daemon=True
            ),
            threading.Thread(
                target=self._read, args=(self.process.stderr, False), daemon=True
            ),
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream, is_stdout: bool) -> None:
        for line in stream:
            line = line.rstrip("\n")
            if is_stdout:
                self.stdout.append(line)
                self.lines.put(line)
            else:
                self.stderr.append(line)
        if is_stdout:
            self.lines.put(None)

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def expect(self, pattern: str, timeout: float = ANSWER_SECONDS) -> re.Match:
        """Wait for a stdout line matching the regular expression `pattern`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
                if remaining <= 0:
                    break
                continue
            if line is None:
                break
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(
            f"no line matching {pattern!r}; stdout so far:\n"
            + "\n".join(self.stdout)
            + "\nstderr:\n"
            + "\n".join(self.stderr)
        )

    def ask_until(
        self, command: str, pattern: str, timeout: float = ANSWER_SECONDS
    ) -> re.Match:
        """Repeat a command until its output matches (for lists filled in by events)."""
        deadline = time.monotonic() + timeout
        while True:
            self.send(command)
            try:
                return self.expect(pattern, timeout=1.0)
            except AssertionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise

    def finish(self, timeout: float = 20.0) -> int:
        """Close stdin, wait for the exit status and for all output."""
        if not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
            for reader in self.readers:
                reader.join(timeout=5)
            self.process.stdout.close()
            self.process.stderr.close()
        return code

    def output(self) -> str:
        return "\n".join(self.stdout + self.stderr)


@pytest.fixture
def consoles():
    started: list[Console] = []

    def start(args: list[str], home: Path) -> Console:
        console = Console(args, home)
        started.append(console)
        return console

    yield start
    for console in started:
        if console.process.poll() is None:
            console.process.kill()
        console.finish()
    time.sleep(0.2)  # let the server finish with the goodbyes before it stops


def console_args(port: int, name: str, register: bool = False) -> list[str]:
    args = ["--console", "-a", "127.0.0.1", "-p", str(port), "-u", name]
    return args + ["--register"] if register else args


def run_cli(
    args: list[str], home: Path, stdin: str = ""
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=REPO_ROOT,
        env=child_env(home),
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


# --------------------------------------------------------------------------- console


def test_console_session_between_two_users(server, consoles, tmp_path):
    alice = consoles(console_args(server.port, "alice", register=True), tmp_path / "a")
    bob = consoles(console_args(server.port, "bob", register=True), tmp_path / "b")
    alice.send("alice-pw-1")
    bob.send("bob-pw-2")
    alice.expect(r"Logged in as alice\.", LOGIN_SECONDS)
    bob_number = bob.expect(
        rf"Logged in as bob\. Your safety number: ({FINGERPRINT})", LOGIN_SECONDS
    )[1]

    alice.send("add bob")
    bob.send("add alice")
    alice.ask_until("list", r"^● bob$")
    bob.ask_until("list", r"^● alice$")

    alice.send("msg bob Hello Bob, привет 👋 #1")
    bob.expect(r"\] alice: Hello Bob, привет 👋 #1$")
    bob.send("@alice Hi Alice #2")
    alice.expect(r"\] bob: Hi Alice #2$")

    alice.send("history bob")
    alice.expect(r"\] alice: Hello Bob, привет 👋 #1 ✓")
    alice.expect(r"\] bob: Hi Alice #2$")

    alice.send("online")
    alice.expect(r"^Online: alice, bob$")
    alice.send("users")
    alice.expect(r"^Users: alice, bob$")

    alice.send("key")
    alice.expect(rf"^Your safety number: {FINGERPRINT}$")
    alice.send("key bob")
    assert alice.expect(rf"^bob: ({FINGERPRINT})$")[1] == bob_number

    alice.send("help")
    alice.expect(r"^Commands:")
    alice.expect(r"msg NAME TEXT")
    alice.send("frobnicate now")
    alice.expect(r"Unknown command 'frobnicate now'; type 'help'\.")

    bob.send("exit")
    bob.expect(r"^Bye\.$")
    assert bob.finish() == 0
    alice.ask_until("list", r"^○ bob$")
    alice.send("exit")
    assert alice.finish() == 0
    assert_no_traceback(alice.output() + bob.output())


def test_console_message_to_offline_user_arrives_at_login(server, consoles, tmp_path):
    bob = consoles(console_args(server.port, "bob", register=True), tmp_path / "b")
    bob.send("bob-pw-2")
    bob.expect(r"Logged in as bob\.", LOGIN_SECONDS)
    bob.send("exit")
    assert bob.finish() == 0

    alice = consoles(console_args(server.port, "alice", register=True), tmp_path / "a")
    alice.send("alice-pw-1")
    alice.expect(r"Logged in as alice\.", LOGIN_SECONDS)
    alice.send("msg bob while you were away")
    time.sleep(1)
    alice.send("exit")
    assert alice.finish() == 0

    bob = consoles(console_args(server.port, "bob"), tmp_path / "b")
    bob.send("bob-pw-2")
    bob.expect(r"\] alice: while you were away$", LOGIN_SECONDS)
    bob.send("exit")
    assert bob.finish() == 0
    assert_no_traceback(alice.output() + bob.output())


def test_console_wrong_password(server, consoles, tmp_path, wire_pool):
    wire_pool.connect().register("alice", "alice-pw-1")
    console = consoles(console_args(server.port, "alice"), tmp_path / "a")
    console.send("not-the-password")
    console.expect(r"^Login failed: .+", LOGIN_SECONDS)
    assert console.finish() == 1
    assert_no_traceback(console.output())


def test_console_unknown_account_and_taken_name(server, consoles, tmp_path, wire_pool):
    wire_pool.connect().register("alice", "alice-pw-1")
    unknown = consoles(console_args(server.port, "nobody"), tmp_path / "n")
    unknown.send("whatever-pw")
    taken = consoles(console_args(server.port, "ALICE", register=True), tmp_path / "t")
    taken.send("whatever-pw")

    unknown.expect(r"^Login failed: .+", LOGIN_SECONDS)
    taken.expect(r"^Login failed: .*taken", LOGIN_SECONDS)
    assert unknown.finish() == 1
    assert taken.finish() == 1
    assert_no_traceback(unknown.output() + taken.output())


@pytest.fixture
def wire_pool(server):
    pool = WirePool(server.port)
    yield pool
    pool.close_all()
    time.sleep(0.3)  # let the server finish with the closed connections


# --------------------------------------------------------------------------- operator


def test_operator_commands_and_closed_registration(make_server, consoles, tmp_path):
    data_dir = tmp_path / "ops"
    home = tmp_path / "operator-home"
    server_args = ["server", "--data-dir", str(data_dir)]

    made = run_cli([*server_args, "--add-user", "Olga"], home, stdin="olga-pw-1\n")
    assert made.returncode == 0, made.stderr
    assert "created account Olga" in made.stdout
    again = run_cli([*server_args, "--add-user", "OLGA"], home, stdin="olga-pw-1\n")
    assert again.returncode == 1
    assert "taken" in again.stderr
    invalid = run_cli(
        [*server_args, "--add-user", "no spaces"], home, stdin="olga-pw-1\n"
    )
    assert invalid.returncode == 1
    assert "invalid account name" in invalid.stderr
    short = run_cli([*server_args, "--add-user", "Pavel"], home, stdin="pw\n")
    assert short.returncode == 1
    listed = run_cli([*server_args, "--list-users"], home)
    assert listed.stdout.splitlines() == ["Olga\tsent 0\treceived 0\tlast login never"]

    closed = make_server("ops", open_registration=False)
    pool = WirePool(closed.port)
    try:
        assert pool.connect().register("newcomer", "newcomer-pw")["response"] == 403
        olga = pool.user("olga", "olga-pw-1", register=False)
        assert olga.account == "Olga"

        signup = consoles(
            console_args(closed.port, "newcomer", register=True), tmp_path / "n"
        )
        signup.send("newcomer-pw")
        signup.expect(r"^Login failed: .*does not allow sign-up", LOGIN_SECONDS)
        assert signup.finish() == 1
        assert_no_traceback(signup.output())

        listed = run_cli([*server_args, "--list-users"], home)  # while the server runs
        assert re.fullmatch(
            r"Olga\tsent 0\treceived 0\tlast login \d{4}-\d\d-\d\d \d\d:\d\d\n",
            listed.stdout,
        ), listed.stdout

        removed = run_cli([*server_args, "--remove-user", "OLGA"], home)
        assert removed.returncode == 0, removed.stderr
        assert pool.connect().login("Olga", "olga-pw-1")["response"] == 402
    finally:
        pool.close_all()
        time.sleep(0.3)

    assert run_cli([*server_args, "--list-users"], home).stdout == ""
    missing = run_cli([*server_args, "--remove-user", "ghost"], home)
    assert missing.returncode == 1
    assert "no account named" in missing.stderr
    for result in (made, again, invalid, short, listed, removed, missing):
        assert_no_traceback(result.stdout + result.stderr)


def test_console_shows_control_codes_harmlessly_and_survives_bad_bytes(
    server, consoles, tmp_path
):
    """Escape sequences from others are made visible; a non-UTF-8 line is not fatal."""
    bob = consoles(console_args(server.port, "bob", register=True), tmp_path / "b")
    bob.send("bob-pw-2")
    bob.expect(r"Logged in as bob\.", LOGIN_SECONDS)
    alice = consoles(console_args(server.port, "alice", register=True), tmp_path / "a")
    alice.send("alice-pw-1")
    alice.expect(r"Logged in as alice\.", LOGIN_SECONDS)

    alice.send("msg bob \x1b]0;PWNED\x07\x1b[2Jfake line")
    alice.process.stdin.buffer.write(b"msg bob bad \xff\xfe bytes\n")
    alice.process.stdin.flush()
    alice.send("msg bob still here")

    bob.expect(r"alice: \\u001b\]0;PWNED\\u0007\\u001b\[2Jfake line$", LOGIN_SECONDS)
    bob.expect(r"alice: bad \ufffd\ufffd bytes$")
    bob.expect(r"alice: still here$")
    assert "\x1b" not in "\n".join(bob.stdout)
    for console in (alice, bob):
        console.send("exit")
        assert console.finish() == 0
    assert_no_traceback(alice.output() + bob.output())
