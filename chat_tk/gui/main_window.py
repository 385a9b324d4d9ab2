"""The main window: contacts on the left, the conversation and input on the right.

This module owns the logged-in session's screen: it routes each client event to
the view that shows it, turns menu commands and shortcuts into client calls, and
keeps the status bar. Closing it is the app's job (app.py).
"""

from __future__ import annotations

import logging
import tkinter as tk
from collections.abc import Callable
from dataclasses import replace
from tkinter import messagebox, ttk

from chat_tk import crypto
from chat_tk.client import events as ev
from chat_tk.client.core import ChatClient
from chat_tk.errors import ChatError
from chat_tk.gui import theme
from chat_tk.gui.background import HostingAttempt
from chat_tk.gui.composer import Composer
from chat_tk.gui.contacts import ContactList
from chat_tk.gui.conversation import ConversationView
from chat_tk.gui.dialogs import (
    AddContactDialog,
    OnlineDialog,
    SafetyNumberDialog,
    is_open,
)
from chat_tk.gui.login import LoginResult
from chat_tk.gui.polling import EventPoller, cancel_after
from chat_tk.protocol import name_key
from chat_tk.storage.client_store import MessageRecord

log = logging.getLogger(__name__)

WINDOW_SIZE = "960x640"
MIN_WIDTH_PIXELS = 640
MIN_HEIGHT_PIXELS = 420
NOTICE_SECONDS = 15
CONNECTED_COLOUR = theme.ONLINE
DISCONNECTED_COLOUR = "#d97706"
ENDED_COLOUR = theme.MUTED
SESSION_ENDED_REASON = "Sending is off: the session has ended."

# (menu label, accelerator shown, Tk event sequences)
SHORTCUTS = {
    "add": ("Add contact…", "Ctrl+N", ("<Control-n>", "<Control-N>")),
    "remove": ("Remove contact", "Delete", ()),
    "online": ("Who is online", "Ctrl+O", ("<Control-o>", "<Control-O>")),
    "safety": ("Safety number…", "Ctrl+K", ("<Control-k>", "<Control-K>")),
    "quit": ("Quit", "Ctrl+Q", ("<Control-q>", "<Control-Q>")),
    "previous": ("Previous contact", "Ctrl+Up", ("<Control-Up>",)),
    "next": ("Next contact", "Ctrl+Down", ("<Control-Down>",)),
}


def stopping_there(handler: Callable[[object], object]) -> Callable[[object], str]:
    """Wrap a handler so that Tk runs no later binding for the same event."""

    def handle(event: object) -> str:
        handler(event)
        return "break"

    return handle


