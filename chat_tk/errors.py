"""The exception tree shared by every layer; it imports nothing from the package."""

from __future__ import annotations

from collections.abc import Sequence


class ChatError(Exception):
    """Base of every error chat_tk raises on purpose."""


class ProtocolError(ChatError):
    """A frame or message broke the wire contract (docs/protocol.md)."""

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were about to send something the contract forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the contract forbids."""


class FatalFrameError(RemoteProtocolError):
    """The byte stream itself is unusable (oversized frame): the connection must close.

    `complete_frames` holds what arrived whole before the oversized frame.
    """

    def __init__(
        self, message: str, complete_frames: Sequence[object] | None = None
    ) -> None:
        super().__init__(message)
        self.complete_frames = list(complete_frames or ())


class CryptoError(ChatError):
    """A key, a seal or an envelope could not be used."""


class DecryptionFailed(CryptoError):
    """A ciphertext did not open with our private key."""


class WrongRecipientKey(DecryptionFailed):
    """The signature was good but the ciphertext was made for another key of ours."""


class SignatureInvalid(CryptoError):
    """A signature does not match the sender's pinned key."""


class EnvelopeMismatch(CryptoError):
    """The signed inner header disagrees with the outer frame (a relay tampered with it)."""


class StorageError(ChatError):
    """A database file could not be opened or used; the message names the file."""


class ServerKeyChanged(ChatError):
    """The server presented a key other than the one pinned on first contact."""
