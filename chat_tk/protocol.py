"""The JIM wire protocol as a sans-IO layer: framing, names and request validation.

Nothing here touches a socket, a thread or a database; both ends feed it bytes and
dicts. Section numbers in comments refer to docs/protocol.md.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from chat_tk.errors import FatalFrameError, LocalProtocolError, RemoteProtocolError

# Limits (docs/protocol.md, "Limits").
MAX_FRAME_BYTES = 65_536
MAX_CLIENT_MSG_FRAME_BYTES = 64_000
MAX_NAME_CHARS = 32
MAX_STATUS_CHARS = 200
MAX_PASSWORD_CHARS = 128
MAX_PUBLIC_KEY_CHARS = 4_096
MAX_ENCODING_CHARS = 64
MAX_ALERT_CHARS = 500
MESSAGE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")

# Answer codes (docs/protocol.md, "Answers").
NOTICE = 100
OK = 200
CREATED = 201
ACCEPTED = 202
BAD_REQUEST = 400
UNAUTHORIZED = 401
WRONG_CREDENTIALS = 402
FORBIDDEN = 403
NOT_FOUND = 404
CONFLICT = 409
TOO_MANY = 429
SERVER_ERROR = 500
PUBLIC_KEY = 511


# Actions a client may send before a successful authenticate (section "Session", 3).
ACTIONS_BEFORE_LOGIN = frozenset({"register", "authenticate", "exit", "quit", "probe"})


# --------------------------------------------------------------------------- framing


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message as a JSON Lines frame, refusing what the peer must refuse."""
    try:
        text = json.dumps(
            message, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        frame = text.encode("utf-8") + b"\n"
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError is a ValueError
        raise LocalProtocolError(f"message cannot be encoded: {exc}") from exc

    if len(frame) > MAX_FRAME_BYTES:
        raise LocalProtocolError(
            f"frame of {len(frame)} bytes exceeds {MAX_FRAME_BYTES}"
        )
    return frame


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


def _has_lone_surrogate(value: Any) -> bool:
    """True when a string anywhere in the value holds half of a UTF-16 pair.

    JSON escapes such as \\ud800 decode to characters that cannot be written back as
    UTF-8, so such a frame could be accepted and then fail when stored or relayed.
    """
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(
            _has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items()
        )
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


def parse_frame(line: bytes) -> dict[str, Any]:
    """Turn one complete frame (without its newline) into a dict.

    Raises RemoteProtocolError (code 400) for anything that is not a JSON object;
    the connection stays usable after that.
    """
    try:
        text = line.decode("utf-8")
        value = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite_float
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RemoteProtocolError(
            f"frame is not valid JSON: {type(exc).__name__}"
        ) from exc

    if not isinstance(value, dict):
        raise RemoteProtocolError("frame is not a JSON object")
    if "\\u" in text and _has_lone_surrogate(value):
        raise RemoteProtocolError("frame holds an unpaired UTF-16 surrogate escape")
    return value


@dataclass(frozen=True)
class BadFrame:
    """A complete frame that did not parse; answer 400 and keep the connection."""

    reason: str


class FrameDecoder:
    """Collects bytes from a stream and yields whole frames.

    Bytes are only decoded once a newline completes a frame, so a multi-byte
    character split between two reads arrives intact.
    """

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._scanned = 0

    @property
    def has_partial_frame(self) -> bool:
        """True while bytes of an unfinished frame wait for their newline."""
        return bool(self._buffer)

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any] | BadFrame]:
        """Add bytes; return every frame they complete, in order.

        Raises FatalFrameError when a frame grows past the limit: the stream can no
        longer be trusted to resynchronise, so the caller answers the frames that came
        before it (`complete_frames`), then 400, and closes.
        """
        self._buffer += data
        frames: list[dict[str, Any] | BadFrame] = []

        while True:
            newline = self._buffer.find(b"\n", self._scanned)
            if newline < 0:
                self._scanned = len(self._buffer)
                if len(self._buffer) >= self.max_frame_bytes:
                    raise FatalFrameError("frame too long", complete_frames=frames)
                return frames

            if newline + 1 > self.max_frame_bytes:
                raise FatalFrameError("frame too long", complete_frames=frames)

            line = bytes(self._buffer[:newline])
            del self._buffer[: newline + 1]
            self._scanned = 0
            try:
                frames.append(parse_frame(line.rstrip(b"\r")))
            except RemoteProtocolError as exc:
                frames.append(BadFrame(str(exc)))


