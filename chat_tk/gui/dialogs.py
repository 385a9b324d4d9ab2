"""Small windows opened from the main window: add a contact, who is online, safety numbers.

This module owns those Toplevels. None of them is modal: the conversation goes on
while they are open, and the main window feeds them the answers that arrive.
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable, Iterable
from tkinter import ttk
from typing import TypeGuard, TypeVar

from chat_tk.gui import theme
from chat_tk.protocol import name_key

log = logging.getLogger(__name__)

LIST_ROWS = 10
DIALOG_OFFSET_PIXELS = 60


class SmallDialog(tk.Toplevel):
    """A non-modal window placed over its parent; Escape closes it."""

    def __init__(self, parent: tk.Misc, title: str) -> None:
        super().__init__(parent)
        self.title(title)
        self.transient(parent.winfo_toplevel())
        top = parent.winfo_toplevel()
        self.geometry(
            f"+{top.winfo_rootx() + DIALOG_OFFSET_PIXELS}+{top.winfo_rooty() + DIALOG_OFFSET_PIXELS}"
        )
        self.body = ttk.Frame(self, padding=theme.PAD * 2)
        self.body.pack(fill="both", expand=True)
        self.bind("<Escape>", self._on_close)
        self.protocol("WM_DELETE_WINDOW", self._on_close)
        # Escape reaches the dialog only if the keyboard focus is in it; a dialog
        # with a field of its own moves the focus on to that field.
        self.focus_set()

    def _on_close(self, junk_event: object = None) -> None:
        self.destroy()


D = TypeVar("D", bound=SmallDialog)


def is_open(dialog: D | None) -> TypeGuard[D]:
    """True for a dialog that was opened and not closed since."""
    return dialog is not None and bool(dialog.winfo_exists())


def _fill_listbox(listbox: tk.Listbox, names: Iterable[str]) -> None:
    listbox.delete(0, "end")
    for name in names:
        listbox.insert("end", name)


class AddContactDialog(SmallDialog):
    """Pick a user the server knows, or type a name; calls add(name)."""

    def __init__(
        self,
        parent: tk.Misc,
        own_name: str,
        contacts: Iterable[str],
        known: Iterable[str],
        add: Callable[[str], None],
    ) -> None:
        super().__init__(parent, "Add contact")
        self._add_callback = add
        self._hidden = {name_key(own_name), *(name_key(c) for c in contacts)}

        ttk.Label(self.body, text="Account name").grid(row=0, column=0, sticky="w")
        self.name_entry = ttk.Entry(self.body, width=28)
        self.name_entry.grid(
            row=1, column=0, columnspan=2, sticky="ew", pady=(2, theme.PAD)
        )
        self.status_label = ttk.Label(
            self.body,
            text="Asking the server who has an account…",
            style="Muted.TLabel",
        )
        self.status_label.grid(row=2, column=0, columnspan=2, sticky="w")
        self.users_list = tk.Listbox(
            self.body, height=LIST_ROWS, activestyle="none", exportselection=False
        )
        self.users_list.grid(
            row=3, column=0, columnspan=2, sticky="nsew", pady=(2, theme.PAD)
        )
        self.add_button = ttk.Button(
            self.body, text="Add", command=self._on_add, default="active"
        )
        cancel = ttk.Button(self.body, text="Cancel", command=self._on_close)
        cancel.grid(row=4, column=0, sticky="e", padx=(0, theme.PAD))
        self.add_button.grid(row=4, column=1, sticky="e")
        self.body.columnconfigure(0, weight=1)
        self.body.rowconfigure(3, weight=1)

        self.set_users(known, final=False)
        self.users_list.bind("<<ListboxSelect>>", self._on_pick)
        self.users_list.bind("<Double-Button-1>", self._on_add)
        self.bind("<Return>", self._on_add)
        self.name_entry.focus_set()

    def set_users(self, names: Iterable[str], final: bool = True) -> None:
        shown = [n for n in names if name_key(n) not in self._hidden]
        _fill_listbox(self.users_list, shown)
        if final:
            text = (
                "Users on this server:" if shown else "Nobody else has an account yet."
            )
            self.status_label.configure(text=text)

    def users(self) -> list[str]:
        return [str(name) for name in self.users_list.get(0, "end")]

    def _on_pick(self, junk_event: object = None) -> None:
        chosen = self.users_list.curselection()  # type: ignore[no-untyped-call]  # untyped in typeshed
        if chosen:
            self.name_entry.delete(0, "end")
            self.name_entry.insert(0, str(self.users_list.get(chosen[0])))

    def _on_add(self, junk_event: object = None) -> None:
        name = self.name_entry.get().strip()
        if not name:
            self.status_label.configure(text="Type a name or pick one from the list.")
            return
        self._add_callback(name)
        self.destroy()


class OnlineDialog(SmallDialog):
    """The names the server says are online now."""

    def __init__(self, parent: tk.Misc) -> None:
        super().__init__(parent, "Who is online")
        self.status_label = ttk.Label(
            self.body, text="Asking the server…", style="Muted.TLabel"
        )
        self.status_label.grid(row=0, column=0, sticky="w")
        self.names_list = tk.Listbox(self.body, height=LIST_ROWS, activestyle="none")
        self.names_list.grid(row=1, column=0, sticky="nsew", pady=theme.PAD)
        ttk.Button(self.body, text="Close", command=self._on_close).grid(
            row=2, column=0, sticky="e"
        )
        self.body.columnconfigure(0, weight=1)
        self.body.rowconfigure(1, weight=1)

    def set_names(self, names: Iterable[str]) -> None:
        listed = sorted(names, key=name_key)
        _fill_listbox(self.names_list, listed)
        count = len(listed)
        self.status_label.configure(
            text=f"{count} online now:" if count else "Nobody is online."
        )

    def names(self) -> list[str]:
        return [str(name) for name in self.names_list.get(0, "end")]


class SafetyNumberDialog(SmallDialog):
    """Own and peer fingerprints to compare in person; accept a changed key here."""

    def __init__(
        self,
        parent: tk.Misc,
        own: str | None,
        peer: str | None,
        pinned: str | None,
        offered: str | None,
        accept: Callable[[], None],
    ) -> None:
        super().__init__(parent, "Safety numbers")
        self._accept_callback = accept
        self.accept_button: ttk.Button | None = None
        fixed = ("TkFixedFont", theme.BASE_FONT_POINTS + 1)
        row = 0

        def line(caption: str, value: str, style: str = "TLabel") -> None:
            nonlocal row
            ttk.Label(self.body, text=caption, style=style).grid(
                row=row, column=0, sticky="w"
            )
            ttk.Label(self.body, text=value, font=fixed).grid(
                row=row + 1, column=0, sticky="w", pady=(0, theme.PAD)
            )
            row += 2

        line("Your safety number", own or "(no key yet)")
        if peer is None:
            ttk.Label(
                self.body,
                text="Select a contact to see theirs too.",
                style="Muted.TLabel",
            ).grid(row=row, column=0, sticky="w")
            row += 1
        elif pinned is None:
            line(f"{peer}", f"no key known yet: {peer} has not logged in since joining")
        else:
            line(f"{peer} (the key you trust)", pinned)
        if peer is not None and offered is not None:
            line(f"{peer} now shows another key", offered, "Error.TLabel")
            ttk.Label(
                self.body,
                wraplength=420,
                justify="left",
                text=(
                    f"Messages to {peer} wait until you decide. Compare the new number "
                    f"with {peer} in person or on a call; accept it only if it matches."
                ),
            ).grid(row=row, column=0, sticky="w", pady=(0, theme.PAD))
            row += 1
            self.accept_button = ttk.Button(
                self.body, text="Accept new key", command=self._on_accept
            )
            self.accept_button.grid(row=row, column=0, sticky="w")
            row += 1
        ttk.Label(
            self.body,
            wraplength=420,
            justify="left",
            style="Muted.TLabel",
            text="Both of you see the same numbers when nobody sits in between.",
        ).grid(row=row, column=0, sticky="w", pady=(theme.PAD, 0))
        ttk.Button(self.body, text="Close", command=self._on_close).grid(
            row=row + 1, column=0, sticky="e", pady=(theme.PAD, 0)
        )

    def _on_accept(self, junk_event: object = None) -> None:
        self._accept_callback()
        self.destroy()
