"""A token bucket, shared by the server (which enforces rates) and the client (which
keeps under them). Standard library only; imports nothing from the package."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """Allows `rate` events a second on average and bursts of `burst`."""

    rate: float
    burst: float
    tokens: float = -1.0
    updated: float = field(default_factory=time.monotonic)

    def _refill(self, now: float) -> None:
        if self.tokens < 0:
            self.tokens = self.burst
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def allow(self, now: float | None = None) -> bool:
        """Take a token if one is there."""
        self._refill(time.monotonic() if now is None else now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def seconds_until_allowed(self, now: float | None = None) -> float:
        """How long to wait before allow() would succeed (0 when it would now)."""
        self._refill(time.monotonic() if now is None else now)
        return max(0.0, (1 - self.tokens) / self.rate)
