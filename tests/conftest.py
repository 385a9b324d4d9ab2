"""Shared fixtures: real servers on 127.0.0.1, real sqlite files in tmp_path."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_tk import crypto
from chat_tk.client import events as ev
from chat_tk.client.core import ChatClient
from chat_tk.server.hub import Limits
from chat_tk.server.net import ServerConfig
from chat_tk.server.runner import HostedServer

# Client keys in tests are 1024-bit: pure-Python generation of 2048-bit keys takes
# seconds each. The server key must be 2048-bit (docs/protocol.md) and is made once.
TEST_CLIENT_KEY_BITS = 1024


@pytest.fixture(scope="session")
def server_pair() -> crypto.KeyPair:
    return crypto.generate_key_pair(2048)


class RunningServer:
    def __init__(self, data_dir: Path, pair: crypto.KeyPair, **options: Any) -> None:
        self.data_dir = data_dir
        self.pair = pair
        self.options = options
        self.hosted: HostedServer | None = None
        self.port = 0

    def start(self, port: int = 0) -> int:
        config = ServerConfig(
            host="127.0.0.1", port=port, data_dir=self.data_dir, **self.options
        )
        self.hosted = HostedServer(config, self.pair)
        self.port = self.hosted.start()
        return self.port

    def stop(self) -> None:
        if self.hosted is not None:
            self.hosted.stop()
            self.hosted = None


@pytest.fixture
def server(tmp_path: Path, server_pair: crypto.KeyPair) -> Iterator[RunningServer]:
    running = RunningServer(tmp_path / "server", server_pair, open_registration=True)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def make_server(
    tmp_path: Path, server_pair: crypto.KeyPair
) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def make(name: str = "server", **options: Any) -> RunningServer:
        options.setdefault("open_registration", True)
        options.setdefault("limits", Limits())
        running = RunningServer(tmp_path / name, server_pair, **options)
        running.start()
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def wait_for_event(
    events: queue.Queue[ev.Event],
    predicate: Callable[[ev.Event], bool],
    timeout: float = 20.0,
    seen: list[ev.Event] | None = None,
) -> ev.Event:
    """Read events until one matches; fail with everything seen otherwise."""
    deadline = time.monotonic() + timeout
    log = seen if seen is not None else []
    while time.monotonic() < deadline:
        try:
            event = events.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            break
        log.append(event)
        if predicate(event):
            return event
    raise AssertionError(f"no matching event within {timeout}s; saw {log!r}")


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., ChatClient]]:
    clients: list[ChatClient] = []

    def make(
        server: RunningServer,
        name: str,
        password: str = "secret-pw",
        register: bool = True,
        login: bool = True,
        home: str | None = None,
    ) -> ChatClient:
        client = ChatClient(
            tmp_path / (home or f"home-{name}"),
            "127.0.0.1",
            server.port,
            name,
            password,
            register=register,
            key_bits=TEST_CLIENT_KEY_BITS,
        )
        clients.append(client)
        client.start()
        if login:
            wait_for_event(
                client.events, lambda e: isinstance(e, (ev.LoggedIn, ev.LoginFailed))
            )
        return client

    yield make
    for client in clients:
        client.stop()
