"""A raw-socket client for tests: speaks the wire contract by hand, frame by frame.

Pure test code. It imports chat_tk only for sealing passwords and envelopes, so the
server is checked against what PROTOCOL.md says rather than against the real client.
Every socket operation has a timeout.
"""

from __future__ import annotations

import collections
import contextlib
import json
import secrets
import socket
import threading
import time
from typing import Any

from chat_tk import crypto

DEFAULT_TIMEOUT_SECONDS = 10.0
ALERT_CODES = {100, 200, 201, 202, 511}
OPAQUE_ENCODING = "test-opaque-v1"


class WireClosed(Exception):
    """The server closed (or reset) the connection."""


def new_id() -> str:
    """A fresh message id: 24 characters of A-Z a-z 0-9 _ -."""
    return secrets.token_urlsafe(18)


def encode(message: dict[str, Any]) -> bytes:
    return (
        json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    )


def answer_shape_problem(frame: dict[str, Any]) -> str | None:
    """What is wrong with an answer's shape (PROTOCOL.md, "Answers"), or None."""
    code = frame.get("response")
    if not isinstance(code, int) or isinstance(code, bool):
        return f"response is not an integer: {frame!r}"
    if code in ALERT_CODES:
        return f"{code} carries an 'error': {frame!r}" if "error" in frame else None
    if not isinstance(frame.get("error"), str):
        return f"{code} lacks an 'error' text: {frame!r}"
    if "alert" in frame:
        return f"{code} carries an 'alert': {frame!r}"
    return None