class MainWindow(ttk.Frame):
    """Everything after login, drawn inside `window` (a Tk root or a Toplevel)."""

    def __init__(
        self,
        window: tk.Tk | tk.Toplevel,
        session: LoginResult,
        on_quit: Callable[[], None],
    ) -> None:
        super().__init__(window)
        self.window = window
        self.client: ChatClient = session.client
        self.hosting: HostingAttempt | None = session.hosting
        self._on_quit_callback = on_quit
        self.session_ended = False
        # Until the connection is back, nobody's presence is known.
        self.connected = True
        # Unsent text of the conversations not on screen, by name_key.
        self._drafts: dict[str, str] = {}
        # A contact the user has just asked to add: it opens once it is listed.
        self._contact_to_open: str | None = None
        self.add_dialog: AddContactDialog | None = None
        self.online_dialog: OnlineDialog | None = None
        self.safety_dialog: SafetyNumberDialog | None = None
        self._notice_timer: str | None = None

        window.title(f"chat_tk — {self.client.account}")
        window.geometry(WINDOW_SIZE)
        window.minsize(MIN_WIDTH_PIXELS, MIN_HEIGHT_PIXELS)
        window.resizable(True, True)
        self._build(session.hosting_note)
        self._build_menu()
        self._bind_shortcuts()

        self._poller = EventPoller(self, self.client.events, self._on_events)
        if session.backlog:
            self._on_events(session.backlog)
        self._poller.start()

    # ------------------------------------------------------------------ layout

    def _build(self, hosting_note: str | None) -> None:
        # Packed from the edges inwards: what is packed last is what shrinks when
        # the window is small, and that should be the conversation.
        status = ttk.Frame(self, style="Status.TFrame", padding=(theme.PAD, 2))
        status.pack(side="bottom", fill="x")
        self.status_dot = ttk.Label(status, text="●", foreground=DISCONNECTED_COLOUR)
        self.status_label = ttk.Label(status, text="")
        self.notice_label = ttk.Label(status, text="", foreground=DISCONNECTED_COLOUR)
        self.status_dot.pack(side="left")
        self.status_label.pack(side="left", padx=(theme.SMALL_PAD, 0))
        self.notice_label.pack(side="right")
        self.hosting_label = ttk.Label(
            self, style="Muted.TLabel", padding=(theme.PAD, 0)
        )
        if hosting_note:
            self.hosting_label.configure(text=f"Hosting a server here. {hosting_note}")
            self.hosting_label.pack(side="bottom", fill="x")

        panes = ttk.PanedWindow(self, orient="horizontal")
        panes.pack(side="top", fill="both", expand=True)
        self.contacts = ContactList(panes, self._on_contact_selected)
        add = ttk.Button(
            self.contacts.buttons, text="Add…", command=self._on_add_contact
        )
        remove = ttk.Button(
            self.contacts.buttons, text="Remove", command=self._on_remove_contact
        )
        add.pack(side="left", fill="x", expand=True)
        remove.pack(side="left", fill="x", expand=True, padx=(theme.SMALL_PAD, 0))

        right = ttk.Frame(panes)
        self.composer = Composer(right, self._send)
        self.conversation = ConversationView(right, self.client.account)
        self.composer.pack(side="bottom", fill="x")
        self.conversation.pack(side="top", fill="both", expand=True)
        self.composer.set_enabled(False)
        panes.add(self.contacts, weight=0)
        panes.add(right, weight=1)

    def _build_menu(self) -> None:
        menubar = tk.Menu(self.window)
        chat = tk.Menu(menubar)
        go = tk.Menu(menubar)
        commands: dict[str, Callable[[], object]] = {
            "add": self._on_add_contact,
            "remove": self._on_remove_contact,
            "online": self._on_who_is_online,
            "safety": self._on_safety_number,
            "quit": self._on_quit,
            "previous": self._on_previous_contact,
            "next": self._on_next_contact,
        }
        for key in ("add", "remove", None, "online", "safety", None, "quit"):
            if key is None:
                chat.add_separator()
            else:
                label, accelerator, _ = SHORTCUTS[key]
                chat.add_command(
                    label=label, accelerator=accelerator, command=commands[key]
                )
        for key in ("previous", "next"):
            label, accelerator, _ = SHORTCUTS[key]
            go.add_command(label=label, accelerator=accelerator, command=commands[key])
        menubar.add_cascade(label="Chat", menu=chat, underline=0)
        menubar.add_cascade(label="Go", menu=go, underline=0)
        self.window.configure(menu=menubar)
        self.menubar = menubar

    def _bind_shortcuts(self) -> None:
        handlers: dict[str, Callable[[object], object]] = {
            "add": self._on_add_contact,
            "online": self._on_who_is_online,
            "safety": self._on_safety_number,
            "quit": self._on_quit,
            "previous": self._on_previous_contact,
            "next": self._on_next_contact,
        }
        # Text and Treeview have class bindings for some of these keys (Ctrl+K
        # deletes a line, Ctrl+O opens one, Ctrl+Up moves the cursor); a binding on
        # the widget itself runs first, and "break" keeps the class one out.
        own_bindings = (self.composer.input, self.conversation.text, self.contacts.tree)
        for key, handler in handlers.items():
            for sequence in SHORTCUTS[key][2]:
                self.window.bind(sequence, handler)
                for widget in own_bindings:
                    widget.bind(sequence, stopping_there(handler))
        self.contacts.tree.bind("<Delete>", self._on_remove_contact)
        self.bind("<Map>", self._on_visible)

    # ------------------------------------------------------------------ events

    def _on_events(self, batch: list[ev.Event]) -> None:
        records: list[MessageRecord] = []
        contacts: tuple[ev.Contact, ...] | None = None
        peer = self.conversation.peer
        for event in batch:
            if isinstance(event, (ev.MessageAdded, ev.MessageUpdated)):
                if peer is not None and name_key(event.record.peer) == name_key(peer):
                    records.append(event.record)
            elif isinstance(event, ev.ContactsChanged):
                contacts = event.contacts
            elif isinstance(event, ev.ConnectionLost):
                self._set_status(
                    f"Offline: {event.reason}. Reconnecting in "
                    f"{event.retry_in_seconds:.0f} s…",
                    DISCONNECTED_COLOUR,
                )
                self._set_connected(False)
            elif isinstance(event, ev.StatusChanged):
                self._set_status(
                    event.text,
                    CONNECTED_COLOUR if event.connected else DISCONNECTED_COLOUR,
                )
                self._set_connected(event.connected)
            elif isinstance(event, ev.SessionEnded):
                self._end_session(event.reason)
            elif isinstance(event, ev.PeerKeyChanged):
                self.conversation.add_many(records)
                records = []
                self._peer_key_changed(event)
            elif isinstance(event, ev.Notice):
                self.show_notice(event.text)
            elif isinstance(event, ev.UsersListed) and is_open(self.add_dialog):
                self.add_dialog.set_users(event.names)
            elif isinstance(event, ev.OnlineListed) and is_open(self.online_dialog):
                self.online_dialog.set_names(event.names)

        # A burst of messages is drawn in one go, and the contact list (which the
        # client reports after every message) only once per batch.
        self.conversation.add_many(records)
        if contacts is not None:
            self._apply_contacts(contacts)
        self._mark_read_if_seen()

    def _apply_contacts(self, contacts: tuple[ev.Contact, ...]) -> None:
        if not self.connected:
            contacts = tuple(replace(c, online=False) for c in contacts)
        self.contacts.set_contacts(contacts)

        wanted = self._contact_to_open
        listed = self.contacts.contact(wanted) if wanted is not None else None
        if listed is not None:
            self._contact_to_open = None
            self._open_contact(listed.name)
        elif self.contacts.selected() is None and contacts:
            self._open_contact(self.contacts.names()[0])
        elif self.conversation.peer is not None:
            self._show_peer_state(self.conversation.peer)

    def _open_contact(self, name: str) -> None:
        self.contacts.select(name)
        self._on_contact_selected(name)

    def _set_connected(self, connected: bool) -> None:
        if connected == self.connected:
            return
        self.connected = connected
        # Coming back, the presence we drew before is stale: it is drawn again
        # from the ContactsChanged that follows every login.
        if not connected:
            self.contacts.show_all_offline()
        if self.conversation.peer is not None:
            self._show_peer_state(self.conversation.peer)

    def _set_status(self, text: str, colour: str) -> None:
        self.status_label.configure(text=text)
        self.status_dot.configure(foreground=colour)

    @property
    def status_text(self) -> str:
        return str(self.status_label.cget("text"))

    def show_notice(self, text: str) -> None:
        self.notice_label.configure(text=text)
        cancel_after(self, self._notice_timer)
        self._notice_timer = self.after(NOTICE_SECONDS * 1000, self._on_notice_expired)

    def _on_notice_expired(self) -> None:
        self._notice_timer = None
        self.notice_label.configure(text="")

    def _end_session(self, reason: str) -> None:
        self.session_ended = True
        self._set_status(f"Session ended: {reason}", ENDED_COLOUR)
        self.composer.set_enabled(False, SESSION_ENDED_REASON)

    def _peer_key_changed(self, event: ev.PeerKeyChanged) -> None:
        if self.conversation.peer is not None and name_key(
            self.conversation.peer
        ) == name_key(event.peer):
            self.conversation.add_warning(
                f"{event.peer}'s key changed (was {event.pinned_fingerprint}, now "
                f"{event.offered_fingerprint}). Compare safety numbers (Ctrl+K) before "
                "trusting it."
            )
        self.show_notice(f"{event.peer}'s key changed: compare safety numbers.")

    # ------------------------------------------------------------------ contacts

    def _on_contact_selected(self, name: str | None) -> None:
        current = self.conversation.peer
        if (
            name is not None
            and current is not None
            and name_key(name) == name_key(current)
        ):
            return
        if current is not None and self.composer.draft:
            self._drafts[name_key(current)] = self.composer.draft
        if name is None:
            self.conversation.show_placeholder(
                "Pick a contact on the left, or add one (Ctrl+N)."
            )
            self.composer.set_draft("")
            self.composer.set_enabled(False)
            return

        self.conversation.show(name, self.client.history(name))
        self._show_peer_state(name)
        self.composer.set_draft(self._drafts.pop(name_key(name), ""))
        if self.session_ended:
            self.composer.set_enabled(False, SESSION_ENDED_REASON)
        else:
            self.composer.set_enabled(True)
        self._mark_read_if_seen()

    def _show_peer_state(self, name: str) -> None:
        contact = self.contacts.contact(name)
        if not self.connected:
            presence = None  # unknown: we are offline ourselves
        elif contact is not None and contact.online:
            presence = "online"
        else:
            presence = "offline"
        self.conversation.set_presence(presence)
        if contact is not None and contact.key_changed:
            self.conversation.set_key_warning(
                f"⚠ {name}'s key has changed. Messages to {name} wait until you compare "
                "safety numbers and accept the new key (Chat → Safety number, Ctrl+K)."
            )
        else:
            self.conversation.set_key_warning(None)

    def _mark_read_if_seen(self) -> None:
        peer = self.conversation.peer
        if peer is None or not self.winfo_viewable():
            return
        contact = self.contacts.contact(peer)
        if contact is not None and contact.unread:
            self.client.mark_read(peer)

    def _on_visible(self, junk_event: object = None) -> None:
        self._mark_read_if_seen()

    def _on_previous_contact(self, junk_event: object = None) -> None:
        self.contacts.select_next(-1)

    def _on_next_contact(self, junk_event: object = None) -> None:
        self.contacts.select_next(+1)

    def _on_add_contact(self, junk_event: object = None) -> None:
        if is_open(self.add_dialog):
            self.add_dialog.lift()
            return
        self.add_dialog = AddContactDialog(
            self,
            self.client.account,
            self.contacts.names(),
            self.client.known_users(),
            self._add_contact,
        )
        self.client.request_users()

    def _add_contact(self, name: str) -> None:
        self._contact_to_open = name
        self.client.add_contact(name)

    def _on_remove_contact(self, junk_event: object = None) -> None:
        name = self.contacts.selected()
        if name is None:
            return
        confirmed = messagebox.askyesno(
            "Remove contact",
            f"Remove {name} from your contacts? Your conversation stays on this computer.",
            parent=self.window,
        )
        if confirmed:
            self.client.remove_contact(name)

    def _on_who_is_online(self, junk_event: object = None) -> None:
        if is_open(self.online_dialog):
            self.online_dialog.lift()
        else:
            self.online_dialog = OnlineDialog(self)
        self.client.request_online()

    def _on_safety_number(self, junk_event: object = None) -> None:
        if is_open(self.safety_dialog):
            self.safety_dialog.destroy()
        peer = self.conversation.peer
        pinned, offered = self.client.fingerprint_of(peer) if peer else (None, None)
        self.safety_dialog = SafetyNumberDialog(
            self,
            self.client.own_fingerprint(),
            peer,
            pinned,
            offered,
            lambda: self._accept_key(peer),
        )

    def _accept_key(self, peer: str | None) -> None:
        if peer is not None:
            self.client.accept_new_key(peer)
            self.show_notice(f"You now trust {peer}'s new key.")

    def _on_quit(self, junk_event: object = None) -> None:
        self._on_quit_callback()

    # ------------------------------------------------------------------ sending

    def _send(self, text: str) -> str | None:
        peer = self.conversation.peer
        if peer is None or self.session_ended:
            return "Pick a contact first." if peer is None else "The session has ended."
        try:
            record = self.client.send_text(peer, text)
        except crypto.TextTooLong as exc:
            return f"Too long: {exc.size} of {exc.limit} bytes. Shorten it to send it."
        except ChatError as exc:
            return str(exc)
        self.conversation.add_many([record])
        self.conversation.text.see("end")
        return None

    # ------------------------------------------------------------------ closing

    def stop(self) -> None:
        """Stop drawing events and close the small windows (the app stops the client)."""
        self._poller.stop()
        cancel_after(self, self._notice_timer)
        for dialog in (self.add_dialog, self.online_dialog, self.safety_dialog):
            if is_open(dialog):
                dialog.destroy()
