"""Keys, sealed passwords and end-to-end envelopes: the only module that imports rsa.

rsa is pure Python: private-key work (key generation, decryption, signing) takes
milliseconds to seconds, so callers run these functions off the Tk thread and off
the server's event loop. The envelope format is described in docs/protocol.md,
"End-to-end envelope".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import rsa

from chat_tk.errors import (
    CryptoError,
    DecryptionFailed,
    EnvelopeMismatch,
    SignatureInvalid,
    WrongRecipientKey,
)
from chat_tk.protocol import name_key

ENVELOPE_ENCODING = "chat_tk-rsa-blocks-v1"
DEFAULT_KEY_BITS = 2048
MIN_SERVER_KEY_BITS = 2048
# Smaller keys would make the envelope of a MAX_TEXT_BYTES text overflow a msg frame.
MIN_PEER_KEY_BITS = 1024
# The largest text a message may carry, in UTF-8 bytes: with a 2048-bit key its
# envelope (two encrypted copies, base64) stays inside the 64,000-byte msg frame.
MAX_TEXT_BYTES = 20_000
PKCS1_PADDING_BYTES = 11
# What the envelope may take of a msg frame; the rest is room for the outer fields
# (two 32-character names of up to 4 bytes each, a 64-character id, the encoding).
MAX_PAYLOAD_CHARS = 63_000
_SIGNATURE_HASH = "SHA-256"
_SIGNED_PREFIX = b"chat_tk envelope v1\n"


class TextTooLong(CryptoError):
    """The text does not fit in one message; the user is told before sending."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"too long: {size} of {limit} bytes")
        self.size = size
        self.limit = limit


class PasswordTooLong(CryptoError):
    """The password does not fit in one RSA block with the server's nonce."""


@dataclass(frozen=True)
class PublicKey:
    """A public key and the PEM text it came from (kept verbatim for comparison)."""

    pem: str
    key: rsa.PublicKey

    @property
    def bits(self) -> int:
        return self.key.n.bit_length()

    @property
    def block_bytes(self) -> int:
        return rsa.common.byte_size(self.key.n)

    def fingerprint(self) -> str:
        return fingerprint(self)


@dataclass(frozen=True)
class KeyPair:
    """A private key with its public half."""

    public: PublicKey
    private: rsa.PrivateKey

    @property
    def private_pem(self) -> str:
        return self.private.save_pkcs1().decode("ascii")


# --------------------------------------------------------------------------- keys


def generate_key_pair(bits: int = DEFAULT_KEY_BITS) -> KeyPair:
    """Make a new key pair (1 to 15 s for 2048 bits in pure Python)."""
    public, private = rsa.newkeys(bits)
    pem = public.save_pkcs1().decode("ascii")
    return KeyPair(PublicKey(pem, public), private)


def load_public_key(pem: Any) -> PublicKey:
    """Parse a PKCS#1 PEM public key, raising CryptoError for anything else."""
    if not isinstance(pem, str):
        raise CryptoError("public key must be PEM text")
    try:
        key = rsa.PublicKey.load_pkcs1(pem.encode("ascii"))
    except (ValueError, UnicodeError, IndexError, TypeError) as exc:
        raise CryptoError("public key is not a PKCS#1 PEM RSA key") from exc
    except Exception as exc:  # pyasn1 raises its own error types for garbage
        raise CryptoError("public key is not a PKCS#1 PEM RSA key") from exc
    if key.n.bit_length() < MIN_PEER_KEY_BITS:
        raise CryptoError(f"public key is smaller than {MIN_PEER_KEY_BITS} bits")
    return PublicKey(pem, key)


def load_key_pair(private_pem: str) -> KeyPair:
    """Rebuild a key pair from its stored private PEM."""
    try:
        private = rsa.PrivateKey.load_pkcs1(private_pem.encode("ascii"))
    except Exception as exc:  # pyasn1 raises its own error types for garbage
        raise CryptoError("stored private key is unreadable") from exc
    public = rsa.PublicKey(private.n, private.e)
    return KeyPair(PublicKey(public.save_pkcs1().decode("ascii"), public), private)


