"""The asyncio glue between TCP connections and the Hub.

Owns deadlines, the cap on each connection's pending output and the ordering of
answers; it decides nothing about accounts or messages (that is hub.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chat_tk import crypto, protocol
from chat_tk.errors import FatalFrameError, LocalProtocolError
from chat_tk.server.hub import Hub, Limits, Session
from chat_tk.storage import server_store
from chat_tk.storage.db import DatabaseWorker
from chat_tk.verifiers import ServerVerifier

log = logging.getLogger(__name__)

# Deadlines and caps (docs/protocol.md, "Limits").
IDLE_TIMEOUT_SECONDS = 90.0
PARTIAL_FRAME_SECONDS = 30.0
MAX_PENDING_OUTPUT_BYTES = 2 * 1024 * 1024
MAX_ANSWERS_IN_FLIGHT = 256
MAX_CONNECTIONS = 1000
SHUTDOWN_GRACE_SECONDS = 5.0
READ_CHUNK_BYTES = 65_536
SERVER_KEY_SETTING = "server_private_key"
DATABASE_FILE = "server.sqlite"


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7777
    data_dir: Path = Path(".")
    open_registration: bool = False
    limits: Limits | None = None


def open_server_database(data_dir: Path) -> DatabaseWorker:
    return DatabaseWorker(
        data_dir / DATABASE_FILE, server_store.SCHEMA, server_store.SCHEMA_VERSION
    )


def load_or_create_server_key(
    db: DatabaseWorker, bits: int = crypto.DEFAULT_KEY_BITS
) -> crypto.KeyPair:
    """The server's identity key, made once and kept across restarts."""
    stored = db.call(lambda c: server_store.get_setting(c, SERVER_KEY_SETTING))
    if stored is not None:
        return crypto.load_key_pair(stored)

    log.info("generating the server's %d-bit key pair (once)", bits)
    pair = crypto.generate_key_pair(bits)
    db.call(lambda c: server_store.set_setting(c, SERVER_KEY_SETTING, pair.private_pem))
    return pair


