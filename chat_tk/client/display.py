"""How the interfaces word times and message states; shared by the GUI and console.

Plain functions and constants; no tkinter, no I/O.
"""

from __future__ import annotations

import time
import unicodedata

from chat_tk.storage import client_store as cs

STATE_MARKS = {
    cs.PENDING: "…",
    cs.STORED: "✓",
    cs.DELIVERED: "✓✓",
    cs.FAILED: "✗",
    cs.REJECTED: "✗",
}


def format_time(stamp: float, now: float | None = None) -> str:
    """HH:MM in local time, with the date in front when it is not today."""
    moment = time.localtime(stamp)
    today = time.localtime(now if now is not None else time.time())
    clock = f"{moment.tm_hour:02d}:{moment.tm_min:02d}"
    if moment[:3] == today[:3]:
        return clock
    month = time.strftime("%b", moment)
    if moment.tm_year == today.tm_year:
        return f"{moment.tm_mday} {month} {clock}"
    return f"{moment.tm_mday} {month} {moment.tm_year} {clock}"


def terminal_safe(text: str) -> str:
    """Text from other people with control and formatting characters made visible.

    A terminal obeys escape sequences, so a message could otherwise retitle the
    window, clear the screen or fake a status line. New lines and tabs are kept.
    """
    return "".join(
        char
        if char in "\n\t" or unicodedata.category(char) not in ("Cc", "Cf")
        else f"\\u{ord(char):04x}"
        for char in text
    )