def fingerprint(key: PublicKey) -> str:
    """A short, comparable safety number: SHA-256 of the DER key, 8 groups of 4."""
    digest = hashlib.sha256(key.key.save_pkcs1("DER")).hexdigest()[:32]
    return " ".join(digest[i : i + 4] for i in range(0, 32, 4))


# --------------------------------------------------------------------------- passwords


def seal_password(password: str, nonce: str, server_key: PublicKey) -> str:
    """Encrypt a password with the server's nonce so a captured login cannot be replayed."""
    plain = json.dumps({"password": password, "nonce": nonce}, ensure_ascii=False)
    data = plain.encode("utf-8")
    room = server_key.block_bytes - PKCS1_PADDING_BYTES
    if len(data) > room:
        overhead = (
            len(data) - len(json.dumps(password, ensure_ascii=False).encode()) + 2
        )
        raise PasswordTooLong(
            f"The password is too long: this server takes at most {room - overhead} "
            "bytes of UTF-8 (about half as many letters outside the Latin alphabet)."
        )
    return base64.b64encode(rsa.encrypt(data, server_key.key)).decode("ascii")


def open_sealed_password(sealed: str, nonce: str, server_pair: KeyPair) -> str:
    """Return the password inside a seal made for this connection's nonce."""
    try:
        ciphertext = base64.b64decode(sealed, validate=True)
        plain = json.loads(rsa.decrypt(ciphertext, server_pair.private).decode("utf-8"))
        password = plain["password"]
        sealed_nonce = plain["nonce"]
    except (
        binascii.Error,
        ValueError,
        KeyError,
        TypeError,
        rsa.DecryptionError,
    ) as exc:
        raise DecryptionFailed("sealed password does not open") from exc

    if not isinstance(password, str) or not isinstance(sealed_nonce, str):
        raise DecryptionFailed("sealed password is malformed")
    if not hmac.compare_digest(sealed_nonce.encode(), nonce.encode()):
        raise DecryptionFailed("sealed password was made for another connection")
    return password


# --------------------------------------------------------------------------- envelopes


@dataclass(frozen=True)
class OpenedMessage:
    """What an envelope held once its signature and headers were checked."""

    text: str
    sent_time: float


def check_text_length(text: str) -> int:
    """Return the UTF-8 size of a text, raising TextTooLong past MAX_TEXT_BYTES."""
    size = len(text.encode("utf-8"))
    if size > MAX_TEXT_BYTES:
        raise TextTooLong(size, MAX_TEXT_BYTES)
    return size


def _encrypt_blocks(data: bytes, key: PublicKey) -> bytes:
    room = key.block_bytes - PKCS1_PADDING_BYTES
    chunks = [data[i : i + room] for i in range(0, len(data), room)] or [b""]
    return b"".join(rsa.encrypt(chunk, key.key) for chunk in chunks)


def _decrypt_blocks(data: bytes, pair: KeyPair) -> bytes:
    size = pair.public.block_bytes
    if not data or len(data) % size:
        raise WrongRecipientKey(
            "ciphertext does not fit your key (made for another key?)"
        )
    try:
        return b"".join(
            rsa.decrypt(data[i : i + size], pair.private)
            for i in range(0, len(data), size)
        )
    except rsa.DecryptionError as exc:
        raise WrongRecipientKey("ciphertext does not open with your key") from exc


def _signed_bytes(
    sender: str, recipient: str, message_id: str, r: bytes, s: bytes
) -> bytes:
    header = json.dumps([name_key(sender), name_key(recipient), message_id])
    lengths = f"{len(r)} {len(s)}\n".encode("ascii")
    return _SIGNED_PREFIX + header.encode("utf-8") + b"\n" + lengths + r + s


