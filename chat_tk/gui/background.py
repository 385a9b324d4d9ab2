"""Work the Tk thread hands to plain threads: hosting a server, stopping a session.

Nothing here touches Tk or holds a widget: these threads must not even drop the last
reference to a Tk object, since its clean-up would then call Tk from the wrong thread.
Results come back through concurrent.futures.Future objects that the Tk thread polls.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from pathlib import Path

from chat_tk.client.core import ChatClient
from chat_tk.server.net import ServerConfig
from chat_tk.server.runner import HostedServer, is_local_address, lan_addresses

log = logging.getLogger(__name__)

HOSTED_SERVER_DIR_NAME = "server"
HOSTED_SERVER_BIND_ADDRESS = "0.0.0.0"
HOSTED_START_TIMEOUT_SECONDS = 180.0
CLIENT_STOP_TIMEOUT_SECONDS = 5.0

_stoppers: list[threading.Thread] = []
_stoppers_lock = threading.Lock()


class HostingAttempt:
    """A server being started for the user on a worker thread."""

    def __init__(self, data_dir: Path, port: int) -> None:
        config = ServerConfig(
            host=HOSTED_SERVER_BIND_ADDRESS,
            port=port,
            data_dir=data_dir / HOSTED_SERVER_DIR_NAME,
            open_registration=True,
        )
        self.server = HostedServer(config)
        # The port it listens on and the addresses others may use to reach it.
        self.started: Future[tuple[int, list[str]]] = Future()
        worker = threading.Thread(target=self._run, name="hosting-start", daemon=True)
        worker.start()

    def _run(self) -> None:
        try:
            port = self.server.start(HOSTED_START_TIMEOUT_SECONDS)
            addresses = lan_addresses()
        except BaseException as exc:  # handed to the Tk thread, which shows it
            log.warning("could not host a server: %s", exc)
            self.started.set_exception(exc)
        else:
            log.info("hosting a server on port %d", port)
            self.started.set_result((port, addresses))

    def stop(self) -> None:
        """Stop the server, waiting first for a start still under way (any thread)."""
        try:
            self.started.result(HOSTED_START_TIMEOUT_SECONDS)
        except BaseException:  # it never started, so there is nothing to stop
            return
        self.server.stop()


def check_local_address(host: str) -> Future[bool]:
    """Whether `host` is this computer; off the Tk thread, as it may ask the resolver."""
    answer: Future[bool] = Future()

    def check() -> None:
        try:
            answer.set_result(is_local_address(host))
        except OSError:
            answer.set_result(False)

    threading.Thread(target=check, name="local-address", daemon=True).start()
    return answer


def stop_in_background(
    client: ChatClient | None, hosting: HostingAttempt | None = None
) -> threading.Thread:
    """Stop a client, then a hosted server, without making the Tk thread wait."""

    def stop_both() -> None:
        if client is not None:
            client.stop(CLIENT_STOP_TIMEOUT_SECONDS)
        if hosting is not None:
            hosting.stop()

    thread = threading.Thread(target=stop_both, name="chat-stop", daemon=True)
    with _stoppers_lock:
        _stoppers[:] = [t for t in _stoppers if t.is_alive()]
        _stoppers.append(thread)
    thread.start()
    return thread


def wait_for_stops(timeout: float) -> bool:
    """Wait for every stop begun so far (on exit); False if one is still running."""
    with _stoppers_lock:
        pending = list(_stoppers)
    for thread in pending:
        thread.join(timeout)
    return not any(thread.is_alive() for thread in pending)
