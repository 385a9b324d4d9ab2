"""The terminal client: the classic commands on top of the same ChatClient core.

Reads commands from standard input on the main thread and prints events from the
client's queue on a second thread; no tkinter here.
"""

from __future__ import annotations

import getpass
import io
import queue
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from chat_tk import crypto
from chat_tk.client import events as ev
from chat_tk.client.core import ChatClient
from chat_tk.client.display import STATE_MARKS, format_time, terminal_safe
from chat_tk.errors import ChatError
from chat_tk.storage import client_store as cs
from chat_tk.storage.client_store import MessageRecord

HELP = """Commands:
  msg NAME TEXT   send TEXT to NAME (also: @NAME TEXT)
  list            your contacts (● online, ○ offline, unread counts)
  history [NAME]  messages with NAME (or with every contact)
  online          who is online now
  users           every account on the server
  add NAME        add a contact          del NAME   remove a contact
  key [NAME]      safety number of NAME (or your own)
  accept NAME     trust NAME's new key after comparing safety numbers
  help            this text              exit       leave"""

LOGIN_TIMEOUT_SECONDS = 120.0


def format_record(record: MessageRecord, me: str) -> str:
    who = me if record.outgoing else record.peer
    when = format_time(record.sort_time)
    if record.state == cs.UNREADABLE:
        return f"[{when}] {who}: [could not be read: {record.problem}]"
    mark = f" {STATE_MARKS[record.state]}" if record.outgoing else ""
    problem = f" ({record.problem})" if record.problem else ""
    return f"[{when}] {who}: {record.text}{mark}{problem}"


