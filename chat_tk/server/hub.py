"""Sessions, logins and routing: everything the server decides, with no sockets.

A Session is given two callables, `send` and `close`; server/net.py supplies them
for real connections and tests may supply their own. Database work goes through
the DatabaseWorker so that sqlite never runs on the event loop, and slow rsa or
scrypt work goes to the default executor.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chat_tk import __version__, crypto, protocol
from chat_tk.errors import (
    CryptoError,
    DecryptionFailed,
    RemoteProtocolError,
    StorageError,
)
from chat_tk.protocol import answer, name_key
from chat_tk.server import security
from chat_tk.storage import server_store as store
from chat_tk.storage.db import DatabaseWorker

log = logging.getLogger(__name__)

T = TypeVar("T")

MIN_PASSWORD_CHARS = 4
LOGIN_FAILURES_PER_NAME = 5
LOGIN_FAILURES_PER_ADDRESS = 30
LOGIN_WINDOW_SECONDS = 60.0
LOGIN_LOCKOUT_SECONDS = 120.0
# At most this many frames (each under 64 KiB) are written before waiting for the
# peer to read, which keeps a login's backlog under the pending-output cap.
FLUSH_FRAMES_BETWEEN_DRAINS = 16


@dataclass
class Limits:
    """Rates the server enforces; documented in docs/protocol.md, "Limits"."""

    requests_per_second: float = 100.0
    request_burst: float = 400.0
    messages_per_second: float = 50.0
    message_burst: float = 400.0
    registrations_per_minute: float = 10.0


# Why a message was not stored, besides the validation done before the database.
SENDER_REMOVED = "sender removed"
RECIPIENT_UNKNOWN = "recipient unknown"

# Actions whose answers may wait for the database while later frames are read; all
# others are handled one at a time because they change the session's state.
PIPELINED_ACTIONS = frozenset({"msg", "ack", "probe"})


@dataclass(eq=False)
class Session:
    """One client connection as the hub sees it."""

    address: str
    send: Callable[[dict[str, Any]], None]
    close: Callable[[], None]
    # Waits until the peer has taken most of what was sent (used for long flushes).
    drain: Callable[[], Awaitable[None]]
    nonce: str = field(default_factory=lambda: secrets.token_hex(16))
    account: str | None = None  # registered spelling, once authenticated
    key: str | None = None  # name_key of the account
    closing: bool = False
    flushing: bool = False
    held_pushes: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: security.TokenBucket | None = None
    messages: security.TokenBucket | None = None


class Hub:
    """Owns the online sessions and answers every request."""

    def __init__(
        self,
        db: DatabaseWorker,
        server_pair: crypto.KeyPair,
        open_registration: bool,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.server_pair = server_pair
        self.open_registration = open_registration
        self.limits = limits or Limits()
        self.clock = clock
        self.online: dict[str, Session] = {}
        self.name_failures = security.FailureThrottle(
            LOGIN_FAILURES_PER_NAME, LOGIN_WINDOW_SECONDS, LOGIN_LOCKOUT_SECONDS
        )
        self.address_failures = security.FailureThrottle(
            LOGIN_FAILURES_PER_ADDRESS, LOGIN_WINDOW_SECONDS, LOGIN_LOCKOUT_SECONDS
        )
        self.registrations: dict[str, security.TokenBucket] = {}

    # ----------------------------------------------------------------- plumbing

    async def _db(self, operation: Callable[[Any], T]) -> T:
        return await asyncio.wrap_future(self.db.submit(operation))

    async def _off_loop(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(None, function, *args)

    def new_session(
        self,
        address: str,
        send: Callable[[dict[str, Any]], None],
        close: Callable[[], None],
        drain: Callable[[], Awaitable[None]],
    ) -> Session:
        session = Session(address, send, close, drain)
        session.requests = security.TokenBucket(
            self.limits.requests_per_second, self.limits.request_burst
        )
        return session

    def hello(self, session: Session) -> dict[str, Any]:
        """The first frame on every connection (docs/protocol.md, "Session", 1)."""
        return {
            "action": "hello",
            "time": self.clock(),
            "server": f"chat_tk/{__version__}",
            "key": self.server_pair.public.pem,
            "nonce": session.nonce,
        }

    # ----------------------------------------------------------------- dispatch

    @staticmethod
    def is_pipelined(message: dict[str, Any]) -> bool:
        return message.get("action") in PIPELINED_ACTIONS

    def dispatch(
        self, session: Session, message: dict[str, Any]
    ) -> Awaitable[dict[str, Any] | None]:
        """Start handling one frame and return what will produce its answer.

        Database work of a pipelined request is queued here, before returning, so
        that requests reach the database in the order they arrived.
        """
        request_id = protocol.request_id_of(message)
        action = message.get("action")

        # Not logged in: only the login actions are open (section "Session", 3).
        if session.account is None and action not in protocol.ACTIONS_BEFORE_LOGIN:
            return _ready(answer(protocol.UNAUTHORIZED, "log in first", request_id))

        assert session.requests is not None
        if not session.requests.allow():
            log.warning("%s: request rate exceeded", session.address)
            return _ready(
                answer(protocol.TOO_MANY, "too many requests, slow down", request_id)
            )

        try:
            request = protocol.parse_request(message, session.account)
        except protocol.UnknownAction as exc:
            code = protocol.BAD_REQUEST if session.account else protocol.UNAUTHORIZED
            log.warning("%s: %s", session.address, exc)
            return _ready(answer(code, str(exc), request_id))
        except RemoteProtocolError as exc:
            log.warning("%s: refused %s: %s", session.address, action, exc)
            return _ready(answer(exc.code, str(exc), request_id))

        log.debug("%s: %s", session.address, type(request).__name__)
        if isinstance(request, protocol.SendMessage):
            return self._send_message(session, request, request_id)
        if isinstance(request, protocol.Ack):
            return self._start_ack(session, request, request_id)
        return self._handle(session, request, request_id)

    async def _handle(
        self, session: Session, request: protocol.Request, request_id: str | None
    ) -> dict[str, Any] | None:
        if isinstance(request, protocol.Probe):
            return answer(protocol.OK, None, request_id)
        if isinstance(request, protocol.Exit):
            session.closing = True
            return answer(protocol.OK, "bye", request_id)
        if isinstance(request, protocol.Register):
            return await self._register(session, request, request_id)
        if isinstance(request, protocol.Authenticate):
            return await self._authenticate(session, request, request_id)

        me = session.key
        assert me is not None
        assert session.account is not None
        if isinstance(request, protocol.Presence):
            return await self._presence(session, request, request_id)
        if isinstance(request, protocol.GetContacts):
            contacts = await self._db(lambda c: store.list_contacts(c, me))
            return answer(protocol.ACCEPTED, contacts, request_id)
        if isinstance(request, (protocol.AddContact, protocol.DelContact)):
            return await self._change_contact(me, request, request_id)
        if isinstance(request, protocol.GetUsers):
            return answer(
                protocol.ACCEPTED, await self._db(store.list_accounts), request_id
            )
        if isinstance(request, protocol.GetOnline):
            names = sorted(s.account for s in self.online.values() if s.account)
            return answer(protocol.ACCEPTED, names, request_id)
        if isinstance(request, protocol.PubkeyNeed):
            return await self._pubkey(request, request_id)
        raise AssertionError(f"unhandled request {request!r}")

    # ----------------------------------------------------------------- accounts

    async def _open_password(self, session: Session, sealed: str) -> str | None:
        try:
            return await self._off_loop(
                crypto.open_sealed_password, sealed, session.nonce, self.server_pair
            )
        except DecryptionFailed:
            return None

    async def _register(
        self, session: Session, request: protocol.Register, request_id: str | None
    ) -> dict[str, Any]:
        if not self.open_registration:
            return answer(
                protocol.FORBIDDEN, "this server does not allow sign-up", request_id
            )

        bucket = self.registrations.setdefault(
            session.address.rsplit(":", 1)[0],
            security.TokenBucket(self.limits.registrations_per_minute / 60, 10),
        )
        if not bucket.allow():
            return answer(
                protocol.TOO_MANY, "too many sign-ups from this address", request_id
            )

        password = await self._open_password(session, request.sealed_password)
        if password is None:
            return answer(
                protocol.BAD_REQUEST, "the sealed password does not open", request_id
            )
        problem = password_problem(password)
        if problem:
            return answer(protocol.BAD_REQUEST, problem, request_id)

        hashed = await self._off_loop(security.hash_password, password)
        created = await self._db(
            lambda c: store.create_account(
                c,
                name_key(request.account_name),
                request.account_name,
                protocol.confusable_skeleton(request.account_name),
                hashed,
                self.clock(),
            )
        )
        if not created:
            return answer(
                protocol.CONFLICT, "that name (or one too like it) is taken", request_id
            )
        log.info("%s: registered account %s", session.address, request.account_name)
        return answer(protocol.CREATED, "account created", request_id)

    async def _authenticate(
        self, session: Session, request: protocol.Authenticate, request_id: str | None
    ) -> dict[str, Any] | None:
        key = name_key(request.account_name)
        host = session.address.rsplit(":", 1)[0]
        if self.name_failures.is_locked(key) or self.address_failures.is_locked(host):
            log.warning("%s: login throttled", session.address)
            return answer(
                protocol.TOO_MANY, "too many failed logins, try later", request_id
            )

        account = await self._db(lambda c: store.get_account(c, key))
        password = await self._open_password(session, request.sealed_password)
        stored_hash = account.password_hash if account else None
        if password is None:
            password, stored_hash = (
                "",
                None,
            )  # same work, same answer as a wrong password
        good = await self._off_loop(security.verify_password, password, stored_hash)

        if not good or account is None:
            self.name_failures.record_failure(key)
            self.address_failures.record_failure(host)
            log.warning("%s: failed login", session.address)
            return answer(
                protocol.WRONG_CREDENTIALS, "wrong account name or password", request_id
            )
        if session.account is not None:
            return answer(protocol.CONFLICT, "already logged in", request_id)

        await self._db(lambda c: store.record_login(c, key, self.clock(), host))
        older = self.online.get(key)
        if older is not None:
            log.info(
                "%s: %s logged in elsewhere; closing the older session",
                session.address,
                account.name,
            )
            older.send({"action": "session_replaced", "time": self.clock()})
            self._forget(older)
            older.close()

        session.account, session.key = account.name, key
        session.messages = security.TokenBucket(
            self.limits.messages_per_second, self.limits.message_burst
        )
        session.flushing = True
        self.online[key] = session
        log.info("%s: %s logged in", session.address, account.name)
        session.send(answer(protocol.OK, account.name, request_id))

        await self._flush_queue(session)
        await self._notify_watchers(
            key, {"action": "contact_status", "user": account.name, "online": True}
        )
        return None

    async def _flush_queue(self, session: Session) -> None:
        """Send what waited for this user, then what arrived while we were reading.

        Pages through the queue and waits for the peer to read between pages, so a
        long backlog never trips the cap on pending output.
        """
        key = session.key
        assert key is not None
        last_seq = flushed = 0
        while not session.closing:
            page = await self._db(
                functools.partial(
                    store.pending_messages, recipient=key, after_seq=last_seq
                )
            )
            if not page:
                break
            for seq, frame in page:
                session.send(frame)
                last_seq = seq
                flushed += 1
                if flushed % FLUSH_FRAMES_BETWEEN_DRAINS == 0:
                    await session.drain()

        for seq, frame in session.held_pushes:
            if seq > last_seq:
                session.send(frame)
        session.held_pushes.clear()
        session.flushing = False

        receipts = await self._db(lambda c: store.pending_receipts(c, key))
        for message_id, recipient, acked in receipts:
            session.send(
                {
                    "action": "delivered",
                    "id": message_id,
                    "to": recipient,
                    "time": acked,
                }
            )
        if receipts:
            ids = [r[0] for r in receipts]
            await self._db(lambda c: store.mark_receipts_sent(c, key, ids))
        log.debug("%s: flushed %d queued messages", session.address, flushed)

    def _forget(self, session: Session) -> None:
        if session.key is not None and self.online.get(session.key) is session:
            del self.online[session.key]

    async def session_closed(self, session: Session) -> None:
        """Called once when a connection ends, whatever the reason."""
        was_online = session.key is not None and self.online.get(session.key) is session
        self._forget(session)
        if was_online and session.key is not None:
            log.info("%s: %s went offline", session.address, session.account)
            try:
                await self._notify_watchers(
                    session.key,
                    {
                        "action": "contact_status",
                        "user": session.account,
                        "online": False,
                    },
                )
            except StorageError:
                log.info("server is stopping; contacts of %s not told", session.account)

    async def _notify_watchers(self, key: str, event: dict[str, Any]) -> None:
        watchers = await self._db(lambda c: store.watchers_of(c, key))
        event["time"] = self.clock()
        for watcher in watchers:
            target = self.online.get(watcher)
            if target is not None:
                target.send(event)

    async def _presence(
        self, session: Session, request: protocol.Presence, request_id: str | None
    ) -> dict[str, Any]:
        key, pem = session.key, request.public_key
        assert key is not None
        if pem is not None:
            try:
                crypto.load_public_key(pem)
            except CryptoError:
                return answer(
                    protocol.BAD_REQUEST,
                    "public_key is not a PKCS#1 PEM RSA key",
                    request_id,
                )

            def publish(conn: Any) -> bool:
                account = store.get_account(conn, key)
                store.set_public_key(conn, key, pem)
                return account is not None and account.public_key != pem

            # Watchers hear of a first key too: messages to this user may be waiting.
            if await self._db(publish):
                log.info("%s: %s published a new key", session.address, session.account)
                await self._notify_watchers(
                    key, {"action": "key_changed", "user": session.account}
                )
        return answer(protocol.OK, None, request_id)

    async def _change_contact(
        self,
        me: str,
        request: protocol.AddContact | protocol.DelContact,
        request_id: str | None,
    ) -> dict[str, Any]:
        other = name_key(request.contact)
        adding = isinstance(request, protocol.AddContact)

        def change(conn: Any) -> bool:
            if store.get_account(conn, other) is None:
                return False
            if adding:
                store.add_contact(conn, me, other)
            else:
                store.del_contact(conn, me, other)
            return True

        if not await self._db(change):
            return answer(protocol.NOT_FOUND, "no such user", request_id)
        return answer(protocol.OK, None, request_id)

    async def _pubkey(
        self, request: protocol.PubkeyNeed, request_id: str | None
    ) -> dict[str, Any]:
        account = await self._db(
            lambda c: store.get_account(c, name_key(request.account_name))
        )
        if account is None or account.public_key is None:
            return answer(protocol.NOT_FOUND, "no such user, or no key yet", request_id)
        return answer(protocol.PUBLIC_KEY, account.public_key, request_id)

    # ----------------------------------------------------------------- messages

    def _send_message(
        self, session: Session, request: protocol.SendMessage, request_id: str | None
    ) -> Awaitable[dict[str, Any] | None]:
        assert session.messages is not None
        assert session.key is not None
        if not session.messages.allow():
            log.warning("%s: message rate exceeded", session.address)
            return _ready(
                answer(protocol.TOO_MANY, "too many messages, slow down", request_id)
            )

        sender, recipient, now = session.key, name_key(request.recipient), self.clock()
        frame = {
            "action": "msg",
            "id": request.message_id,
            "time": request.frame["time"],
            "from": request.sender,
            "to": request.recipient,
            "encoding": request.encoding,
            "message": request.payload,
            "server_time": now,
        }

        def store_it(conn: Any) -> store.StoredMessage | str:
            # The operator may have removed either account while this session ran.
            if store.get_account(conn, sender) is None:
                return SENDER_REMOVED
            if store.get_account(conn, recipient) is None:
                return RECIPIENT_UNKNOWN
            return store.store_message(
                conn, sender, request.message_id, recipient, frame, now
            )

        stored = asyncio.wrap_future(self.db.submit(store_it))
        return self._finish_send(session, stored, request_id)

    async def _finish_send(
        self,
        session: Session,
        stored_future: Awaitable[store.StoredMessage | str],
        request_id: str | None,
    ) -> dict[str, Any]:
        stored = await stored_future
        if stored == RECIPIENT_UNKNOWN:
            return answer(protocol.NOT_FOUND, "no such user", request_id)
        if not isinstance(stored, store.StoredMessage):
            log.warning("%s: account was removed; closing its session", session.address)
            session.closing = True
            return answer(protocol.UNAUTHORIZED, "this account was removed", request_id)
        if stored.new:
            self._push(stored.recipient, stored.seq, stored.frame)
        return {
            "response": protocol.OK,
            "id": stored.message_id,
            "server_time": stored.server_time,
        }

    def _push(self, recipient: str, seq: int, frame: dict[str, Any]) -> None:
        target = self.online.get(recipient)
        if target is None:
            return
        if target.flushing:
            target.held_pushes.append((seq, frame))
        else:
            target.send(frame)

    def _start_ack(
        self, session: Session, request: protocol.Ack, request_id: str | None
    ) -> Awaitable[dict[str, Any] | None]:
        """Queue the acknowledgement now, so that a burst of acks commits together."""
        me, now = session.key, self.clock()
        assert me is not None
        acked = asyncio.wrap_future(
            self.db.submit(lambda c: store.acknowledge(c, me, request.message_id, now))
        )
        return self._finish_ack(session, acked, now, request_id)

    async def _finish_ack(
        self,
        session: Session,
        acked_future: Awaitable[tuple[str, str] | None],
        now: float,
        request_id: str | None,
    ) -> dict[str, Any]:
        acked = await acked_future
        if acked is not None:
            sender, message_id = acked
            target = self.online.get(sender)
            if target is not None:
                # TODO: a receipt counts as sent once it is written to the sender's
                # connection; if that client dies before reading it, the sender keeps
                # ✓ instead of ✓✓. An acknowledgement of receipts would close this gap.
                receipt = {
                    "action": "delivered",
                    "id": message_id,
                    "to": session.account,
                }
                target.send({**receipt, "time": now})
                await self._db(
                    lambda c: store.mark_receipts_sent(c, sender, [message_id])
                )
        return answer(protocol.OK, None, request_id)


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"the password needs at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > protocol.MAX_PASSWORD_CHARS:
        return f"the password may have at most {protocol.MAX_PASSWORD_CHARS} characters"
    return None


async def _ready(value: T) -> T:
    return value