class WireClient:
    """One connection to the server; reads the hello on connect."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        receive_buffer_bytes: int | None = None,
    ) -> None:
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer_bytes is not None:
            # Set before connecting so that the advertised window stays small.
            self.sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes
            )
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buffer = bytearray()
        self.unclaimed: collections.deque[dict[str, Any]] = collections.deque()
        self.account: str | None = None
        self.last_sealed: str | None = None

        self.hello = self.recv()
        self.server_key = crypto.load_public_key(self.hello["key"])
        self.nonce = self.hello["nonce"]

    # ----------------------------------------------------------------- bytes

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *junk: object) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, message: dict[str, Any]) -> None:
        self.send_raw(encode(message))

    def _read_some(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete frame in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262_144)
        except TimeoutError:
            raise TimeoutError("no complete frame in time") from None
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError) as exc:
            raise WireClosed(f"connection reset: {exc}") from exc
        finally:
            self.sock.settimeout(self.timeout)
        if not data:
            raise WireClosed("the server closed the connection")
        self.buffer += data

    def recv_bytes_frame(self, timeout: float | None = None) -> bytes:
        """The next frame exactly as it came, without its newline."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        newline = self.buffer.find(b"\n")
        while newline < 0:
            scanned = len(self.buffer)
            self._read_some(deadline)
            newline = self.buffer.find(b"\n", scanned)
        line = bytes(self.buffer[:newline])
        del self.buffer[: newline + 1]
        return line

    def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """The next frame (frames set aside by request() come first)."""
        if self.unclaimed:
            return self.unclaimed.popleft()
        frame = json.loads(self.recv_bytes_frame(timeout).decode("utf-8"))
        assert isinstance(frame, dict), f"server sent a non-object frame: {frame!r}"
        return frame

    def recv_until(
        self, predicate: Any, timeout: float | None = None
    ) -> dict[str, Any]:
        """The first frame, in arrival order, that matches; others wait for recv()."""
        for index, frame in enumerate(self.unclaimed):
            if predicate(frame):
                del self.unclaimed[index]
                return frame
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            line = self.recv_bytes_frame(max(0.0, deadline - time.monotonic()))
            frame = json.loads(line.decode("utf-8"))
            if predicate(frame):
                return frame
            self.unclaimed.append(frame)

    def wait_closed(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Read until the server closes the connection; return the frames read."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        frames = list(self.unclaimed)
        self.unclaimed.clear()
        while True:
            try:
                frames.append(
                    json.loads(self.recv_bytes_frame(deadline - time.monotonic()))
                )
            except WireClosed:
                return frames

    def is_open(self, timeout: float = 2.0) -> bool:
        """True when a probe is still answered on this connection."""
        try:
            return self.request({"action": "probe"}, timeout=timeout)["response"] == 200
        except (WireClosed, OSError):
            return False

    # ----------------------------------------------------------------- requests

    def request(
        self, message: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any]:
        """Send a request and return the answer carrying its id (added if missing)."""
        message = dict(message)
        message.setdefault("id", new_id())
        self.send(message)
        reply = self.recv_until(
            lambda f: "response" in f and f.get("id") == message["id"], timeout
        )
        problem = answer_shape_problem(reply)
        assert problem is None, problem
        return reply

    def seal(self, password: str) -> str:
        return crypto.seal_password(password, self.nonce, self.server_key)

    def _login_frame(self, action: str, name: str, password: str) -> dict[str, Any]:
        self.last_sealed = self.seal(password)
        user = {"account_name": name, "password": self.last_sealed}
        return {"action": action, "time": time.time(), "user": user}

    def register(self, name: str, password: str) -> dict[str, Any]:
        return self.request(self._login_frame("register", name, password))

    def login(self, name: str, password: str) -> dict[str, Any]:
        reply = self.request(self._login_frame("authenticate", name, password))
        if reply["response"] == 200:
            self.account = (
                reply.get("alert") if isinstance(reply.get("alert"), str) else name
            )
        return reply

    def presence(self, pem: str, account_name: str | None = None) -> dict[str, Any]:
        user = {
            "account_name": account_name or self.account,
            "status": "online",
            "public_key": pem,
        }
        return self.request(
            {"action": "presence", "time": time.time(), "type": "status", "user": user}
        )

    def msg_frame(
        self, to: str, payload: str, id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        frame = {
            "action": "msg",
            "id": id or new_id(),
            "time": time.time(),
            "from": self.account,
            "to": to,
            "encoding": OPAQUE_ENCODING,
            "message": payload,
        }
        frame.update(fields)
        return frame

    def send_msg(
        self, to: str, payload: str, id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Send one msg and return its answer (matched by the message id)."""
        return self.request(self.msg_frame(to, payload, id, **fields))

    def next_msg(self, timeout: float | None = None) -> dict[str, Any]:
        """The next pushed msg frame; other frames are set aside."""
        frame = self.recv_until(lambda f: f.get("action") == "msg", timeout)
        return frame

    def ack(self, message_id: str) -> dict[str, Any]:
        return self.request({"action": "ack", "id": message_id})


def make_envelope(
    text: str,
    sender: str,
    recipient: str,
    message_id: str,
    sender_pair: crypto.KeyPair,
    recipient_pair: crypto.KeyPair,
) -> str:
    """A real end-to-end envelope between two key pairs (1024-bit ones in tests)."""
    return crypto.seal_envelope(
        text,
        sender,
        recipient,
        message_id,
        time.time(),
        sender_pair,
        recipient_pair.public,
    )


def open_envelope(
    frame: dict[str, Any], sender_pair: crypto.KeyPair, recipient_pair: crypto.KeyPair
) -> str:
    """The text of a relayed msg frame, checked against the sender's key."""
    opened = crypto.open_envelope(
        frame["message"],
        frame["from"],
        frame["to"],
        frame["id"],
        sender_pair.public,
        recipient_pair,
        False,
    )
    return opened.text


class WirePool:
    """Opens WireClients for one test and closes every one of them afterwards."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.clients: list[WireClient] = []

    def connect(self, port: int | None = None, **options: Any) -> WireClient:
        client = WireClient(self.port if port is None else port, **options)
        self.clients.append(client)
        return client

    def user(
        self, name: str, password: str, register: bool = True, port: int | None = None
    ) -> WireClient:
        """A connection logged in as `name` (registered first when asked)."""
        client = self.connect(port)
        if register:
            created = client.register(name, password)
            assert created["response"] == 201, created
        reply = client.login(name, password)
        assert reply["response"] == 200, reply
        return client

    def close_all(self) -> None:
        for client in self.clients:
            client.close()


class RecordingRelay:
    """A TCP relay to the server on 127.0.0.1 that records every byte it carries.

    `drop_upstream`, when set, is called with each whole frame a client sends; a
    frame for which it returns True is not passed on (a lossy network in tests).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.recorded = bytearray()
        self.dropped: list[bytes] = []
        self.drop_upstream: Any = None
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.accepter = threading.Thread(target=self._accept, name="relay", daemon=True)
        self.accepter.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(
                ("127.0.0.1", self.target_port), timeout=10
            )
            with self.lock:
                self.sockets += [client, upstream]
            for source, target, is_upstream in (
                (client, upstream, True),
                (upstream, client, False),
            ):
                pump = threading.Thread(
                    target=self._pump, args=(source, target, is_upstream), daemon=True
                )
                self.threads.append(pump)
                pump.start()

    def _pump(
        self, source: socket.socket, target: socket.socket, is_upstream: bool
    ) -> None:
        source.settimeout(None)
        pending = b""
        try:
            while True:
                data = source.recv(65_536)
                if not data:
                    break
                with self.lock:
                    self.recorded += data
                drop = self.drop_upstream if is_upstream else None
                if drop is None:
                    target.sendall(pending + data)
                    pending = b""
                    continue
                *lines, pending = (pending + data).split(b"\n")
                kept = []
                for line in lines:
                    if drop(line):
                        self.dropped.append(line)
                    else:
                        kept.append(line + b"\n")
                target.sendall(b"".join(kept))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    def stop(self) -> bytes:
        """Close every connection and return all bytes carried, both ways."""
        self.stopping.set()
        self.accepter.join(timeout=5)
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        for thread in self.threads:
            thread.join(timeout=5)
        return bytes(self.recorded)