class ConsoleClient:
    """Runs one session in a terminal."""

    def __init__(self, client: ChatClient, out: TextIO) -> None:
        self.client = client
        self.out = out
        self._print_lock = threading.Lock()
        self._contacts: tuple[ev.Contact, ...] = ()
        self._ended = threading.Event()

    def say(self, line: str) -> None:
        with self._print_lock:
            self.out.write(terminal_safe(line) + "\n")
            self.out.flush()

    def wait_for_login(self) -> bool:
        deadline = time.monotonic() + LOGIN_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                event = self.client.events.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(event, ev.LoggedIn):
                self.say(
                    f"Logged in as {event.account}. Your safety number: {event.fingerprint}"
                )
                self.say("Type 'help' for commands.")
                return True
            if isinstance(event, ev.LoginFailed):
                self.say(f"Login failed: {event.reason}")
                return False
            self.show(event)
        self.say("Login failed: no answer in time")
        return False

    def show(self, event: ev.Event) -> None:
        """Print one event; the printer thread calls this for everything after login."""
        if isinstance(event, ev.StatusChanged):
            self.say(f"* {event.text}")
        elif isinstance(event, ev.AccountCreated):
            self.say(f"* Account {event.account} created.")
        elif isinstance(event, ev.MessageAdded):
            self.say(format_record(event.record, self.client.account))
        elif isinstance(event, ev.MessageUpdated) and event.record.state in (
            cs.FAILED,
            cs.REJECTED,
        ):
            self.say(f"! Not delivered to {event.record.peer}: {event.record.problem}")
        elif isinstance(event, ev.ContactsChanged):
            self._contacts = event.contacts
        elif isinstance(event, ev.OnlineListed):
            self.say("Online: " + (", ".join(event.names) or "nobody"))
        elif isinstance(event, ev.UsersListed):
            self.say("Users: " + ", ".join(event.names))
        elif isinstance(event, ev.PeerKeyChanged):
            self.say(
                f"! {event.peer}'s key changed: was {event.pinned_fingerprint}, now "
                f"{event.offered_fingerprint}. Compare with {event.peer}, then 'accept {event.peer}'."
            )
        elif isinstance(event, ev.Notice):
            self.say(f"! {event.text}")
        elif isinstance(event, ev.SessionEnded):
            self.say(f"Session ended: {event.reason}")
            self._ended.set()

    def print_events(self) -> None:
        while not self._ended.is_set() and self.client.running:
            try:
                self.show(self.client.events.get(timeout=0.2))
            except queue.Empty:
                continue

    def run_command(self, line: str) -> bool:
        """Carry out one command line; False means leave."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("@"):
            name, _, text = line[1:].partition(" ")
            self._send(name, text)
            return True

        command, _, rest = line.partition(" ")
        command, rest = command.lower(), rest.strip()
        if command in ("exit", "quit"):
            return False
        if command == "help":
            self.say(HELP)
        elif command == "msg":
            name, _, text = rest.partition(" ")
            self._send(name, text)
        elif command == "list":
            self._list_contacts()
        elif command == "history":
            self._history(rest or None)
        elif command == "online":
            self.client.request_online()
        elif command == "users":
            self.client.request_users()
        elif command == "add" and rest:
            self.say(f"* Adding {rest}…")
            self.client.add_contact(rest)
        elif command == "del" and rest:
            self.say(f"* Removing {rest}…")
            self.client.remove_contact(rest)
        elif command == "key":
            self._key(rest or None)
        elif command == "accept" and rest:
            self._accept(rest)
        else:
            self.say(f"Unknown command {line!r}; type 'help'.")
        return True

    def _send(self, name: str, text: str) -> None:
        if not name or not text:
            self.say("Usage: msg NAME TEXT")
            return
        try:
            self.client.send_text(name, text.replace("\\n", "\n"))
        except crypto.TextTooLong as exc:
            self.say(f"! Not sent, {exc}")
        except ChatError as exc:
            self.say(f"! Not sent: {exc}")

    def _list_contacts(self) -> None:
        if not self._contacts:
            self.say("No contacts yet; 'add NAME' adds one ('users' lists everyone).")
        for contact in self._contacts:
            mark = "●" if contact.online else "○"
            unread = f" ({contact.unread} unread)" if contact.unread else ""
            warning = " ⚠ key changed" if contact.key_changed else ""
            self.say(f"{mark} {contact.name}{unread}{warning}")

    def _history(self, name: str | None) -> None:
        peers = [name] if name else self.client.contacts()
        for peer in peers:
            try:
                records = self.client.history(peer)
            except ChatError as exc:
                self.say(f"! {exc}")
                continue
            if not name:
                self.say(f"--- {peer}")
            elif not records:
                self.say(f"No messages with {peer} yet.")
            for record in records:
                self.say(format_record(record, self.client.account))
            if name:
                self.client.mark_read(peer)

    def _accept(self, name: str) -> None:
        try:
            offered = self.client.fingerprint_of(name)[1]
        except ChatError as exc:
            self.say(f"! {exc}")
            return
        if offered is None:
            self.say(f"{name}'s key has not changed; there is nothing to accept.")
            return
        self.say(f"* Trusting {name}'s new key {offered}.")
        self.client.accept_new_key(name)

    def _key(self, name: str | None) -> None:
        if name is None:
            self.say(f"Your safety number: {self.client.own_fingerprint()}")
            return
        pinned, offered = self.client.fingerprint_of(name)
        self.say(f"{name}: {pinned or 'no key known yet'}")
        if offered:
            self.say(
                f"{name} now shows a NEW key: {offered} ('accept {name}' to trust it)"
            )


def _let_outbox_drain(client: ChatClient, seconds: float = 5.0) -> None:
    """Give messages typed just before 'exit' a moment to reach the server.

    Whatever is still pending stays in the outbox and goes out at the next login.
    """
    deadline = time.monotonic() + seconds
    while client.running and client.outbox_size() and time.monotonic() < deadline:
        time.sleep(0.1)


def read_password(prompt: str, stream: TextIO) -> str:
    if stream.isatty():
        return getpass.getpass(prompt)
    return stream.readline().rstrip("\r\n")


def run_console(
    data_dir: Path,
    host: str,
    port: int,
    account: str | None,
    register: bool,
    key_bits: int = crypto.DEFAULT_KEY_BITS,
) -> int:
    """Log in (asking for what is missing), then serve commands until exit or EOF."""
    out, stdin = sys.stdout, sys.stdin
    if isinstance(stdin, io.TextIOWrapper):
        # A stray byte that is not UTF-8 becomes U+FFFD instead of ending the session.
        stdin.reconfigure(errors="replace")
    if not account:
        out.write("Account name: ")
        out.flush()
        account = stdin.readline().strip()
    password = read_password("Password: ", stdin)

    try:
        client = ChatClient(
            data_dir,
            host,
            port,
            account,
            password,
            register=register,
            key_bits=key_bits,
        )
    except ChatError as exc:
        out.write(f"{exc}\n")
        return 1
    console = ConsoleClient(client, out)
    client.start()
    if not console.wait_for_login():
        client.stop()
        return 1

    printer = threading.Thread(
        target=console.print_events, name="console-printer", daemon=True
    )
    printer.start()
    try:
        for line in stdin:
            if not console.run_command(line):
                break
    except KeyboardInterrupt:
        pass
    finally:
        _let_outbox_drain(client)
        client.stop()
    console.say("Bye.")
    return 0
