"""The conversation pane: one contact's messages in a read-only Text, newest last.

This module owns how a message is written on screen (time, sender, text, delivery
mark) and keeps each message on one block of the Text, keyed by its seq, so that a
state change rewrites that block and a repeated event never adds a second copy.
"""

from __future__ import annotations

import bisect
import logging
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from chat_tk.client.display import STATE_MARKS, format_time
from chat_tk.gui import theme
from chat_tk.storage import client_store as cs
from chat_tk.storage.client_store import MessageRecord

log = logging.getLogger(__name__)

# Scrolled this close to the end, the view follows new messages; further up, the
# reader is looking at something older and is left alone.
FOLLOW_FRACTION = 0.999
# Wrapped lines and the later lines of a multi-line message start this far in, so
# that each message's first line (time and sender) stands out.
CONTINUATION_INDENT_PIXELS = 44
# Where the key-change banner wraps before the pane has a width of its own.
BANNER_WRAP_PIXELS = 400


def state_mark(record: MessageRecord) -> str:
    """The delivery mark after an outgoing message, with the reason when it failed."""
    if not record.outgoing:
        return ""
    mark = STATE_MARKS.get(record.state, record.state)
    return f"{mark} {record.problem}" if record.problem else mark


def sort_key(record: MessageRecord) -> tuple[float, int]:
    return (record.sort_time, record.seq)


