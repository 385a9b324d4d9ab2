"""The message input under a conversation: typing, the byte counter and sending.

This module owns the draft. Enter sends and Shift+Enter starts a new line; a text
the client refuses stays in the box with the reason beside it.
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable
from tkinter import ttk

from chat_tk import crypto
from chat_tk.gui import theme

log = logging.getLogger(__name__)

INPUT_LINES = 3
# Where the refusal wraps before the composer has a width of its own.
ERROR_WRAP_PIXELS = 400


def byte_count_text(size: int, limit: int = crypto.MAX_TEXT_BYTES) -> str:
    return f"{size} / {limit} bytes"


class Composer(ttk.Frame):
    """send(text) returns None when the text was taken, or why it was refused."""

    def __init__(self, master: tk.Misc, send: Callable[[str], str | None]) -> None:
        super().__init__(
            master, padding=(theme.PAD, theme.SMALL_PAD, theme.PAD, theme.PAD)
        )
        self._send_callback = send
        self.byte_size = 0

        # width=1: the grid gives the box its width. Tk's default of 80 characters
        # would ask for more room than a small window has and push Send out of it.
        self.input = tk.Text(
            self,
            width=1,
            height=INPUT_LINES,
            wrap="word",
            undo=True,
            font=theme.font_spec(self),
            background=theme.INPUT_BACKGROUND,
            relief="flat",
            borderwidth=0,
            highlightthickness=1,
            highlightbackground=theme.BORDER,
            highlightcolor=theme.OWN_NAME,
            padx=theme.SMALL_PAD,
            pady=theme.SMALL_PAD,
        )
        self.send_button = ttk.Button(self, text="Send", command=self._on_send)
        self.counter_label = ttk.Label(self, style="Muted.TLabel")
        # The reason a text was refused gets a line of its own under the counter
        # and wraps there, so that neither cuts the other off.
        self.error_label = ttk.Label(
            self, style="Error.TLabel", justify="left", wraplength=ERROR_WRAP_PIXELS
        )
        self.hint_label = ttk.Label(
            self, text="Enter sends · Shift+Enter new line", style="Muted.TLabel"
        )
        self.input.grid(row=0, column=0, columnspan=2, sticky="ew")
        self.send_button.grid(row=0, column=2, sticky="ns", padx=(theme.PAD, 0))
        self.hint_label.grid(row=1, column=0, sticky="w", pady=(2, 0))
        self.counter_label.grid(row=1, column=1, columnspan=2, sticky="e", pady=(2, 0))
        self.error_label.grid(row=2, column=0, columnspan=3, sticky="ew", pady=(2, 0))
        self.error_label.grid_remove()
        theme.wrap_to_own_width(self.error_label, theme.PAD)
        self.columnconfigure(0, weight=1)

        self.input.bind("<Return>", self._on_return)
        self.input.bind("<KP_Enter>", self._on_return)
        self.input.bind("<Shift-Return>", self._on_shift_return)
        self.input.bind("<<Modified>>", self._on_modified)
        self._show_size()

    @property
    def draft(self) -> str:
        return self.input.get("1.0", "end-1c")

    @property
    def error_text(self) -> str:
        return str(self.error_label.cget("text"))

    def set_enabled(self, enabled: bool, reason: str = "") -> None:
        self.input.configure(
            state="normal" if enabled else "disabled",
            background=theme.INPUT_BACKGROUND if enabled else theme.DISABLED_BACKGROUND,
        )
        self.send_button.state(["!disabled"] if enabled else ["disabled"])
        if reason:
            self._show_error(reason)

    def set_draft(self, text: str) -> None:
        """Put another conversation's draft in the box (and forget any refusal)."""
        disabled = str(self.input.cget("state")) == "disabled"
        self.input.configure(state="normal")
        self.input.delete("1.0", "end")
        self.input.insert("1.0", text)
        if disabled:
            self.input.configure(state="disabled")
        self.input.edit_reset()
        self.input.edit_modified(False)
        self._show_error("")
        self._show_size()

    def _show_error(self, text: str) -> None:
        self.error_label.configure(text=text)
        if text:
            self.error_label.grid()
        else:
            self.error_label.grid_remove()

    def _on_return(self, junk_event: object = None) -> str:
        self._on_send()
        return "break"

    def _on_shift_return(self, junk_event: object = None) -> str:
        self.input.insert("insert", "\n")
        self.input.see("insert")
        return "break"

    def _on_send(self, junk_event: object = None) -> None:
        text = self.draft
        if not text.strip() or str(self.input.cget("state")) == "disabled":
            return
        problem = self._send_callback(text)
        if problem is not None:
            self._show_error(problem)
            return
        self._show_error("")
        self.input.delete("1.0", "end")
        self.input.edit_reset()

    def _on_modified(self, junk_event: object = None) -> None:
        # Clearing the flag fires <<Modified>> once more; that second call sees
        # the flag down and does nothing.
        if self.input.edit_modified():
            self.input.edit_modified(False)
            self._show_size()

    def _show_size(self) -> None:
        self.byte_size = len(self.draft.encode("utf-8"))
        too_long = self.byte_size > crypto.MAX_TEXT_BYTES
        self.counter_label.configure(
            text=byte_count_text(self.byte_size),
            style="Error.TLabel" if too_long else "Muted.TLabel",
        )