class Connection:
    """One client's socket: reads frames, feeds the hub, writes answers in order."""

    def __init__(
        self, hub: Hub, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.hub = hub
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.address = f"{peer[0]}:{peer[1]}"
        self.closed = False
        self.session: Session = hub.new_session(
            self.address, self.send, self.abort, self.drain
        )
        self.answers: asyncio.Queue[Awaitable[dict[str, Any] | None]] = asyncio.Queue(
            MAX_ANSWERS_IN_FLIGHT
        )

    def send(self, message: dict[str, Any]) -> None:
        """Queue a frame without waiting; a peer that stops reading is cut off."""
        if self.closed:
            return
        try:
            frame = protocol.encode(message)
        except LocalProtocolError:
            log.exception("%s: could not encode an outgoing frame", self.address)
            return
        self.writer.write(frame)
        log.debug(
            "%s: sent %s (%d bytes)",
            self.address,
            message.get("action") or message.get("response"),
            len(frame),
        )

        buffered = self.writer.transport.get_write_buffer_size()
        if buffered > MAX_PENDING_OUTPUT_BYTES:
            log.warning(
                "%s: peer is not reading (%d bytes pending); closing",
                self.address,
                buffered,
            )
            self.abort()

    async def drain(self) -> None:
        """Wait (bounded by the idle timeout) until the peer has read most output."""
        if self.closed:
            return
        try:
            await asyncio.wait_for(self.writer.drain(), IDLE_TIMEOUT_SECONDS)
        except (asyncio.TimeoutError, ConnectionError):
            log.warning(
                "%s: peer stopped reading during a flush; closing", self.address
            )
            self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.transport.abort()

    async def run(self) -> None:
        log.info("%s: connected", self.address)
        responder = asyncio.create_task(self._write_answers())
        try:
            self.send(self.hub.hello(self.session))
            await self._read_frames()
        except (ConnectionError, OSError) as exc:
            log.info("%s: connection lost: %s", self.address, exc)
        finally:
            # Answer what was already read (a stop or a closed peer); then close.
            if not self.closed:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(self.answers.join(), SHUTDOWN_GRACE_SECONDS)
            responder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await responder
            self._abandon_unanswered()
            try:
                await self.hub.session_closed(self.session)
            finally:
                self._close_writer()
                log.info("%s: disconnected", self.address)

    async def _read_frames(self) -> None:
        decoder = protocol.FrameDecoder()
        partial_since: float | None = None

        while not self.closed:
            # An unfinished frame must be completed in time; otherwise allow idling.
            if decoder.has_partial_frame:
                partial_since = partial_since or time.monotonic()
                timeout = partial_since + PARTIAL_FRAME_SECONDS - time.monotonic()
            else:
                partial_since = None
                timeout = IDLE_TIMEOUT_SECONDS
            try:
                data = await asyncio.wait_for(
                    self.reader.read(READ_CHUNK_BYTES), max(timeout, 0)
                )
            except asyncio.TimeoutError:
                log.warning(
                    "%s: %s; closing",
                    self.address,
                    "unfinished frame timed out" if partial_since else "idle",
                )
                return
            if not data:
                return

            try:
                frames = decoder.feed(data)
            except FatalFrameError as exc:
                for frame in exc.complete_frames:
                    if isinstance(frame, (dict, protocol.BadFrame)):
                        await self._handle_frame(frame)
                log.warning("%s: %s; closing", self.address, exc)
                await self._queue_answer(
                    _ready(protocol.answer(protocol.BAD_REQUEST, str(exc)))
                )
                await self.answers.join()
                return

            for frame in frames:
                await self._handle_frame(frame)
                if self.session.closing or self.closed:
                    return

    async def _handle_frame(self, frame: dict[str, Any] | protocol.BadFrame) -> None:
        if isinstance(frame, protocol.BadFrame):
            log.warning("%s: bad frame: %s", self.address, frame.reason)
            await self._queue_answer(
                _ready(protocol.answer(protocol.BAD_REQUEST, frame.reason))
            )
            return

        log.debug("%s: received %s", self.address, frame.get("action"))
        await self._queue_answer(self.hub.dispatch(self.session, frame))
        if not self.hub.is_pipelined(frame):
            await self.answers.join()

    async def _queue_answer(self, pending: Awaitable[dict[str, Any] | None]) -> None:
        await self.answers.put(pending)

    async def _write_answers(self) -> None:
        """Write answers strictly in request order, each once it is ready."""
        while True:
            pending = await self.answers.get()
            try:
                reply = await pending
            except Exception:
                log.exception("%s: request failed", self.address)
                reply = protocol.answer(protocol.SERVER_ERROR, "server error")
            if reply is not None:
                self.send(reply)
            self.answers.task_done()
            if self.session.closing:  # exit, or a removed account: flush and close
                self._close_writer()

    def _abandon_unanswered(self) -> None:
        """Close requests that will never be answered (the peer is gone).

        Their database work, if already queued, still happens; a message stored
        this way is simply answered again when the client retries it.
        """
        while not self.answers.empty():
            pending = self.answers.get_nowait()
            if asyncio.iscoroutine(pending):
                pending.close()
            self.answers.task_done()

    def _close_writer(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


async def _ready(value: dict[str, Any]) -> dict[str, Any]:
    return value


class ChatServer(metaclass=ServerVerifier):
    """Listens on a TCP port and serves every connection until stopped."""

    def __init__(
        self, config: ServerConfig, server_pair: crypto.KeyPair | None = None
    ) -> None:
        self.config = config
        self.db = open_server_database(config.data_dir)
        self.server_pair = server_pair or load_or_create_server_key(self.db)
        self.hub = Hub(
            self.db, self.server_pair, config.open_registration, config.limits
        )
        self.connections: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Server | None = None
        self.port = config.port

    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._serve, self.config.host, self.config.port, limit=READ_CHUNK_BYTES
        )
        sockets = self._listener.sockets
        self.port = sockets[0].getsockname()[1] if sockets else self.config.port
        log.info(
            "chat_tk server listening on %s:%d (data in %s)",
            self.config.host,
            self.port,
            self.config.data_dir,
        )

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(self.connections) >= MAX_CONNECTIONS:
            log.warning(
                "connection limit reached; refusing %s",
                writer.get_extra_info("peername"),
            )
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            await Connection(self.hub, reader, writer).run()
        except asyncio.CancelledError:
            # stop() cancels connections; ending quietly keeps asyncio's stream
            # callback from reporting the cancellation as an error.
            pass
        finally:
            self.connections.discard(task)

    async def stop(self) -> None:
        """Stop accepting, let connections finish briefly, then commit and close."""
        if self._listener is not None:
            self._listener.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            # Each connection may spend the grace period answering, then one more
            # database round to tell its contacts it went offline.
            await asyncio.wait(
                list(self.connections), timeout=2 * SHUTDOWN_GRACE_SECONDS + 1
            )
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)
        log.info("chat_tk server stopped")

    async def serve_forever(self, stop_event: asyncio.Event) -> None:
        await self.start()
        try:
            await stop_event.wait()
        finally:
            await self.stop()
