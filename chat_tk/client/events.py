"""What the client core tells its user interface, as past-tense facts on a queue.

The GUI and the console both read these from a queue.Queue; nothing here knows
about either of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from chat_tk.storage.client_store import MessageRecord


@dataclass(frozen=True)
class StatusChanged:
    """A line for the status bar: what the connection is doing now."""

    text: str
    connected: bool


@dataclass(frozen=True)
class KeyGenerationStarted:
    bits: int


@dataclass(frozen=True)
class KeyGenerationFinished:
    seconds: float
    fingerprint: str


@dataclass(frozen=True)
class AccountCreated:
    account: str


@dataclass(frozen=True)
class LoggedIn:
    account: str
    fingerprint: str
    server: str


@dataclass(frozen=True)
class LoginFailed:
    """The first login did not succeed; the client has stopped.

    `unreachable` is True when nothing answered at the address, so the login
    dialog may offer to host a server there.
    """

    reason: str
    unreachable: bool = False


@dataclass(frozen=True)
class ConnectionLost:
    reason: str
    retry_in_seconds: float


@dataclass(frozen=True)
class SessionEnded:
    """The client stopped for good (logged in elsewhere, password changed, exit)."""

    reason: str


@dataclass(frozen=True)
class Contact:
    name: str
    online: bool
    unread: int
    key_changed: bool


@dataclass(frozen=True)
class ContactsChanged:
    contacts: tuple[Contact, ...]


@dataclass(frozen=True)
class UsersListed:
    names: tuple[str, ...]


@dataclass(frozen=True)
class OnlineListed:
    names: tuple[str, ...]


@dataclass(frozen=True)
class MessageAdded:
    record: MessageRecord


@dataclass(frozen=True)
class MessageUpdated:
    record: MessageRecord


@dataclass(frozen=True)
class PeerKeyChanged:
    """The server now gives another key for a peer; the user should compare."""

    peer: str
    pinned_fingerprint: str
    offered_fingerprint: str


@dataclass(frozen=True)
class Notice:
    """Something the user should read (a refused request, a warning)."""

    text: str


Event = (
    StatusChanged
    | KeyGenerationStarted
    | KeyGenerationFinished
    | AccountCreated
    | LoggedIn
    | LoginFailed
    | ConnectionLost
    | SessionEnded
    | ContactsChanged
    | UsersListed
    | OnlineListed
    | MessageAdded
    | MessageUpdated
    | PeerKeyChanged
    | Notice
)