def seal_envelope(
    text: str,
    sender: str,
    recipient: str,
    message_id: str,
    sent_time: float,
    sender_pair: KeyPair,
    recipient_key: PublicKey,
) -> str:
    """Encrypt a text for the recipient and for the sender, then sign both copies."""
    check_text_length(text)
    header = json.dumps(
        {"from": sender, "to": recipient, "id": message_id, "time": sent_time},
        ensure_ascii=False,
    )
    inner = header.encode("utf-8") + b"\n" + text.encode("utf-8")

    for_recipient = _encrypt_blocks(inner, recipient_key)
    for_sender = _encrypt_blocks(inner, sender_pair.public)
    signed = _signed_bytes(sender, recipient, message_id, for_recipient, for_sender)
    signature = rsa.sign(signed, sender_pair.private, _SIGNATURE_HASH)

    envelope = {
        "v": 1,
        "r": base64.b64encode(for_recipient).decode("ascii"),
        "s": base64.b64encode(for_sender).decode("ascii"),
        "sig": base64.b64encode(signature).decode("ascii"),
    }
    payload = json.dumps(envelope, separators=(",", ":"))
    if len(payload) > MAX_PAYLOAD_CHARS:  # only with keys smaller than 1024 bits
        raise TextTooLong(len(text.encode("utf-8")), MAX_TEXT_BYTES)
    return payload


def _parse_envelope(payload: str) -> tuple[bytes, bytes, bytes]:
    try:
        envelope = json.loads(payload)
        if not isinstance(envelope, dict) or envelope.get("v") != 1:
            raise ValueError("unknown envelope version")
        return (
            base64.b64decode(envelope["r"], validate=True),
            base64.b64decode(envelope["s"], validate=True),
            base64.b64decode(envelope["sig"], validate=True),
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DecryptionFailed(
            "the envelope is not valid (bad JSON or base64)"
        ) from exc


def open_envelope(
    payload: str,
    sender: str,
    recipient: str,
    message_id: str,
    sender_key: PublicKey,
    my_pair: KeyPair,
    i_am_sender: bool,
) -> OpenedMessage:
    """Check the signature with the sender's pinned key, then decrypt and cross-check.

    The outer `sender`, `recipient` and `message_id` come from the frame the server
    relayed; they must match what the sender signed and sealed inside.
    """
    for_recipient, for_sender, signature = _parse_envelope(payload)
    signed = _signed_bytes(sender, recipient, message_id, for_recipient, for_sender)
    try:
        used_hash = rsa.verify(signed, signature, sender_key.key)
    except rsa.VerificationError as exc:
        raise SignatureInvalid("signature does not match the sender's key") from exc
    if used_hash != _SIGNATURE_HASH:
        raise SignatureInvalid(f"signature uses {used_hash}, not {_SIGNATURE_HASH}")

    inner = _decrypt_blocks(for_sender if i_am_sender else for_recipient, my_pair)
    header_bytes, _, text_bytes = inner.partition(b"\n")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
        text = text_bytes.decode("utf-8")
        inner_from, inner_to = str(header["from"]), str(header["to"])
        inner_id, sent_time = str(header["id"]), float(header["time"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DecryptionFailed("the decrypted content is malformed") from exc

    outer = (name_key(sender), name_key(recipient), message_id)
    if (name_key(inner_from), name_key(inner_to), inner_id) != outer:
        raise EnvelopeMismatch("inner and outer sender, recipient or id disagree")
    return OpenedMessage(text, sent_time)


def sign_notice(data: bytes, pair: KeyPair) -> str:
    """Sign a small control notice (for example 'I could not decrypt message X')."""
    return base64.b64encode(rsa.sign(data, pair.private, _SIGNATURE_HASH)).decode(
        "ascii"
    )


def verify_notice(data: bytes, signature: str, key: PublicKey) -> None:
    """Raise SignatureInvalid unless `signature` is the key owner's over `data`."""
    try:
        raw = base64.b64decode(signature, validate=True)
        used_hash = rsa.verify(data, raw, key.key)
    except (binascii.Error, ValueError, rsa.VerificationError) as exc:
        raise SignatureInvalid("notice signature does not match") from exc
    if used_hash != _SIGNATURE_HASH:
        raise SignatureInvalid(f"notice signature uses {used_hash}")