# --------------------------------------------------------------------------- answers


def answer(
    code: int, text: Any = None, request_id: str | None = None
) -> dict[str, Any]:
    """Build an answer frame: `alert` for 1xx/2xx/511, `error` for the other codes."""
    key = "alert" if 100 <= code < 300 or code == PUBLIC_KEY else "error"
    message: dict[str, Any] = {"response": code}
    if text is not None or key == "error":
        message[key] = text if text is not None else ""
    if request_id is not None:
        message["id"] = request_id
    return message


# --------------------------------------------------------------------------- names

_NAME_PUNCTUATION = frozenset("_-.")
_SCRIPT_NEUTRAL = frozenset("0123456789_-.")


# Scripts that are written together in one name (Japanese, Korean with Hanja).
_SCRIPT_FAMILIES = {
    "HIRAGANA": "CJK",
    "KATAKANA": "CJK",
    "KATAKANA-HIRAGANA": "CJK",  # the long vowel mark
    "IDEOGRAPHIC": "CJK",  # the iteration mark in names such as 佐々木
    "HANGUL": "CJK",
}

# Code points that render as nothing (Unicode's Default_Ignorable_Code_Point) but are
# letters or marks by category; a name holding one would look like another name.
_INVISIBLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)


def _is_invisible(char: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in _INVISIBLE_RANGES)


# Letters of other alphabets that look like Latin ones; two names with the same
# skeleton would be confused on screen, so the server lets only the first exist.
_LOOKALIKES = str.maketrans(
    "аеорсухіјѕԁԛԝһӏʏνοрτυχκαιβεηζ01",
    "aeopcyxijsdqwhlyvoptuxkaibenzol",
)


def _char_script(char: str) -> str:
    """A coarse script label from the Unicode name (LATIN, CYRILLIC, GREEK, ...)."""
    if char in _SCRIPT_NEUTRAL or unicodedata.category(char) == "Nd":
        return ""
    script = unicodedata.name(char, "").split(" ", 1)[0]
    return _SCRIPT_FAMILIES.get(script, script)


def confusable_skeleton(name: str) -> str:
    """A form of the name in which look-alike letters and digits coincide."""
    folded = unicodedata.normalize("NFKC", name_key(name)).translate(_LOOKALIKES)
    return folded.replace("rn", "m").replace("_", "-").replace(".", "-")


def normalize_account_name(raw: Any) -> str:
    """Return the NFC form of an account name, or raise RemoteProtocolError (400).

    The rule (docs/protocol.md, "Account names"): 1 to 32 characters, each a letter,
    a mark, a decimal digit, `_`, `-` or `.`, the first a letter or digit, and all
    letters from one script, so a name cannot impersonate another with look-alike
    characters from a second alphabet.
    """
    if not isinstance(raw, str):
        raise RemoteProtocolError("account name must be a string")
    name = unicodedata.normalize("NFC", raw)
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise RemoteProtocolError(
            f"account name must be 1 to {MAX_NAME_CHARS} characters"
        )

    for char in name:
        category = unicodedata.category(char)
        allowed = category[0] in "LM" or category == "Nd" or char in _NAME_PUNCTUATION
        if not allowed or _is_invisible(char):
            raise RemoteProtocolError(f"account name may not contain {char!r}")

    first = unicodedata.category(name[0])
    if not (first[0] == "L" or first == "Nd"):
        raise RemoteProtocolError("account name must start with a letter or a digit")

    scripts = {_char_script(c) for c in name if unicodedata.category(c)[0] == "L"}
    if len(scripts) > 1:
        raise RemoteProtocolError("account name mixes letters of different alphabets")
    return name


