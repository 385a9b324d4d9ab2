"""The login dialog: address, account and password, and everything until LoggedIn.

This module owns the first minutes of a session: making the ChatClient, showing
progress while it connects or makes its key pair, explaining a refusal in plain
words, and offering to host a server when nobody answers at a local address.
"""

from __future__ import annotations

import logging
import time
import tkinter as tk
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from tkinter import ttk

from chat_tk.client import events as ev
from chat_tk.client.core import ChatClient
from chat_tk.errors import ChatError
from chat_tk.gui import theme
from chat_tk.gui.background import (
    HostingAttempt,
    check_local_address,
    stop_in_background,
)
from chat_tk.gui.polling import EventPoller, FutureWatcher

log = logging.getLogger(__name__)

ELAPSED_TICK_MILLISECONDS = 250
STATUS_WRAP_PIXELS = 470
MAX_PORT = 65_535


@dataclass
class LoginResult:
    """What the main window takes over once the client has logged in."""

    client: ChatClient
    hosting: HostingAttempt | None
    # Events that arrived in the same batch as LoggedIn, not yet drawn.
    backlog: list[ev.Event] = field(default_factory=list)
    hosting_note: str | None = None


def sentence(text: str) -> str:
    """Capitalise and end a reason from the client so it reads as a sentence."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…" else text + "."


def describe_failure(reason: str, address: str) -> str:
    """A login failure as the dialog shows it.

    The client words a refusal as a whole sentence ("Wrong account name or
    password.") and a broken connection as a lower-case fragment ("the server did
    not answer in time"); the fragment gets the address it is about.
    """
    if address in reason or reason[:1].isupper():
        return sentence(reason)
    return sentence(f"Could not log in to {address}: {reason}")


def hosting_note(port: int, addresses: list[str]) -> str:
    """Where others reach a server hosted here, worded as the login form asks for it.

    The form has separate fields for the address and the port, so "address:port"
    would be one more thing to take apart.
    """
    if not addresses:
        where = "this computer's network address,"
    elif len(addresses) == 1:
        where = addresses[0]
    else:
        where = ", ".join(addresses[:-1]) + f" or {addresses[-1]}"
    return f"Others on your network can connect to {where} port {port}."


class LoginDialog(ttk.Frame):
    """The login form, drawn inside `window` (a Tk root or a Toplevel)."""

    def __init__(
        self,
        window: tk.Misc,
        *,
        data_dir: Path,
        host: str,
        port: int,
        account: str | None,
        key_bits: int,
        on_logged_in: Callable[[LoginResult], None],
        on_cancelled: Callable[[], None],
    ) -> None:
        super().__init__(window, padding=theme.PAD * 2)
        self.data_dir = data_dir
        self.key_bits = key_bits
        self._on_logged_in_callback = on_logged_in
        self._on_cancelled_callback = on_cancelled

        self._client: ChatClient | None = None
        self._poller: EventPoller | None = None
        self._hosting: HostingAttempt | None = None
        self._hosting_note: str | None = None
        self._local_check: FutureWatcher[bool] | None = None
        self._hosting_start: FutureWatcher[tuple[int, list[str]]] | None = None
        self._register_mode = False
        self._making_key = False
        self._phase = ""
        self._phase_started = 0.0
        self._tick_id: str | None = None

        self._build(host, port, account)
        self.set_idle()

    # ------------------------------------------------------------------ layout

    def _build(self, host: str, port: int, account: str | None) -> None:
        ttk.Label(self, text="Log in to chat_tk", style="Title.TLabel").grid(
            row=0, column=0, columnspan=4, sticky="w"
        )
        ttk.Label(
            self,
            text="Direct messages are encrypted on this computer before they are sent.",
            style="Muted.TLabel",
        ).grid(row=1, column=0, columnspan=4, sticky="w", pady=(0, theme.PAD))

        self.host_entry = ttk.Entry(self, width=24)
        self.port_entry = ttk.Entry(self, width=7)
        self.account_entry = ttk.Entry(self, width=24)
        self.password_entry = ttk.Entry(self, width=24, show="•")
        self.host_entry.insert(0, host)
        self.port_entry.insert(0, str(port))
        self.account_entry.insert(0, account or "")
        rows = [
            ("Server address", self.host_entry),
            ("Account name", self.account_entry),
            ("Password", self.password_entry),
        ]
        for row, (caption, entry) in enumerate(rows, start=2):
            ttk.Label(self, text=caption).grid(row=row, column=0, sticky="w", pady=2)
            entry.grid(row=row, column=1, sticky="ew", pady=2, padx=(theme.PAD, 0))
        ttk.Label(self, text="Port").grid(
            row=2, column=2, sticky="e", padx=(theme.PAD, 0)
        )
        self.port_entry.grid(row=2, column=3, sticky="w", padx=(theme.SMALL_PAD, 0))

        self.status_label = ttk.Label(
            self, wraplength=STATUS_WRAP_PIXELS, justify="left"
        )
        self.status_label.grid(
            row=5, column=0, columnspan=4, sticky="ew", pady=(theme.PAD, 0)
        )
        self.progress = ttk.Progressbar(self, mode="indeterminate")
        self.progress.grid(
            row=6, column=0, columnspan=4, sticky="ew", pady=(theme.SMALL_PAD, 0)
        )
        self.note_label = ttk.Label(
            self, wraplength=STATUS_WRAP_PIXELS, justify="left", style="Muted.TLabel"
        )
        self.note_label.grid(row=7, column=0, columnspan=4, sticky="ew")
        self._build_offer()
        self._build_buttons()
        self.columnconfigure(1, weight=1)

        for entry in (
            self.host_entry,
            self.port_entry,
            self.account_entry,
            self.password_entry,
        ):
            entry.bind("<Return>", self._on_log_in)
            entry.bind("<KP_Enter>", self._on_log_in)
        pending: list[tk.Misc] = [self]
        while pending:  # Escape works wherever the focus is in the dialog
            widget = pending.pop()
            widget.bind("<Escape>", self._on_cancel)
            pending.extend(widget.winfo_children())
        (self.password_entry if account else self.account_entry).focus_set()

    def _build_offer(self) -> None:
        self.offer_frame = ttk.Frame(self, padding=(0, theme.PAD, 0, 0))
        self.offer_label = ttk.Label(
            self.offer_frame, wraplength=STATUS_WRAP_PIXELS, justify="left"
        )
        self.host_button = ttk.Button(
            self.offer_frame, text="Host a server here", command=self._on_host_server
        )
        self.decline_button = ttk.Button(
            self.offer_frame, text="No, thanks", command=self._on_decline_hosting
        )
        self.offer_label.pack(side="top", anchor="w", pady=(0, theme.SMALL_PAD))
        self.host_button.pack(side="left")
        self.decline_button.pack(side="left", padx=(theme.PAD, 0))

    def _build_buttons(self) -> None:
        buttons = ttk.Frame(self, padding=(0, theme.PAD * 2, 0, 0))
        buttons.grid(row=9, column=0, columnspan=4, sticky="ew")
        self.cancel_button = ttk.Button(buttons, text="Cancel", command=self._on_cancel)
        self.create_button = ttk.Button(
            buttons, text="Create account", command=self._on_create_account
        )
        self.login_button = ttk.Button(
            buttons, text="Log in", command=self._on_log_in, default="active"
        )
        self.cancel_button.pack(side="left")
        self.login_button.pack(side="right")
        self.create_button.pack(side="right", padx=(0, theme.PAD))

    # ------------------------------------------------------------------ state

    @property
    def working(self) -> bool:
        return self._client is not None or self._hosting_start is not None

    @property
    def status_text(self) -> str:
        return str(self.status_label.cget("text"))

    def _set_fields_enabled(self, enabled: bool) -> None:
        flag = ["!disabled"] if enabled else ["disabled"]
        for widget in (
            self.host_entry,
            self.port_entry,
            self.account_entry,
            self.password_entry,
            self.login_button,
            self.create_button,
        ):
            widget.state(flag)

    def set_idle(self, message: str = "", error: bool = False) -> None:
        self._stop_ticking()
        self.progress.stop()
        self.progress.grid_remove()
        self._set_fields_enabled(True)
        self.status_label.configure(
            text=message, style="Error.TLabel" if error else "Muted.TLabel"
        )

    def _set_working(self, phase: str) -> None:
        self._set_fields_enabled(False)
        self.offer_frame.grid_remove()
        self.progress.grid()
        self.progress.start(15)
        self.status_label.configure(style="TLabel")
        self._set_phase(phase)
        if self._tick_id is None:
            self._tick_id = self.after(ELAPSED_TICK_MILLISECONDS, self._on_tick)

    def _set_phase(self, phase: str) -> None:
        self._phase = phase
        self._phase_started = time.monotonic()
        self._show_phase()

    def _show_phase(self) -> None:
        seconds = int(time.monotonic() - self._phase_started)
        suffix = f"  ({seconds} s)" if seconds >= 1 else ""
        self.status_label.configure(text=self._phase + suffix)

    def _on_tick(self) -> None:
        self._tick_id = self.after(ELAPSED_TICK_MILLISECONDS, self._on_tick)
        self._show_phase()

    def _stop_ticking(self) -> None:
        if self._tick_id is not None:
            self.after_cancel(self._tick_id)
            self._tick_id = None

    def _show_offer(self, address: str) -> None:
        self.offer_label.configure(
            text=f"Nobody answers at {address}. Host a server on this computer?"
        )
        self.offer_frame.grid(row=8, column=0, columnspan=4, sticky="ew")
        self.host_button.focus_set()

    # ------------------------------------------------------------------ logging in

    def _on_log_in(self, junk_event: object = None) -> str:
        self._submit(register=False)
        return "break"

    def _on_create_account(self, junk_event: object = None) -> None:
        self._submit(register=True)

    def _read_fields(self) -> tuple[str, int, str, str] | str:
        """The form's values, or what is wrong with them."""
        host = self.host_entry.get().strip()
        account = self.account_entry.get().strip()
        password = self.password_entry.get()
        try:
            port = int(self.port_entry.get().strip())
        except ValueError:
            port = 0
        if not host:
            return "Enter the server's address (for example 127.0.0.1)."
        if not 1 <= port <= MAX_PORT:
            return f"The port must be a number from 1 to {MAX_PORT}."
        if not account:
            return "Enter your account name."
        if not password:
            return "Enter your password."
        return host, port, account, password

    def _submit(self, register: bool) -> None:
        if self.working:
            return
        fields = self._read_fields()
        if isinstance(fields, str):
            self.set_idle(fields, error=True)
            return
        host, port, account, password = fields

        try:
            client = ChatClient(
                self.data_dir,
                host,
                port,
                account,
                password,
                register=register,
                key_bits=self.key_bits,
            )
        except ChatError as exc:  # an invalid name, or a damaged database (named)
            self.set_idle(sentence(str(exc)), error=True)
            return
        except OSError as exc:
            self.set_idle(
                f"Cannot use the data folder {self.data_dir}: {exc.strerror or exc}.",
                error=True,
            )
            return

        log.info("logging in to %s:%d (register=%s)", host, port, register)
        self._register_mode = register
        self._client = client
        self._poller = EventPoller(self, client.events, self._on_events)
        self._set_working(f"Connecting to {host}:{port}…")
        client.start()
        self._poller.start()

    def _end_attempt(self) -> ChatClient | None:
        client, self._client = self._client, None
        self._making_key = False
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        return client

    def _on_events(self, batch: list[ev.Event]) -> None:
        for index, event in enumerate(batch):
            if isinstance(event, ev.StatusChanged):
                if not self._making_key:  # the key's own message says more
                    self._set_phase(event.text)
            elif isinstance(event, ev.KeyGenerationStarted):
                self._making_key = True
                self._set_phase(
                    f"Making your {event.bits}-bit key pair. This happens once, on the "
                    "first login, and can take up to a minute…"
                )
            elif isinstance(event, ev.KeyGenerationFinished):
                self._making_key = False
                self._set_phase(
                    f"Key pair ready after {event.seconds:.0f} s. Logging in…"
                )
            elif isinstance(event, ev.AccountCreated):
                self._set_phase(f"Account {event.account} created. Logging in…")
            elif isinstance(event, ev.LoggedIn):
                self._finish(batch[index + 1 :])
                return
            elif isinstance(event, (ev.LoginFailed, ev.SessionEnded)):
                self._fail(event)
                return

    def _finish(self, backlog: list[ev.Event]) -> None:
        client = self._end_attempt()
        assert client is not None
        self._stop_ticking()
        self.progress.stop()
        result = LoginResult(client, self._hosting, backlog, self._hosting_note)
        self._hosting = None  # the main window owns it now
        self._on_logged_in_callback(result)

    def _fail(self, event: ev.LoginFailed | ev.SessionEnded) -> None:
        client = self._end_attempt()
        assert client is not None
        stop_in_background(client)
        address = f"{client.host}:{client.port}"
        message = describe_failure(event.reason, address)
        log.info("login failed: %s", event.reason)

        unreachable = isinstance(event, ev.LoginFailed) and event.unreachable
        if self._hosting is not None and not unreachable and not self._register_mode:
            message += (
                " The server started here has no accounts yet: use Create account."
            )
        self.set_idle(message, error=True)
        if unreachable and self._hosting is None:
            self._local_check = FutureWatcher(
                self,
                check_local_address(client.host),
                lambda future: self._on_local_checked(future, address),
            )

    def _on_local_checked(self, future: Future[bool], address: str) -> None:
        self._local_check = None
        if future.result() and not self.working:
            self._show_offer(address)

    # ------------------------------------------------------------------ hosting

    def _on_host_server(self, junk_event: object = None) -> None:
        fields = self._read_fields()
        if isinstance(fields, str):
            self.set_idle(fields, error=True)
            return
        if self.working:
            return
        port = fields[1]
        self._hosting = HostingAttempt(self.data_dir, port)
        self._set_working(
            f"Starting a server on this computer, port {port}. The first start makes "
            "its key, which takes a few seconds…"
        )
        self._hosting_start = FutureWatcher(
            self, self._hosting.started, self._on_hosting_started
        )

    def _on_hosting_started(self, future: Future[tuple[int, list[str]]]) -> None:
        self._hosting_start = None
        try:
            port, addresses = future.result()
        except Exception as exc:
            self._hosting = None
            reason = (
                exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            )
            self.set_idle(sentence(f"Could not host a server: {reason}"), error=True)
            return
        self._hosting_note = hosting_note(port, addresses)
        self.note_label.configure(
            text=f"{self._hosting_note} It accepts new accounts: use Create account "
            "if you have none on it."
        )
        self.set_idle()
        self._submit(self._register_mode)

    def _on_decline_hosting(self, junk_event: object = None) -> None:
        self.offer_frame.grid_remove()

    # ------------------------------------------------------------------ leaving

    def _on_cancel(self, junk_event: object = None) -> None:
        """Stop an attempt under way; when idle, close the dialog."""
        if self._hosting_start is not None:
            self.abort()
            self.set_idle("Cancelled: no server was started.")
        elif self._client is not None:
            stop_in_background(self._end_attempt())
            self.set_idle("Cancelled.")
        else:
            self._on_cancelled_callback()

    def abort(self) -> None:
        """Give up all that is under way (the dialog is closing); never waits."""
        for watcher in (self._local_check, self._hosting_start):
            if watcher is not None:
                watcher.cancel()
        self._local_check = self._hosting_start = None
        client = self._end_attempt()
        hosting, self._hosting = self._hosting, None
        if client is not None or hosting is not None:
            stop_in_background(client, hosting)
        self._stop_ticking()