class ConversationView(ttk.Frame):
    """Messages with one peer; call show() to switch peers and add() for news."""

    def __init__(self, master: tk.Misc, own_name: str) -> None:
        super().__init__(master)
        self.own_name = own_name
        self.peer: str | None = None
        self.shown: dict[int, MessageRecord] = {}
        self._order: list[tuple[float, int]] = []

        self.header = ttk.Label(
            self, style="Title.TLabel", padding=(theme.PAD, theme.PAD)
        )
        self.header.grid(row=0, column=0, columnspan=2, sticky="ew")
        self.key_banner = ttk.Label(
            self, style="Warning.TLabel", wraplength=BANNER_WRAP_PIXELS, justify="left"
        )
        # Warning.TLabel pads the text by theme.PAD on each side.
        theme.wrap_to_own_width(self.key_banner, 3 * theme.PAD)
        self.text = tk.Text(
            self,
            wrap="word",
            state="disabled",
            relief="flat",
            borderwidth=0,
            highlightthickness=0,
            padx=theme.PAD * 1.5,
            pady=theme.PAD,
            background=theme.CONVERSATION_BACKGROUND,
            font=theme.font_spec(self),
            cursor="arrow",
            spacing1=3,
            spacing3=3,
        )
        scrollbar = ttk.Scrollbar(self, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=scrollbar.set)
        self.text.grid(row=2, column=0, sticky="nsew")
        scrollbar.grid(row=2, column=1, sticky="ns")
        self.rowconfigure(2, weight=1)
        self.columnconfigure(0, weight=1)
        self._configure_tags()
        self.show_placeholder("Add a contact to start a conversation (Ctrl+N).")

    def _configure_tags(self) -> None:
        text = self.text
        text.tag_configure("block", lmargin2=CONTINUATION_INDENT_PIXELS)
        text.tag_configure(
            "continued",
            lmargin1=CONTINUATION_INDENT_PIXELS,
            lmargin2=CONTINUATION_INDENT_PIXELS,
        )
        text.tag_configure(
            "time", foreground=theme.MUTED, font=theme.font_spec(self, -1)
        )
        text.tag_configure(
            "own", foreground=theme.OWN_NAME, font=theme.font_spec(self, 0, "bold")
        )
        text.tag_configure(
            "peer", foreground=theme.PEER_NAME, font=theme.font_spec(self, 0, "bold")
        )
        text.tag_configure(
            "mark", foreground=theme.MUTED, font=theme.font_spec(self, -1)
        )
        text.tag_configure(
            "failed", foreground=theme.ERROR, font=theme.font_spec(self, -1)
        )
        text.tag_configure(
            "unreadable",
            foreground=theme.ERROR,
            font=theme.font_spec(self, 0, "italic"),
        )
        text.tag_configure(
            "warning",
            foreground=theme.WARNING_TEXT,
            background=theme.WARNING_BACKGROUND,
            lmargin1=CONTINUATION_INDENT_PIXELS,
            lmargin2=CONTINUATION_INDENT_PIXELS,
        )
        text.tag_configure(
            "placeholder", foreground=theme.MUTED, justify="center", spacing1=40
        )

    # ------------------------------------------------------------------ public

    def show_placeholder(self, message: str) -> None:
        self.peer = None
        self.header.configure(text="")
        self.key_banner.grid_remove()
        self._clear()
        self._edit(lambda: self.text.insert("end", message, ("placeholder",)))

    def show(self, peer: str, records: list[MessageRecord]) -> None:
        """Switch to `peer` and draw its history (oldest first, as history() gives it)."""
        self.peer = peer
        self.header.configure(text=peer)
        self._clear()
        self.add_many(records)
        self.text.see("end")

    def set_presence(self, presence: str | None) -> None:
        """Name the peer in the header, with a word such as "online" after it."""
        if self.peer is None:
            return
        suffix = f"  ·  {presence}" if presence else ""
        self.header.configure(text=self.peer + suffix)

    @property
    def title(self) -> str:
        return str(self.header.cget("text"))

    def set_key_warning(self, message: str | None) -> None:
        if message:
            self.key_banner.configure(text=message)
            self.key_banner.grid(row=1, column=0, columnspan=2, sticky="ew")
        else:
            self.key_banner.grid_remove()

    def add_many(self, records: list[MessageRecord]) -> None:
        """Draw new messages and redraw changed ones, following the end if we were there."""
        if not records:
            return
        following = self._at_end()
        self.text.configure(state="normal")
        try:
            for record in records:
                self._put(record)
        finally:
            self.text.configure(state="disabled")
        if following:
            self.text.see("end")

    def add_warning(self, message: str) -> None:
        following = self._at_end()
        self._edit(lambda: self.text.insert("end", f"⚠ {message}\n", ("warning",)))
        if following:
            self.text.see("end")

    def message_lines(self) -> list[str]:
        """The text of each drawn message block, in screen order (used by tests too)."""
        lines = []
        for _, seq in self._order:
            first, last = self.text.tag_ranges(f"m{seq}")[:2]
            lines.append(self.text.get(first, last).rstrip("\n"))
        return lines

    # ------------------------------------------------------------------ drawing

    def _clear(self) -> None:
        self.shown.clear()
        self._order.clear()
        self._edit(lambda: self.text.delete("1.0", "end"))
        for tag in self.text.tag_names():
            if tag.startswith("m") and tag[1:].isdigit():
                self.text.tag_delete(tag)

    def _edit(self, change: Callable[[], object]) -> None:
        self.text.configure(state="normal")
        try:
            change()
        finally:
            self.text.configure(state="disabled")

    def _at_end(self) -> bool:
        return self.text.yview()[1] >= FOLLOW_FRACTION

    def _put(self, record: MessageRecord) -> None:
        tag = f"m{record.seq}"
        if record.seq in self.shown:
            # Rewrite the block where it stands: a delivery mark changed, or a
            # message that could not be read has been opened after all.
            first = self.text.index(f"{tag}.first")
            self.text.delete(first, f"{tag}.last")
            self._insert_block(first, record)
            self.shown[record.seq] = record
            return

        key = sort_key(record)
        position = bisect.bisect(self._order, key)
        if position < len(self._order):
            index = self.text.index(f"m{self._order[position][1]}.first")
        else:
            index = self.text.index("end-1c")
        self._order.insert(position, key)
        self.shown[record.seq] = record
        self._insert_block(index, record)

    def _insert_block(self, index: str, record: MessageRecord) -> None:
        tags = ("block", f"m{record.seq}")
        sender = self.own_name if record.outgoing else record.peer
        pieces: list[tuple[str, tuple[str, ...]]] = [
            (format_time(record.sort_time) + "  ", ("time", *tags)),
            (sender + "  ", ("own" if record.outgoing else "peer", *tags)),
        ]
        if record.state == cs.UNREADABLE:
            reason = record.problem or "unknown reason"
            pieces.append((f"[could not be read: {reason}]", ("unreadable", *tags)))
        else:
            # Trailing blank lines would push the delivery mark onto a line of
            # its own; the stored text keeps them.
            shown = record.text.rstrip()
            first_line, newline, later_lines = shown.partition("\n")
            pieces.append((first_line + newline, tags))
            if later_lines:
                pieces.append((later_lines, ("continued", *tags)))
        mark = state_mark(record)
        if mark:
            style = "failed" if record.state in (cs.FAILED, cs.REJECTED) else "mark"
            pieces.append(("  " + mark, (style, *tags)))
        pieces.append(("\n", tags))
        rest: list[str | tuple[str, ...]] = [
            part for piece in pieces[1:] for part in piece
        ]
        self.text.insert(index, pieces[0][0], pieces[0][1], *rest)
