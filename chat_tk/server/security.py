"""Password hashing and the rate limits the server enforces; no sockets, no sqlite.

Hashes are salted scrypt strings that carry their own parameters, so they can be
strengthened later without breaking stored accounts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque

from chat_tk.ratelimit import TokenBucket

__all__ = ["FailureThrottle", "TokenBucket", "hash_password", "verify_password"]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16

# A hash computed for names that do not exist, so a wrong name costs the same time
# as a wrong password (docs/protocol.md, "Session").
_DUMMY_SALT = secrets.token_bytes(SALT_BYTES)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=64 * 1024 * 1024,
        dklen=32,
    )


def hash_password(password: str) -> str:
    """A self-describing salted scrypt hash: 'scrypt$n$r$p$salt$digest' in hex."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    """Compare in constant time; with no stored hash, spend the same work and fail."""
    if stored is None:
        _scrypt(password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P)
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        computed = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))


class FailureThrottle:
    """Counts failures per key in a sliding window and locks the key out past a limit.

    Used for login attempts per account name and per address. Keys that exist and
    keys that do not are treated the same way, so the answer reveals nothing.
    """

    def __init__(
        self, limit: int, window_seconds: float, lockout_seconds: float
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.lockout_seconds = lockout_seconds
        self._failures: dict[str, deque[float]] = {}
        self._locked_until: dict[str, float] = {}

    def is_locked(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[key]
            return False
        return True

    def record_failure(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        failures = self._failures.setdefault(key, deque())
        failures.append(now)
        while failures and failures[0] < now - self.window_seconds:
            failures.popleft()
        if len(failures) >= self.limit:
            self._locked_until[key] = now + self.lockout_seconds
            failures.clear()
        self._forget_old(now)

    def _forget_old(self, now: float) -> None:
        """Keep memory bounded when many names are tried."""
        if len(self._failures) < 10_000:
            return
        stale = [
            k
            for k, v in self._failures.items()
            if not v or v[-1] < now - self.window_seconds
        ]
        for key in stale:
            del self._failures[key]
