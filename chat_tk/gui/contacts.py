"""The contact list: who you talk to, who is online, unread counts, changed keys.

This module owns the Treeview on the left of the main window and the selection in
it. It only draws what the client reports in ContactsChanged.
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable
from dataclasses import replace
from tkinter import ttk

from chat_tk.client.events import Contact
from chat_tk.gui import theme
from chat_tk.protocol import name_key

log = logging.getLogger(__name__)

ONLINE_MARK = "●"
OFFLINE_MARK = "○"
KEY_CHANGED_MARK = "⚠"
LIST_WIDTH_PIXELS = 210
UNREAD_COLUMN_PIXELS = 44


def contact_label(contact: Contact) -> str:
    mark = ONLINE_MARK if contact.online else OFFLINE_MARK
    warning = f"  {KEY_CHANGED_MARK}" if contact.key_changed else ""
    return f"{mark}  {contact.name}{warning}"


class ContactList(ttk.Frame):
    """Contacts sorted by name, ignoring case; calls on_select(name or None)."""

    def __init__(
        self, master: tk.Misc, on_select: Callable[[str | None], None]
    ) -> None:
        super().__init__(master, padding=(theme.PAD, theme.PAD, 0, theme.PAD))
        self._on_select_callback = on_select
        self._contacts: dict[str, Contact] = {}

        ttk.Label(self, text="Contacts", style="Title.TLabel").grid(
            row=0, column=0, sticky="w", pady=(0, theme.SMALL_PAD)
        )
        self.tree = ttk.Treeview(
            self, columns=("unread",), show="tree", selectmode="browse"
        )
        self.tree.column(
            "#0", width=LIST_WIDTH_PIXELS - UNREAD_COLUMN_PIXELS, stretch=True
        )
        self.tree.column(
            "unread", width=UNREAD_COLUMN_PIXELS, anchor="e", stretch=False
        )
        self.tree.tag_configure("offline", foreground=theme.MUTED)
        self.tree.tag_configure("unread", font=theme.font_spec(self, 0, "bold"))
        self.tree.tag_configure("key_changed", foreground=theme.WARNING_TEXT)
        self.tree.grid(row=1, column=0, sticky="nsew")
        self.tree.bind("<<TreeviewSelect>>", self._on_tree_select)

        self.buttons = ttk.Frame(self, padding=(0, theme.SMALL_PAD, 0, 0))
        self.buttons.grid(row=2, column=0, sticky="ew")
        self.rowconfigure(1, weight=1)
        self.columnconfigure(0, weight=1)

    # ------------------------------------------------------------------ reading

    def names(self) -> list[str]:
        return [self._contacts[iid].name for iid in self.tree.get_children()]

    def contact(self, name: str) -> Contact | None:
        return self._contacts.get(name_key(name))

    def selected(self) -> str | None:
        chosen = self.tree.selection()
        return self._contacts[chosen[0]].name if chosen else None

    def row_text(self, name: str) -> tuple[str, str]:
        """(label, unread) as drawn for a contact (for tests and debugging)."""
        iid = name_key(name)
        return str(self.tree.item(iid, "text")), str(self.tree.set(iid, "unread"))

    # ------------------------------------------------------------------ changing

    def set_contacts(self, contacts: tuple[Contact, ...]) -> None:
        """Redraw rows in place, so the selection and scroll position survive."""
        before = self.selected()
        ordered = sorted(contacts, key=lambda c: (name_key(c.name), c.name))
        wanted = {name_key(c.name): c for c in ordered}
        for iid in self.tree.get_children():
            if iid not in wanted:
                self.tree.delete(iid)

        for position, (iid, contact) in enumerate(wanted.items()):
            tags = []
            if not contact.online:
                tags.append("offline")
            if contact.unread:
                tags.append("unread")
            if contact.key_changed:
                tags.append("key_changed")
            values = (str(contact.unread) if contact.unread else "",)
            if self.tree.exists(iid):
                self.tree.item(
                    iid, text=contact_label(contact), values=values, tags=tags
                )
                self.tree.move(iid, "", position)
            else:
                self.tree.insert(
                    "",
                    position,
                    iid=iid,
                    text=contact_label(contact),
                    values=values,
                    tags=tags,
                )
        self._contacts = wanted

        if before is not None and self.selected() is None:
            self._on_select_callback(None)

    def show_all_offline(self) -> None:
        """Draw everyone as offline: while we are not connected nobody's presence is known."""
        self.set_contacts(
            tuple(replace(c, online=False) for c in self._contacts.values())
        )

    def select(self, name: str) -> None:
        iid = name_key(name)
        if self.tree.exists(iid):
            self.tree.selection_set(iid)
            self.tree.focus(iid)
            self.tree.see(iid)

    def select_next(self, step: int) -> None:
        """Move the selection by `step` rows, stopping at either end."""
        rows = self.tree.get_children()
        if not rows:
            return
        chosen = self.tree.selection()
        index = rows.index(chosen[0]) + step if chosen else 0
        index = max(0, min(len(rows) - 1, index))
        self.select(self._contacts[rows[index]].name)

    def _on_tree_select(self, junk_event: object = None) -> None:
        self._on_select_callback(self.selected())
