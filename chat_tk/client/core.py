"""The client: one socket thread that logs in, keeps the connection and feeds a queue.

No tkinter here. The GUI and the console call the public methods from their own
thread; those only put work on a command queue (or read the local database) and
return at once. Everything slow (connecting, rsa, waiting for the server) happens
on the socket thread, which reports what happened as events (client/events.py).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import queue
import random
import secrets
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chat_tk import crypto, protocol
from chat_tk.client import events as ev
from chat_tk.errors import (
    ChatError,
    CryptoError,
    DecryptionFailed,
    EnvelopeMismatch,
    LocalProtocolError,
    RemoteProtocolError,
    SignatureInvalid,
    WrongRecipientKey,
)
from chat_tk.logs import log as log_call
from chat_tk.protocol import name_key
from chat_tk.ratelimit import TokenBucket
from chat_tk.storage import client_store as cs
from chat_tk.storage.client_store import ClientStore, KnownServers, MessageRecord
from chat_tk.verifiers import ClientVerifier

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
ANSWER_TIMEOUT_SECONDS = 20.0
# A listener that never greets us is not a chat_tk server; say so soon.
HELLO_TIMEOUT_SECONDS = 8.0
SEND_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05
PROBE_EVERY_SECONDS = 20.0
# No frame at all for this long (probes are answered) means the link is dead.
DEAD_AFTER_SECONDS = 60.0
RECONNECT_FIRST_SECONDS = 1.0
RECONNECT_MAX_SECONDS = 60.0
OUTBOX_RETRY_SECONDS = 5.0
# How often messages waiting for a recipient's first key are tried again.
KEY_WAIT_RETRY_SECONDS = 15.0
# (rate per second, burst): half of what the server allows, so we never meet a 429.
CLIENT_REQUEST_PACE = (50.0, 200.0)
CLIENT_MESSAGE_PACE = (25.0, 200.0)
TOO_MANY_RETRIES = 5
NOTICE_ENCODING = "chat_tk-notice-v1"
KNOWN_SERVERS_FILE = "known_servers.sqlite"
NO_SUCH_USER = "no such user"


class _ConnectionDropped(Exception):
    """The link failed; the socket thread reconnects (or reports, before first login)."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


class _LoginRefused(Exception):
    """The server (or our pinning) refused this login: retrying would not help."""


def profile_path(data_dir: Path, host: str, port: int, account: str) -> Path:
    """Where one account's database lives: one file per account and server."""
    server = f"{host}_{port}".replace(":", "_").replace("/", "_").replace("\\", "_")
    return data_dir / "profiles" / server / f"{name_key(account)}.sqlite"