def name_key(name: str) -> str:
    """The comparison key of a valid name: names are equal ignoring case."""
    return unicodedata.normalize("NFC", name.casefold())


# --------------------------------------------------------------------------- fields


def _require_str(message: dict[str, Any], field: str, max_chars: int) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise RemoteProtocolError(f"'{field}' must be a string")
    if len(value) > max_chars:
        raise RemoteProtocolError(f"'{field}' is longer than {max_chars} characters")
    return value


def _require_time(message: dict[str, Any], required: bool) -> float | None:
    """Check `time`: a finite number when present (section "Transport")."""
    if "time" not in message:
        if required:
            raise RemoteProtocolError("'time' is missing")
        return None
    value = message["time"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RemoteProtocolError("'time' must be a number")
    try:
        seconds = float(value)
    except OverflowError:
        raise RemoteProtocolError("'time' is out of range") from None
    if not math.isfinite(seconds):
        raise RemoteProtocolError("'time' must be a finite number")
    return seconds


def request_id_of(message: dict[str, Any]) -> str | None:
    """The `id` to echo in the answer, when it is a sane string."""
    value = message.get("id")
    if isinstance(value, str) and len(value) <= 64:
        return value
    return None


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Register:
    account_name: str
    sealed_password: str


@dataclass(frozen=True)
class Authenticate:
    account_name: str
    sealed_password: str


@dataclass(frozen=True)
class Presence:
    account_name: str
    status: str
    public_key: str | None


@dataclass(frozen=True)
class GetContacts:
    pass


@dataclass(frozen=True)
class AddContact:
    contact: str


@dataclass(frozen=True)
class DelContact:
    contact: str


@dataclass(frozen=True)
class GetUsers:
    pass


@dataclass(frozen=True)
class GetOnline:
    pass


@dataclass(frozen=True)
class PubkeyNeed:
    account_name: str


@dataclass(frozen=True)
class Probe:
    pass


@dataclass(frozen=True)
class Exit:
    pass


@dataclass(frozen=True)
class SendMessage:
    message_id: str
    sender: str
    recipient: str
    encoding: str
    payload: str
    frame: dict[str, Any]


@dataclass(frozen=True)
class Ack:
    message_id: str


Request = (
    Register
    | Authenticate
    | Presence
    | GetContacts
    | AddContact
    | DelContact
    | GetUsers
    | GetOnline
    | PubkeyNeed
    | Probe
    | Exit
    | SendMessage
    | Ack
)


class UnknownAction(RemoteProtocolError):
    """The action is not one this server knows (400 after login, 401 before)."""


class WrongAccount(RemoteProtocolError):
    """A field marked ME names someone else (403)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=FORBIDDEN)


def _login_request(message: dict[str, Any]) -> tuple[str, str]:
    user = message.get("user")
    if not isinstance(user, dict):
        raise RemoteProtocolError("'user' must be an object")
    name = normalize_account_name(user.get("account_name"))
    sealed = _require_str(user, "password", 2_048)
    return name, sealed


def _contact_field(message: dict[str, Any], me: str | None) -> str:
    if "user_login" in message:
        _check_me(message, "user_login", me)
    return normalize_account_name(message.get("user_id"))


def _check_me(message: dict[str, Any], field: str, me: str | None) -> None:
    value = normalize_account_name(message.get(field))
    if me is None or name_key(value) != name_key(me):
        raise WrongAccount(f"'{field}' must name the logged-in account")


def parse_request(message: dict[str, Any], me: str | None = None) -> Request:
    """Validate a client frame and return the typed request.

    `me` is the logged-in account (None before login). Raises RemoteProtocolError
    carrying the answer code: 400 for a malformed field, 403 for a field that must
    name the caller and does not, UnknownAction for an action we do not know.
    """
    action = message.get("action")
    if not isinstance(action, str):
        raise UnknownAction("'action' is missing")
    _require_time(message, required=False)
    if "id" in message and request_id_of(message) is None:
        raise RemoteProtocolError("'id' must be a string of at most 64 characters")

    if action in ("register", "authenticate"):
        name, sealed = _login_request(message)
        return (
            Register(name, sealed)
            if action == "register"
            else Authenticate(name, sealed)
        )
    if action in ("exit", "quit"):
        return Exit()
    if action == "probe":
        return Probe()

    if action == "presence":
        user = message.get("user")
        if not isinstance(user, dict):
            raise RemoteProtocolError("'user' must be an object")
        _check_me(user, "account_name", me)
        status = user.get("status", "")
        if not isinstance(status, str) or len(status) > MAX_STATUS_CHARS:
            raise RemoteProtocolError(
                f"'status' must be a string of at most {MAX_STATUS_CHARS}"
            )
        key = user.get("public_key")
        if key is not None:
            key = _require_str(user, "public_key", MAX_PUBLIC_KEY_CHARS)
        return Presence(me or "", status, key)

    if action == "get_contacts":
        _check_me(message, "user_login", me)
        return GetContacts()
    if action == "add_contact":
        return AddContact(_contact_field(message, me))
    if action == "del_contact":
        return DelContact(_contact_field(message, me))
    if action == "get_users":
        return GetUsers()
    if action == "get_online":
        return GetOnline()
    if action == "pubkey_need":
        return PubkeyNeed(normalize_account_name(message.get("user_login")))

    if action == "msg":
        return _parse_send(message, me)
    if action == "ack":
        message_id = message.get("id")
        if not isinstance(message_id, str) or not MESSAGE_ID_PATTERN.fullmatch(
            message_id
        ):
            raise RemoteProtocolError(
                "'id' must be 16 to 64 characters of A-Z a-z 0-9 _ -"
            )
        return Ack(message_id)

    raise UnknownAction(f"unknown action {action[:40]!r}")


def _parse_send(message: dict[str, Any], me: str | None) -> SendMessage:
    """Check a `msg` frame (section "Direct messages")."""
    message_id = message.get("id")
    if not isinstance(message_id, str) or not MESSAGE_ID_PATTERN.fullmatch(message_id):
        raise RemoteProtocolError("'id' must be 16 to 64 characters of A-Z a-z 0-9 _ -")
    _require_time(message, required=True)
    encoding = _require_str(message, "encoding", MAX_ENCODING_CHARS)
    payload = _require_str(message, "message", MAX_CLIENT_MSG_FRAME_BYTES)
    recipient = normalize_account_name(message.get("to"))
    sender = normalize_account_name(message.get("from"))
    if me is None or name_key(sender) != name_key(me):
        raise WrongAccount("'from' must name the logged-in account")

    # Measured as the server will write it, so the relayed copy (plus server_time)
    # always fits in a frame.
    try:
        size = len(encode(message))
    except LocalProtocolError:
        size = MAX_FRAME_BYTES + 1
    if size > MAX_CLIENT_MSG_FRAME_BYTES:
        raise RemoteProtocolError(
            f"a msg frame may have at most {MAX_CLIENT_MSG_FRAME_BYTES} bytes"
        )
    return SendMessage(message_id, me, recipient, encoding, payload, message)


# --------------------------------------------------------------------------- client side


def client_message(action: str, time: float, **fields: Any) -> dict[str, Any]:
    """A request frame as the client sends it."""
    message: dict[str, Any] = {"action": action, "time": time}
    message.update(fields)
    return message
