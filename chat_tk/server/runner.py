"""Running the server: headless from the command line, or in a thread inside the app.

Also the operator's account commands (add, list, remove users), which work on the
database directly and may run while the server is up (sqlite WAL allows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import signal
import socket
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

from chat_tk import crypto, protocol
from chat_tk.errors import ChatError, RemoteProtocolError
from chat_tk.server import security
from chat_tk.server.hub import password_problem
from chat_tk.server.net import (
    SHUTDOWN_GRACE_SECONDS,
    ChatServer,
    ServerConfig,
    open_server_database,
)
from chat_tk.storage import server_store

log = logging.getLogger(__name__)


def run_headless(config: ServerConfig) -> int:
    """Serve until SIGTERM or Ctrl+C, then stop cleanly; returns the exit status."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            # On Windows there are no signal handlers; Ctrl+C raises KeyboardInterrupt.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        server = await loop.run_in_executor(None, ChatServer, config)
        await server.serve_forever(stop)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        log.info("interrupted")
    except OSError as exc:
        print(
            f"chat_tk server: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    except ChatError as exc:
        print(f"chat_tk server: {exc}", file=sys.stderr)
        return 1
    return 0


class HostedServer:
    """A server running on a background thread of the desktop app.

    Used when nobody answers at a local address: the app hosts one itself, with
    open registration, so that a double-click is enough to start chatting.
    """

    def __init__(
        self, config: ServerConfig, server_pair: crypto.KeyPair | None = None
    ) -> None:
        self.config = config
        self.server_pair = server_pair
        self.port = config.port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started: Future[int] = Future()
        self._thread = threading.Thread(
            target=self._run, name="hosted-server", daemon=True
        )

    def start(self, timeout: float = 120.0) -> int:
        """Start serving and return the port (the first start makes a key: seconds)."""
        self._thread.start()
        self.port = self._started.result(timeout)
        return self.port

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starter, never lost silently
            if not self._started.done():
                self._started.set_exception(exc)
            else:
                log.exception("hosted server stopped with an error")

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await self._loop.run_in_executor(
            None, ChatServer, self.config, self.server_pair
        )
        await server.start()
        self._started.set_result(server.port)
        try:
            await self._stop.wait()
        finally:
            await server.stop()

    def stop(self) -> None:
        if (
            self._loop is not None
            and self._stop is not None
            and self._thread.is_alive()
        ):
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=2 * SHUTDOWN_GRACE_SECONDS + 5)


def lan_addresses() -> list[str]:
    """Addresses of this computer that others on the network may reach (no traffic sent)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            found.add(str(info[4][0]))
    except OSError:
        pass
    return sorted(a for a in found if not a.startswith("127."))


def is_local_address(host: str) -> bool:
    """True when `host` names this computer (so the app may host a server there)."""
    if host in ("localhost", "", "0.0.0.0", "::1") or host.startswith("127."):
        return True
    return host in lan_addresses()


# --------------------------------------------------------------------------- operator


def read_new_password(prompt: str = "Password for the new account: ") -> str:
    """From a prompt on a terminal, else the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("Repeat it: ") != first:
            raise ChatError("the two passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def add_user(data_dir: Path, raw_name: str, password: str) -> str:
    try:
        name = protocol.normalize_account_name(raw_name)
    except RemoteProtocolError as exc:
        raise ChatError(f"invalid account name: {exc}") from exc
    problem = password_problem(password)
    if problem:
        raise ChatError(problem)

    hashed = security.hash_password(password)
    db = open_server_database(data_dir)
    try:
        created = db.call(
            lambda c: server_store.create_account(
                c,
                protocol.name_key(name),
                name,
                protocol.confusable_skeleton(name),
                hashed,
                time.time(),
            )
        )
    finally:
        db.close()
    if not created:
        raise ChatError(f"the name {name!r} (or one too like it) is taken")
    return name


def remove_user(data_dir: Path, raw_name: str) -> None:
    """Delete an account and its queued messages, from the operator's own process.

    A running server notices at the removed user's next message (answered 401, and
    the session is closed); until then an idle session still counts as online.
    """
    db = open_server_database(data_dir)
    try:
        removed = db.call(
            lambda c: server_store.delete_account(c, protocol.name_key(raw_name))
        )
    finally:
        db.close()
    if not removed:
        raise ChatError(f"no account named {raw_name!r}")


def list_users(data_dir: Path) -> list[tuple[str, int, int, float | None]]:
    db = open_server_database(data_dir)
    try:
        return db.call(server_store.account_stats)
    finally:
        db.close()