def reconnect_delay(attempt: int) -> float:
    """Exponential backoff with full jitter, capped (attempt counts from 0)."""
    ceiling = min(RECONNECT_MAX_SECONDS, RECONNECT_FIRST_SECONDS * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def new_message_id() -> str:
    return secrets.token_urlsafe(18)


class ChatClient(metaclass=ClientVerifier):
    """One account on one server, connected by a background socket thread."""

    def __init__(
        self,
        data_dir: Path,
        host: str,
        port: int,
        account: str,
        password: str,
        *,
        register: bool = False,
        key_bits: int = crypto.DEFAULT_KEY_BITS,
        events: queue.Queue[ev.Event] | None = None,
    ) -> None:
        try:
            self.account = protocol.normalize_account_name(account.strip())
        except RemoteProtocolError as exc:
            raise ChatError(f"Invalid account name: {exc}") from exc
        self.data_dir = data_dir
        self.host = host
        self.port = port
        self.key_bits = key_bits
        self.events: queue.Queue[ev.Event] = (
            events if events is not None else queue.Queue()
        )
        self.store = ClientStore(profile_path(data_dir, host, port, self.account))
        self.known_servers = KnownServers(data_dir / KNOWN_SERVERS_FILE)

        self._password = password
        self._register_first = register
        self._commands: queue.Queue[Callable[[], None]] = queue.Queue()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

        # Socket-thread state.
        self._sock: socket.socket | None = None
        self._decoder = protocol.FrameDecoder()
        self._request_pace = TokenBucket(*CLIENT_REQUEST_PACE)
        self._message_pace = TokenBucket(*CLIENT_MESSAGE_PACE)
        self._backlog: collections.deque[dict[str, Any]] = collections.deque()
        self._awaiting: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._in_flight: set[str] = set()
        self._pair: crypto.KeyPair | None = None
        self._ever_logged_in = False
        self._online: set[str] = set()
        self._last_received = 0.0
        self._last_sent = 0.0
        self._outbox_due = 0.0

    # ================================================================ public API
    # Called from the GUI or console thread: quick, never blocking on the network.

    @property
    def me(self) -> str:
        return self.account

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="chat-socket", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say goodbye to the server and end the socket thread."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @log_call
    def send_text(self, to: str, text: str) -> MessageRecord:
        """Put a message in the outbox (shown as pending) and have it sent.

        Raises crypto.TextTooLong before anything is stored, so the user can be
        told "too long: N of M" and keep the draft.
        """
        crypto.check_text_length(text)
        peer = protocol.normalize_account_name(to)
        record = self.store.add_outgoing(new_message_id(), name_key(peer), peer, text)
        self._commands.put(self._flush_outbox)
        return record

    @log_call
    def add_contact(self, name: str) -> None:
        self._commands.put(lambda: self._change_contact(name, adding=True))

    @log_call
    def remove_contact(self, name: str) -> None:
        self._commands.put(lambda: self._change_contact(name, adding=False))

    @log_call
    def request_users(self) -> None:
        self._commands.put(self._list_users)

    @log_call
    def request_online(self) -> None:
        self._commands.put(self._list_online)

    @log_call
    def accept_new_key(self, peer: str) -> None:
        """The user compared safety numbers and trusts the peer's new key."""
        self._commands.put(lambda: self._accept_key(peer))

    def mark_read(self, peer: str) -> None:
        self._commands.put(lambda: self._mark_read(peer))

    def outbox_size(self) -> int:
        """Messages written but not yet stored by the server."""
        return len(self.store.outbox())

    def history(self, peer: str, limit: int = 1000) -> list[MessageRecord]:
        """Messages with a peer from the local database, oldest first (any thread)."""
        return self.store.history(name_key(peer), limit)

    def contacts(self) -> list[str]:
        return self.store.contacts()

    def known_users(self) -> list[str]:
        return self.store.users()

    def fingerprint_of(self, peer: str) -> tuple[str | None, str | None]:
        """(pinned, offered) safety numbers of a peer's key; None where unknown."""
        pinned = self.store.peer_key(name_key(peer))
        if pinned is None:
            return None, None
        offered = pinned.offered_pem
        return (
            crypto.load_public_key(pinned.pem).fingerprint(),
            crypto.load_public_key(offered).fingerprint() if offered else None,
        )

    def own_fingerprint(self) -> str | None:
        pem = self.store.own_private_key()
        return crypto.load_key_pair(pem).public.fingerprint() if pem else None

    # ================================================================ socket thread

    def _emit(self, event: ev.Event) -> None:
        self.events.put(event)

    def _run(self) -> None:
        try:
            self._keep_connected()
        except ChatError as exc:  # a damaged database file, for example: say which
            log.info("client stopped: %s", exc)  # the interface shows the reason
            self._emit(
                ev.SessionEnded(str(exc))
                if self._ever_logged_in
                else ev.LoginFailed(str(exc))
            )
        except Exception as exc:  # the thread must report, never vanish silently
            log.exception("socket thread failed")
            self._emit(ev.SessionEnded(f"internal error: {exc}"))
        finally:
            self._disconnect(say_goodbye=True)
            self.store.close_thread_connection()

    def _keep_connected(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            try:
                self._connect_and_login()
                attempt = 0
                self._session_loop()
            except _LoginRefused as exc:
                self._disconnect(say_goodbye=False)
                if self._ever_logged_in:
                    self._emit(ev.SessionEnded(str(exc)))
                else:
                    self._emit(ev.LoginFailed(str(exc)))
                return
            except _ConnectionDropped as exc:
                self._disconnect(say_goodbye=False)
                if self._stopping.is_set():
                    return
                if not self._ever_logged_in:
                    self._emit(ev.LoginFailed(str(exc), unreachable=exc.unreachable))
                    return
                delay = reconnect_delay(attempt)
                attempt += 1
                log.info("connection lost (%s); reconnecting in %.1f s", exc, delay)
                self._emit(ev.ConnectionLost(str(exc), delay))
                self._emit(
                    ev.StatusChanged(
                        f"Offline: {exc}. Reconnecting in {delay:.0f} s…", False
                    )
                )
                self._wait_offline(delay)

    def _wait_offline(self, seconds: float) -> None:
        """Sleep before reconnecting while still serving the user's commands."""
        deadline = time.monotonic() + seconds
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self._run_commands()
            self._stopping.wait(0.1)

    # ---------------------------------------------------------------- connecting

    def _connect_and_login(self) -> None:
        address = f"{self.host}:{self.port}"
        self._emit(ev.StatusChanged(f"Connecting to {address}…", False))
        try:
            sock = socket.create_connection(
                (self.host, self.port), timeout=CONNECT_TIMEOUT_SECONDS
            )
        except TimeoutError as exc:
            raise _ConnectionDropped(
                f"no answer from {address} within {CONNECT_TIMEOUT_SECONDS:.0f} s", True
            ) from exc
        except OSError as exc:
            raise _ConnectionDropped(
                f"cannot reach {address}: {exc.strerror or exc}", True
            ) from exc

        sock.settimeout(SEND_TIMEOUT_SECONDS)
        self._sock = sock
        self._decoder = protocol.FrameDecoder()
        self._request_pace = TokenBucket(*CLIENT_REQUEST_PACE)
        self._message_pace = TokenBucket(*CLIENT_MESSAGE_PACE)
        self._backlog.clear()
        self._awaiting.clear()
        self._in_flight.clear()
        self._last_received = self._last_sent = time.monotonic()

        hello = self._next_frame(HELLO_TIMEOUT_SECONDS)
        if hello.get("action") != "hello":
            raise _LoginRefused(f"{address} is not a chat_tk server")
        server_key = self._check_server_key(hello)

        if self._register_first:
            self._register(server_key, str(hello.get("nonce", "")))
        self._authenticate(server_key, str(hello.get("nonce", "")))
        self._ensure_key_pair()
        self._publish_presence()
        self._refresh_after_login()

    def _check_server_key(self, hello: dict[str, Any]) -> crypto.PublicKey:
        """Pin the server's key on first contact; refuse a changed one."""
        address = f"{self.host}:{self.port}"
        try:
            key = crypto.load_public_key(hello.get("key"))
        except CryptoError as exc:
            raise _LoginRefused(
                f"the server at {address} sent an unusable key"
            ) from exc
        if key.bits < crypto.MIN_SERVER_KEY_BITS:
            raise _LoginRefused(
                f"the server key is only {key.bits} bits; refusing to log in"
            )

        pinned = self.known_servers.pinned(address)
        if pinned is None:
            self.known_servers.pin(address, key.pem)
            log.info("pinned the key of %s: %s", address, key.fingerprint())
        elif crypto.load_public_key(pinned).key != key.key:
            raise _LoginRefused(
                f"The server at {address} shows a different identity key than before "
                f"(now {key.fingerprint()}, was {crypto.load_public_key(pinned).fingerprint()}). "
                "Someone may be impersonating it, so chat_tk will not send your password. "
                "If its operator really reinstalled it, run: "
                f'python run.py --forget-server {address} --data-dir "{self.data_dir}"'
            )
        return key

    def _seal(self, server_key: crypto.PublicKey, nonce: str) -> str:
        try:
            return crypto.seal_password(self._password, nonce, server_key)
        except crypto.PasswordTooLong as exc:
            raise _LoginRefused(str(exc)) from exc

    def _register(self, server_key: crypto.PublicKey, nonce: str) -> None:
        self._emit(ev.StatusChanged("Creating your account…", False))
        user = {"account_name": self.account, "password": self._seal(server_key, nonce)}
        reply = self._call(protocol.client_message("register", time.time(), user=user))
        code = reply.get("response")
        if code == protocol.CREATED:
            self._register_first = False
            self._emit(ev.AccountCreated(self.account))
            return
        if code == protocol.CONFLICT:
            raise _LoginRefused(
                f"The name {self.account} is taken; choose another one."
            )
        if code == protocol.FORBIDDEN:
            raise _LoginRefused(
                "This server does not allow sign-up; ask its operator for an account."
            )
        raise _LoginRefused(f"Sign-up refused: {reply.get('error', code)}")

    def _authenticate(self, server_key: crypto.PublicKey, nonce: str) -> None:
        self._emit(ev.StatusChanged("Logging in…", False))
        user = {"account_name": self.account, "password": self._seal(server_key, nonce)}
        reply = self._call(
            protocol.client_message("authenticate", time.time(), user=user)
        )
        code = reply.get("response")
        if code == protocol.WRONG_CREDENTIALS:
            raise _LoginRefused("Wrong account name or password.")
        if code == protocol.TOO_MANY:
            raise _LoginRefused(
                "Too many failed logins for this name; wait two minutes and try again."
            )
        if code != protocol.OK:
            raise _LoginRefused(f"Login refused: {reply.get('error', code)}")
        if isinstance(reply.get("alert"), str):
            self.account = reply["alert"]  # the registered spelling

    def _ensure_key_pair(self) -> None:
        if self._pair is not None:
            return
        stored = self.store.own_private_key()
        if stored is not None:
            self._pair = crypto.load_key_pair(stored)
            return

        self._emit(ev.KeyGenerationStarted(self.key_bits))
        self._emit(
            ev.StatusChanged(f"Making your {self.key_bits}-bit key pair (once)…", False)
        )
        started = time.monotonic()
        pair = crypto.generate_key_pair(self.key_bits)
        self.store.save_own_private_key(pair.private_pem)
        self._pair = pair
        seconds = time.monotonic() - started
        log.info("generated a %d-bit key pair in %.1f s", self.key_bits, seconds)
        self._emit(ev.KeyGenerationFinished(seconds, pair.public.fingerprint()))
        self._last_received = time.monotonic()

    def _publish_presence(self) -> None:
        assert self._pair is not None
        user = {
            "account_name": self.account,
            "status": "online",
            "public_key": self._pair.public.pem,
        }
        reply = self._call(
            protocol.client_message("presence", time.time(), type="status", user=user)
        )
        if reply.get("response") != protocol.OK:
            raise _LoginRefused(f"The server refused our key: {reply.get('error')}")

    def _refresh_after_login(self) -> None:
        first_login = not self._ever_logged_in
        self._ever_logged_in = True
        assert self._pair is not None
        if first_login:
            self._emit(
                ev.LoggedIn(
                    self.account,
                    self._pair.public.fingerprint(),
                    f"{self.host}:{self.port}",
                )
            )
        self._emit(
            ev.StatusChanged(
                f"Connected to {self.host}:{self.port} as {self.account}", True
            )
        )

        self._load_contacts()
        self._load_users()
        self._load_online()
        for contact in self.store.contacts():
            self._check_peer_key(contact)
        self._emit_contacts()
        self._flush_outbox()

    def _disconnect(self, say_goodbye: bool) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if say_goodbye:
            with contextlib.suppress(OSError):
                sock.settimeout(1.0)
                sock.sendall(protocol.encode({"action": "exit", "time": time.time()}))
        with contextlib.suppress(OSError):
            sock.close()
        self._online.clear()

    # ---------------------------------------------------------------- frames

    def _send(self, message: dict[str, Any]) -> None:
        if self._sock is None:
            raise _ConnectionDropped("not connected")
        self._keep_under_rate_limits(message.get("action") == "msg")
        try:
            frame = protocol.encode(message)
        except LocalProtocolError:
            log.exception("refusing to send an invalid frame")
            return
        try:
            self._sock.sendall(frame)
        except OSError as exc:
            raise _ConnectionDropped(f"sending failed: {exc.strerror or exc}") from exc
        self._last_sent = time.monotonic()
        log.debug("sent %s (%d bytes)", message.get("action"), len(frame))

    def _keep_under_rate_limits(self, is_message: bool) -> None:
        """Pace our own frames below the server's limits (docs/protocol.md, "Limits").

        A burst (an outbox after a long absence, many notices) then goes out a little
        slower instead of being refused with 429 and retried.
        """
        buckets = [self._request_pace] + ([self._message_pace] if is_message else [])
        for bucket in buckets:
            while not bucket.allow():
                time.sleep(bucket.seconds_until_allowed())

    def _receive(self, wait_seconds: float) -> list[dict[str, Any]]:
        """Read what has arrived (waiting up to `wait_seconds`) and return whole frames."""
        sock = self._sock
        if sock is None:
            raise _ConnectionDropped("not connected")
        try:
            readable, _, _ = select.select([sock], [], [], wait_seconds)
            if not readable:
                return []
            data = sock.recv(65_536)
        except OSError as exc:
            raise _ConnectionDropped(
                f"connection error: {exc.strerror or exc}"
            ) from exc
        if not data:
            raise _ConnectionDropped("the server closed the connection")

        self._last_received = time.monotonic()
        try:
            decoded = self._decoder.feed(data)
        except RemoteProtocolError as exc:
            raise _ConnectionDropped(
                f"the server sent an oversized frame ({exc})"
            ) from exc
        frames = []
        for item in decoded:
            if isinstance(item, protocol.BadFrame):
                log.warning("server sent a bad frame: %s", item.reason)
            else:
                frames.append(item)
        return frames

    def _next_frame(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self._backlog:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ConnectionDropped("the server did not answer in time")
            self._backlog.extend(self._receive(min(remaining, 0.5)))
        return self._backlog.popleft()

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its answer, trying again after a 429."""
        for attempt in range(TOO_MANY_RETRIES):
            reply = self._call_once(dict(request))
            if reply.get("response") != protocol.TOO_MANY:
                return reply
            log.info("server said 429 to %s; waiting", request.get("action"))
            time.sleep(min(2.0, 0.25 * 2**attempt))
        return reply

    def _call_once(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send a request and wait for its answer; other frames wait in the backlog."""
        request_id = secrets.token_hex(8)
        request["id"] = request_id
        self._send(request)

        deadline = time.monotonic() + ANSWER_TIMEOUT_SECONDS
        while True:
            for index, frame in enumerate(self._backlog):
                if "response" in frame and frame.get("id") == request_id:
                    del self._backlog[index]
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _ConnectionDropped(f"no answer to {request.get('action')}")
            self._backlog.extend(self._receive(min(remaining, 0.5)))

    # ---------------------------------------------------------------- session loop

    def _session_loop(self) -> None:
        while not self._stopping.is_set():
            self._run_commands()
            while self._backlog:
                self._handle_frame(self._backlog.popleft())
            for frame in self._receive(POLL_SECONDS):
                self._backlog.append(frame)

            now = time.monotonic()
            if now - self._last_received > DEAD_AFTER_SECONDS:
                raise _ConnectionDropped("the server stopped answering (keep-alive)")
            if now - self._last_sent > PROBE_EVERY_SECONDS:
                self._send({"action": "probe", "time": time.time()})
            if self._outbox_due and now >= self._outbox_due:
                self._flush_outbox()

    def _run_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                command()
            except (_ConnectionDropped, _LoginRefused):
                raise
            except ChatError as exc:
                self._emit(ev.Notice(str(exc)))

    def _handle_frame(self, frame: dict[str, Any]) -> None:
        if "response" in frame:
            handler = self._awaiting.pop(str(frame.get("id")), None)
            if handler is not None:
                handler(frame)
            elif frame.get("response") not in (protocol.OK, None):
                log.info(
                    "unexpected answer %s: %s",
                    frame.get("response"),
                    frame.get("error"),
                )
            return

        action = frame.get("action")
        if action == "msg":
            self._receive_message(frame)
        elif action == "delivered":
            self._mark_delivered(frame)
        elif action == "contact_status":
            self._contact_status(frame)
        elif action == "key_changed" and isinstance(frame.get("user"), str):
            self._check_peer_key(frame["user"])
            self._emit_contacts()
            self._flush_outbox()  # messages may have waited for this first key
        elif action == "session_replaced":
            raise _LoginRefused(
                "You logged in from another place, so this session was closed."
            )
        else:
            log.debug("ignoring frame %r", action)

    # ---------------------------------------------------------------- people

    def _require_online(self) -> None:
        if self._sock is None:
            raise ChatError(
                "Not connected to the server right now; try again when online."
            )

    def _load_contacts(self) -> None:
        reply = self._call(
            protocol.client_message(
                "get_contacts", time.time(), user_login=self.account
            )
        )
        names = reply.get("alert")
        if reply.get("response") == protocol.ACCEPTED and isinstance(names, list):
            self.store.set_contacts(
                {name_key(n): n for n in names if isinstance(n, str)}
            )

    def _load_users(self) -> None:
        reply = self._call(protocol.client_message("get_users", time.time()))
        names = reply.get("alert")
        if reply.get("response") == protocol.ACCEPTED and isinstance(names, list):
            self.store.set_users({name_key(n): n for n in names if isinstance(n, str)})

    def _load_online(self) -> None:
        reply = self._call(protocol.client_message("get_online", time.time()))
        names = reply.get("alert")
        if reply.get("response") == protocol.ACCEPTED and isinstance(names, list):
            self._online = {name_key(n) for n in names if isinstance(n, str)}

    def _list_users(self) -> None:
        self._require_online()
        self._load_users()
        self._emit(ev.UsersListed(tuple(self.store.users())))

    def _list_online(self) -> None:
        self._require_online()
        reply = self._call(protocol.client_message("get_online", time.time()))
        names = [n for n in reply.get("alert") or [] if isinstance(n, str)]
        self._online = {name_key(n) for n in names}
        self._emit(ev.OnlineListed(tuple(names)))
        self._emit_contacts()

    def _change_contact(self, name: str, adding: bool) -> None:
        self._require_online()
        try:
            contact = protocol.normalize_account_name(name.strip())
        except RemoteProtocolError as exc:
            raise ChatError(f"Invalid account name: {exc}") from exc
        if adding and name_key(contact) == name_key(self.account):
            raise ChatError("That is your own name; add someone else.")
        action = "add_contact" if adding else "del_contact"
        reply = self._call(
            protocol.client_message(
                action, time.time(), user_id=contact, user_login=self.account
            )
        )
        if reply.get("response") == protocol.NOT_FOUND:
            raise ChatError(f"There is no user named {contact}.")
        if reply.get("response") != protocol.OK:
            raise ChatError(f"The server refused: {reply.get('error')}")
        self._load_contacts()
        if adding:
            self._check_peer_key(contact)
            self._load_online()  # so the new contact shows as online at once
        self._emit_contacts()

    def _contact_status(self, frame: dict[str, Any]) -> None:
        user = frame.get("user")
        if not isinstance(user, str):
            return
        if frame.get("online") is True:
            self._online.add(name_key(user))
            self._outbox_due = (
                time.monotonic()
            )  # a key may now exist for waiting messages
        else:
            self._online.discard(name_key(user))
        self._emit_contacts()

    def _emit_contacts(self) -> None:
        unread = self.store.unread_counts()
        contacts = []
        for name in self.store.contacts():
            key = name_key(name)
            pinned = self.store.peer_key(key)
            changed = pinned is not None and pinned.offered_pem is not None
            contacts.append(
                ev.Contact(name, key in self._online, unread.get(key, 0), changed)
            )
        self._emit(ev.ContactsChanged(tuple(contacts)))

    def _mark_read(self, peer: str) -> None:
        self.store.mark_read(name_key(peer))
        self._emit_contacts()

    # ---------------------------------------------------------------- peer keys

    def _fetch_key(self, peer: str) -> crypto.PublicKey | None:
        reply = self._call(
            protocol.client_message("pubkey_need", time.time(), user_login=peer)
        )
        if reply.get("response") != protocol.PUBLIC_KEY:
            return None
        try:
            return crypto.load_public_key(reply.get("alert"))
        except CryptoError:
            log.warning("the server sent an unusable key for a peer")
            return None

    def _check_peer_key(self, peer: str) -> crypto.PublicKey | None:
        """Pin a peer's key on first sight; flag (never accept) a changed one."""
        key = name_key(peer)
        fresh = self._fetch_key(peer)
        pinned = self.store.peer_key(key)
        if fresh is None:
            return crypto.load_public_key(pinned.pem) if pinned else None
        if pinned is None:
            self.store.pin_peer_key(key, fresh.pem)
            return fresh

        old = crypto.load_public_key(pinned.pem)
        if old.key == fresh.key:
            if pinned.offered_pem is not None:
                self.store.offer_peer_key(key, None)
            return old
        if (
            pinned.offered_pem is None
            or crypto.load_public_key(pinned.offered_pem).key != fresh.key
        ):
            self.store.offer_peer_key(key, fresh.pem)
            log.warning("the key of %s changed", peer)
            self._emit(ev.PeerKeyChanged(peer, old.fingerprint(), fresh.fingerprint()))
        return old

    def _accept_key(self, peer: str) -> None:
        key = name_key(peer)
        pinned = self.store.peer_key(key)
        if pinned is None or pinned.offered_pem is None:
            return
        self.store.pin_peer_key(key, pinned.offered_pem)
        for record in self.store.rejected_to(key):
            self._emit(
                ev.MessageUpdated(self.store.requeue(record.seq, new_message_id()))
            )
        self._retry_unreadable(key)
        self._emit_contacts()
        self._flush_outbox()

    def _retry_unreadable(self, peer_key: str) -> None:
        """Messages that failed the signature check may open with the accepted key."""
        pinned = self.store.peer_key(peer_key)
        if pinned is None or self._pair is None:
            return
        sender_key = crypto.load_public_key(pinned.pem)
        for record, payload in self.store.unreadable_from(peer_key):
            try:
                opened = crypto.open_envelope(
                    payload,
                    record.peer,
                    self.account,
                    record.id,
                    sender_key,
                    self._pair,
                    False,
                )
            except CryptoError:
                continue
            self._emit(
                ev.MessageUpdated(self.store.set_opened(record.seq, opened.text))
            )

    # ---------------------------------------------------------------- sending

    def _key_for_sending(self, peer: str) -> tuple[crypto.PublicKey | None, str | None]:
        """The key to encrypt for, or None and the reason the message must wait."""
        pinned = self.store.peer_key(name_key(peer))
        if pinned is None:
            fetched = self._check_peer_key(peer)
            if fetched is not None:
                return fetched, None
            self._load_users()
            if name_key(peer) not in {name_key(n) for n in self.store.users()}:
                return None, NO_SUCH_USER
            return None, f"waiting for {peer} to log in once (no key yet)"
        if pinned.offered_pem is not None:
            return (
                None,
                f"{peer}'s key changed: compare safety numbers and accept it to send",
            )
        return crypto.load_public_key(pinned.pem), None

    def _flush_outbox(self) -> None:
        """Send pending messages in order; one blocked peer does not hold up others."""
        if self._sock is None or self._pair is None:
            return
        self._outbox_due = 0.0
        keys: dict[str, tuple[crypto.PublicKey | None, str | None]] = {}

        for record in self.store.outbox():
            if record.id in self._in_flight:
                continue
            peer_key = name_key(record.peer)
            if peer_key not in keys:
                keys[peer_key] = self._key_for_sending(record.peer)
                if keys[peer_key][1] != NO_SUCH_USER:
                    self._ensure_contact(record.peer)
            key, reason = keys[peer_key]
            if reason == NO_SUCH_USER:
                self._emit(
                    ev.MessageUpdated(
                        self.store.set_state(record.seq, cs.FAILED, reason)
                    )
                )
                continue
            if reason is not None:
                due = time.monotonic() + KEY_WAIT_RETRY_SECONDS
                self._outbox_due = min(self._outbox_due or due, due)
                if record.problem != reason:
                    self._emit(
                        ev.MessageUpdated(
                            self.store.set_state(record.seq, cs.PENDING, reason)
                        )
                    )
                continue
            self._send_record(record, key)

    def _send_record(self, record: MessageRecord, key: crypto.PublicKey | None) -> None:
        assert self._pair is not None
        assert key is not None
        sent_time = time.time()
        payload = crypto.seal_envelope(
            record.text,
            self.account,
            record.peer,
            record.id,
            sent_time,
            self._pair,
            key,
        )
        frame = {
            "action": "msg",
            "id": record.id,
            "time": sent_time,
            "from": self.account,
            "to": record.peer,
            "encoding": crypto.ENVELOPE_ENCODING,
            "message": payload,
        }
        self._in_flight.add(record.id)
        self._awaiting[record.id] = lambda reply: self._on_sent(
            record.seq, record.id, reply
        )
        self._send(frame)

    def _on_sent(self, seq: int, message_id: str, reply: dict[str, Any]) -> None:
        self._in_flight.discard(message_id)
        code = reply.get("response")
        if code == protocol.OK:
            server_time = reply.get("server_time")
            stamp = (
                float(server_time) if isinstance(server_time, (int, float)) else None
            )
            current = self.store.message(seq)
            if current.state == cs.PENDING:
                self._emit(
                    ev.MessageUpdated(self.store.set_state(seq, cs.STORED, None, stamp))
                )
        elif code == protocol.TOO_MANY:
            self._outbox_due = time.monotonic() + OUTBOX_RETRY_SECONDS
        elif code == protocol.NOT_FOUND:
            self._emit(
                ev.MessageUpdated(self.store.set_state(seq, cs.FAILED, NO_SUCH_USER))
            )
        else:
            problem = f"refused by the server: {reply.get('error', code)}"
            self._emit(ev.MessageUpdated(self.store.set_state(seq, cs.FAILED, problem)))

    def _mark_delivered(self, frame: dict[str, Any]) -> None:
        record = self.store.outgoing_by_id(str(frame.get("id")))
        if record is not None and record.state in (cs.PENDING, cs.STORED):
            self._emit(
                ev.MessageUpdated(self.store.set_state(record.seq, cs.DELIVERED))
            )

    # ---------------------------------------------------------------- receiving

    def _receive_message(self, frame: dict[str, Any]) -> None:
        """Verify, decrypt and store an incoming message, then acknowledge it.

        The server is not trusted: whatever fails is stored and shown as unreadable
        with the reason, and the thread goes on.
        """
        message_id, sender = frame.get("id"), frame.get("from")
        if not isinstance(message_id, str) or not protocol.MESSAGE_ID_PATTERN.fullmatch(
            message_id
        ):
            log.warning("dropping a msg frame without a valid id")
            return
        if not isinstance(sender, str) or not isinstance(frame.get("to"), str):
            log.warning("dropping a msg frame without sender or recipient")
            self._send({"action": "ack", "id": message_id})
            return
        try:
            sender = protocol.normalize_account_name(sender)
        except RemoteProtocolError:
            log.warning("dropping a msg frame whose sender is not an account name")
            self._send({"action": "ack", "id": message_id})
            return

        peer_key = name_key(sender)
        if self.store.has_incoming(peer_key, message_id):
            self._send({"action": "ack", "id": message_id})  # a repeat: shown once
            return
        server_time = frame.get("server_time")
        stamp = (
            float(server_time)
            if isinstance(server_time, (int, float))
            and not isinstance(server_time, bool)
            else time.time()
        )

        if frame.get("encoding") == NOTICE_ENCODING:
            self._receive_notice(frame, sender)
            self._send({"action": "ack", "id": message_id})
            return

        text, state, problem = self._open(frame, sender)
        payload = frame.get("message") if state == cs.UNREADABLE else None
        record = self.store.add_incoming(
            message_id,
            peer_key,
            sender,
            text,
            state,
            problem,
            payload if isinstance(payload, str) else None,
            stamp,
        )
        self._send({"action": "ack", "id": message_id})
        if record is None:
            return
        self._emit(ev.MessageAdded(record))
        self._ensure_contact(sender)
        self._emit_contacts()

    def _ensure_contact(self, peer: str) -> None:
        """Whoever we talk with becomes a contact, so their conversation is listed."""
        if name_key(peer) in {name_key(c) for c in self.store.contacts()}:
            return
        try:
            self._change_contact(peer, adding=True)
        except ChatError as exc:
            log.warning("could not add a contact: %s", exc)

    def _open(self, frame: dict[str, Any], sender: str) -> tuple[str, str, str | None]:
        """(text, state, problem) for an incoming envelope."""
        assert self._pair is not None
        if frame.get("encoding") != crypto.ENVELOPE_ENCODING or not isinstance(
            frame.get("message"), str
        ):
            return "", cs.UNREADABLE, "unknown message format"
        if name_key(str(frame["to"])) != name_key(self.account):
            return "", cs.UNREADABLE, "addressed to someone else"

        pinned = self.store.peer_key(name_key(sender))
        sender_key = (
            crypto.load_public_key(pinned.pem)
            if pinned
            else self._check_peer_key(sender)
        )
        if sender_key is None:
            return "", cs.UNREADABLE, f"no key known for {sender}"

        try:
            opened = crypto.open_envelope(
                frame["message"],
                sender,
                str(frame["to"]),
                frame["id"],
                sender_key,
                self._pair,
                False,
            )
        except SignatureInvalid:
            self._check_peer_key(sender)
            return "", cs.UNREADABLE, f"signature does not match {sender}'s key"
        except EnvelopeMismatch:
            return "", cs.UNREADABLE, "sender, recipient or id were altered in transit"
        except WrongRecipientKey:
            self._tell_sender_unreadable(sender, frame["id"])
            return (
                "",
                cs.UNREADABLE,
                "could not be decrypted: it was made for another key of yours",
            )
        except DecryptionFailed as exc:
            return "", cs.UNREADABLE, f"could not be decrypted: {exc}"
        return opened.text, cs.RECEIVED, None

    def _notice_bytes(self, sender: str, recipient: str, failed_id: str) -> bytes:
        return json.dumps(
            ["unreadable", name_key(sender), name_key(recipient), failed_id]
        ).encode()

    def _tell_sender_unreadable(self, sender: str, failed_id: str) -> None:
        """Signed word to the sender that their message used an old key of ours."""
        assert self._pair is not None
        signed = self._notice_bytes(self.account, sender, failed_id)
        payload = json.dumps(
            {
                "kind": "unreadable",
                "id": failed_id,
                "sig": crypto.sign_notice(signed, self._pair),
            }
        )
        self._send(
            {
                "action": "msg",
                "id": new_message_id(),
                "time": time.time(),
                "from": self.account,
                "to": sender,
                "encoding": NOTICE_ENCODING,
                "message": payload,
            }
        )

    def _receive_notice(self, frame: dict[str, Any], sender: str) -> None:
        try:
            notice = json.loads(frame.get("message") or "")
            failed_id, signature = str(notice["id"]), str(notice["sig"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed notice")
            return
        # The notice is signed with the sender's *new* key (that is its point), so it
        # is checked against the pinned key and against the key the server now has.
        # A notice only marks our message as unread by them; it cannot make us trust
        # the new key, which still waits for the user's decision.
        pinned = self.store.peer_key(name_key(sender))
        signed = self._notice_bytes(sender, self.account, failed_id)
        keys = [pinned.pem, pinned.offered_pem] if pinned else []
        trusted = any(
            _notice_signed_by(signed, signature, crypto.load_public_key(pem))
            for pem in keys
            if pem
        )
        if not trusted:
            current = self._fetch_key(sender)
            trusted = current is not None and _notice_signed_by(
                signed, signature, current
            )
        if not trusted:
            log.warning("ignoring a notice with a bad signature")
            return

        record = self.store.outgoing_by_id(failed_id)
        if record is not None and name_key(record.peer) == name_key(sender):
            problem = f"{sender} could not decrypt this (they have a new key); accept it to resend"
            self._emit(
                ev.MessageUpdated(
                    self.store.set_state(record.seq, cs.REJECTED, problem)
                )
            )
        self._check_peer_key(sender)
        self._emit_contacts()


def _notice_signed_by(signed: bytes, signature: str, key: crypto.PublicKey) -> bool:
    try:
        crypto.verify_notice(signed, signature, key)
    except CryptoError:
        return False
    return True
