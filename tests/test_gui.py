"""The Tk interface driven through its widgets, against real servers and clients.

One Tk root for the whole session; every window under test is a Toplevel of it.
Nothing of chat_tk is mocked: only tkinter.messagebox is replaced, where a test
answers a confirmation. pytest-xvfb provides the display.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tkinter as tk
import traceback
from pathlib import Path
from tkinter import messagebox

import pytest
from conftest import TEST_CLIENT_KEY_BITS, wait_for_event

from chat_tk import crypto
from chat_tk.client import core
from chat_tk.client import events as ev
from chat_tk.client.core import ChatClient
from chat_tk.client.display import format_time
from chat_tk.gui import background
from chat_tk.gui.app import ChatWindow
from chat_tk.gui.conversation import ConversationView, state_mark
from chat_tk.gui.dialogs import is_open
from chat_tk.gui.login import hosting_note
from chat_tk.gui.main_window import MIN_HEIGHT_PIXELS, MIN_WIDTH_PIXELS
from chat_tk.gui.theme import prepare_root
from chat_tk.server.hub import Limits
from chat_tk.server.net import SERVER_KEY_SETTING, open_server_database
from chat_tk.server.runner import lan_addresses
from chat_tk.storage import server_store
from chat_tk.storage.client_store import KnownServers, MessageRecord

pytestmark = pytest.mark.gui

PASSWORD = "secret-pw"


# --------------------------------------------------------------------------- harness


@pytest.fixture(scope="session")
def root():
    if not os.environ.get("DISPLAY"):
        pytest.fail("no DISPLAY: run the GUI tests under Xvfb (pytest-xvfb does it)")
    root = tk.Tk()
    prepare_root(root)
    root.withdraw()
    yield root
    root.update()
    root.destroy()


@pytest.fixture(autouse=True)
def fail_on_tk_errors(root, caplog):
    """Fail the test on any Tk callback exception or ERROR log record."""
    errors = []

    def report(kind, value, tb):
        errors.append("".join(traceback.format_exception(kind, value, tb)))

    root.report_callback_exception = report
    yield
    root.update()
    logged = [
        f"{r.name}: {r.getMessage()}"
        for phase in ("setup", "call", "teardown")
        for r in caplog.get_records(phase)
        if r.levelno >= logging.ERROR
    ]
    assert not errors, "\n".join(errors)
    assert not logged, logged


def wait_until(root, condition, timeout=20.0, what=None):
    """Run the Tk event loop until condition() is true."""
    deadline = time.monotonic() + timeout
    while True:
        root.update()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"gave up after {timeout} s waiting for {what or condition}"
            )
        time.sleep(0.01)


@pytest.fixture
def open_window(root, tmp_path):
    """Open ChatWindows (login first) in Toplevels; close whatever is left at the end."""
    opened = []

    def open_(name, port, home=None, key_bits=TEST_CLIENT_KEY_BITS, host="127.0.0.1"):
        window = tk.Toplevel(root)
        chat = ChatWindow(
            window,
            data_dir=tmp_path / (home or f"gui-{name}"),
            host=host,
            port=port,
            account=name,
            key_bits=key_bits,
        )
        opened.append(chat)
        root.update()
        return chat

    yield open_
    for chat in opened:
        chat.close()
    root.update()
    assert background.wait_for_stops(20), "a client or hosted server did not stop"


def fill(entry, text):
    entry.delete(0, "end")
    entry.insert(0, text)


def press(root, widget, sequence):
    """Send a key event to a widget the way a keyboard would: focus first."""
    widget.focus_force()
    root.update()
    widget.event_generate(sequence)
    root.update()


def close_like_window_manager(chat):
    chat.window.tk.call(chat.window.protocol("WM_DELETE_WINDOW"))


def log_in(root, chat, password=PASSWORD, create=False, timeout=20.0):
    fill(chat.login.password_entry, password)
    (chat.login.create_button if create else chat.login.login_button).invoke()
    wait_until(
        root,
        lambda: chat.main is not None or not chat.login.working,
        timeout,
        "the login to end",
    )
    assert chat.main is not None, chat.login.status_text
    return chat.main


def add_contact_from_list(root, main, name):
    press(root, main.contacts.tree, "<Control-n>")
    wait_until(root, lambda: is_open(main.add_dialog), what="the add-contact dialog")
    dialog = main.add_dialog
    wait_until(root, lambda: name in dialog.users(), what=f"{name} in the user list")
    dialog.users_list.selection_set(dialog.users().index(name))
    dialog.users_list.event_generate("<<ListboxSelect>>")
    root.update()
    assert dialog.name_entry.get() == name
    dialog.add_button.invoke()
    wait_until(root, lambda: name in main.contacts.names(), what=f"{name} as a contact")


def add_contact_by_typing(root, main, name):
    main.menubar.nametowidget(main.menubar.entrycget("Chat", "menu")).invoke(
        "Add contact…"
    )
    wait_until(root, lambda: is_open(main.add_dialog), what="the add-contact dialog")
    fill(main.add_dialog.name_entry, name)
    press(root, main.add_dialog.name_entry, "<Return>")
    wait_until(root, lambda: name in main.contacts.names(), what=f"{name} as a contact")


def press_where_the_focus_is(root, sequence):
    """A key as the user presses it: it goes to whichever widget has the focus."""
    root.update()
    focused = root.focus_get()
    assert focused is not None, "nothing has the keyboard focus"
    focused.event_generate(sequence)
    root.update()


def inside(widget, container):
    return str(widget) == str(container) or str(widget).startswith(f"{container}.")


def shrink_to_minimum(root, chat):
    chat.window.geometry(f"{MIN_WIDTH_PIXELS}x{MIN_HEIGHT_PIXELS}")
    for _ in range(5):
        root.update()


def fully_visible(widget):
    """Mapped, given all the room it asks for, and within its window's edges."""
    top = widget.winfo_toplevel()
    left = widget.winfo_rootx() - top.winfo_rootx()
    above = widget.winfo_rooty() - top.winfo_rooty()
    return (
        widget.winfo_ismapped()
        and widget.winfo_width() >= widget.winfo_reqwidth()
        and widget.winfo_height() >= widget.winfo_reqheight()
        and left >= 0
        and left + widget.winfo_width() <= top.winfo_width()
        and above >= 0
        and above + widget.winfo_height() <= top.winfo_height()
    )


def type_and_send(root, main, text):
    main.composer.input.insert("end", text)
    press(root, main.composer.input, "<Return>")
    assert main.composer.draft == "", main.composer.error_text


def outgoing_states(main):
    return [r.state for r in main.conversation.shown.values() if r.outgoing]


def texts_shown(main):
    records = sorted(
        main.conversation.shown.values(), key=lambda r: (r.sort_time, r.seq)
    )
    return [r.text for r in records]


# --------------------------------------------------------------------------- chatting


def test_two_windows_chat_both_ways(root, server, open_window):
    alice_window = open_window("alice", server.port)
    bob_window = open_window("bob", server.port)
    alice = log_in(root, alice_window, create=True)
    bob = log_in(root, bob_window, create=True)
    assert alice_window.window.title() == "chat_tk — alice"

    add_contact_from_list(root, alice, "bob")
    add_contact_by_typing(root, bob, "alice")
    assert alice.conversation.peer == "bob"
    assert bob.conversation.peer == "alice"

    type_and_send(root, alice, "hello bob, привет 👋")
    wait_until(
        root, lambda: texts_shown(bob) == ["hello bob, привет 👋"], what="bob to see it"
    )
    wait_until(root, lambda: outgoing_states(alice) == ["delivered"], what="delivered")
    assert alice.conversation.message_lines()[0].endswith("hello bob, привет 👋  ✓✓")

    bob.composer.input.insert("end", "hi alice")
    bob.composer.send_button.invoke()
    wait_until(
        root, lambda: "hi alice" in texts_shown(alice), what="alice to see the answer"
    )
    wait_until(root, lambda: outgoing_states(bob) == ["delivered"], what="delivered")
    assert texts_shown(alice) == ["hello bob, привет 👋", "hi alice"]
    assert texts_shown(bob) == ["hello bob, привет 👋", "hi alice"]

    # Both conversations are on screen, so nothing stays unread.
    wait_until(root, lambda: alice.contacts.row_text("bob")[1] == "", what="read")
    assert bob.contacts.row_text("alice") == ("●  alice", "")


def test_offline_delivery_in_order(root, server, open_window):
    alice = log_in(root, open_window("alice", server.port), create=True)
    bob_window = open_window("bob", server.port)
    log_in(root, bob_window, create=True)
    add_contact_from_list(root, alice, "bob")

    close_like_window_manager(bob_window)
    assert not bob_window.window.winfo_exists()
    bob_window.stopping.join(10)
    wait_until(
        root, lambda: alice.contacts.row_text("bob")[0] == "○  bob", what="bob offline"
    )

    for number in (1, 2, 3):
        type_and_send(root, alice, f"while you were away {number}")
    wait_until(root, lambda: outgoing_states(alice) == ["stored"] * 3, what="stored")

    bob_again = open_window("bob", server.port)
    assert bob_again.login.account_entry.get() == "bob"
    bob = log_in(root, bob_again)
    expected = [f"while you were away {n}" for n in (1, 2, 3)]
    wait_until(root, lambda: texts_shown(bob) == expected, what="the three messages")
    assert [
        line.split("  ", 2)[2] for line in bob.conversation.message_lines()
    ] == expected
    wait_until(
        root, lambda: outgoing_states(alice) == ["delivered"] * 3, what="delivered"
    )


def test_enter_sends_and_shift_enter_starts_a_line(
    root, server, make_client, open_window
):
    bob = make_client(server, "bob")
    alice = log_in(root, open_window("alice", server.port), create=True)
    add_contact_by_typing(root, alice, "bob")

    alice.composer.input.insert("end", "first line")
    press(root, alice.composer.input, "<Shift-Return>")
    alice.composer.input.insert("end", "second line")
    assert alice.composer.draft == "first line\nsecond line"

    press(root, alice.composer.input, "<Return>")
    assert alice.composer.draft == ""
    assert texts_shown(alice) == ["first line\nsecond line"]
    received = wait_for_event(bob.events, lambda e: isinstance(e, ev.MessageAdded))
    assert received.record.text == "first line\nsecond line"

    # Enter on an empty box sends nothing.
    press(root, alice.composer.input, "<Return>")
    assert len(alice.conversation.shown) == 1

    # A trailing new line is sent, but the mark stays on the text's last line.
    alice.composer.input.insert("end", "trailing")
    press(root, alice.composer.input, "<Shift-Return>")
    press(root, alice.composer.input, "<Return>")
    received = wait_for_event(bob.events, lambda e: isinstance(e, ev.MessageAdded))
    assert received.record.text == "trailing\n"
    wait_until(root, lambda: outgoing_states(alice)[-1] == "delivered", what="✓✓")
    assert alice.conversation.message_lines()[-1].endswith("alice  trailing  ✓✓")


def test_too_long_text_is_refused_and_kept(root, server, make_client, open_window):
    make_client(server, "bob")
    window = open_window("alice", server.port)
    alice = log_in(root, window, create=True)
    add_contact_by_typing(root, alice, "bob")
    composer = alice.composer

    # 10,001 Cyrillic letters are 20,002 bytes: the count is of UTF-8 bytes.
    draft = "я" * 10_001
    composer.input.insert("1.0", draft)
    root.update()
    assert composer.counter_label.cget("text") == "20002 / 20000 bytes"
    assert str(composer.counter_label.cget("style")) == "Error.TLabel"

    press(root, composer.input, "<Return>")
    assert "too long: 20002 of 20000 bytes" in composer.error_text.lower()
    assert composer.draft == draft
    shrink_to_minimum(root, window)
    assert fully_visible(composer.error_label)
    assert fully_visible(composer.counter_label)
    assert fully_visible(composer.send_button)
    assert alice.conversation.shown == {}
    assert alice.client.history("bob") == []

    composer.input.delete("end-3c", "end")
    root.update()
    assert composer.counter_label.cget("text") == "19998 / 20000 bytes"
    assert str(composer.counter_label.cget("style")) == "Muted.TLabel"
    press(root, composer.input, "<Return>")
    assert composer.draft == ""
    assert composer.error_text == ""
    wait_until(root, lambda: outgoing_states(alice) == ["delivered"], 30, "delivered")
    assert composer.counter_label.cget("text") == "0 / 20000 bytes"


# --------------------------------------------------------------------------- logging in


def test_wrong_password_and_bad_name_are_explained(
    root, server, make_client, open_window
):
    make_client(server, "carol").stop()
    chat = open_window("carol", server.port)

    fill(chat.login.password_entry, "not-the-password")
    press(root, chat.login.password_entry, "<Return>")
    wait_until(root, lambda: not chat.login.working, what="the refusal")
    assert chat.main is None
    assert chat.login.status_text == "Wrong account name or password."
    assert not chat.login.offer_frame.winfo_ismapped()
    assert chat.login.password_entry.instate(["!disabled"])  # usable again

    fill(chat.login.account_entry, "two words")
    chat.login.login_button.invoke()
    assert "Invalid account name" in chat.login.status_text
    assert not chat.login.working

    fill(chat.login.account_entry, "carol")
    log_in(root, chat)


def test_damaged_database_and_changed_server_key_are_explained(
    root, server, open_window, tmp_path
):
    # A profile database that is not one: the dialog names the file.
    chat = open_window("dana", server.port)
    profile = core.profile_path(tmp_path / "gui-dana", "127.0.0.1", server.port, "dana")
    profile.parent.mkdir(parents=True)
    profile.write_bytes(b"this is not an sqlite database" * 100)
    fill(chat.login.password_entry, PASSWORD)
    chat.login.create_button.invoke()
    assert str(profile) in chat.login.status_text
    assert not chat.login.working

    # A server that shows another key than the one pinned on first contact.
    other = open_window("omar", server.port)
    address = f"127.0.0.1:{server.port}"
    known = KnownServers(tmp_path / "gui-omar" / core.KNOWN_SERVERS_FILE)
    known.pin(address, crypto.generate_key_pair(1024).public.pem)
    fill(other.login.password_entry, PASSWORD)
    other.login.create_button.invoke()
    wait_until(root, lambda: not other.login.working, what="the refusal")
    assert other.login.status_text.startswith(
        f"The server at {address} shows a different identity key than before"
    )
    assert other.main is None


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_nobody_answers_offers_to_host_a_server(
    root, tmp_path, server_pair, open_window
):
    port = free_port()
    # The hosted server keeps its key in its database; give it one made earlier so
    # the test need not wait for a 2048-bit key.
    database = open_server_database(
        tmp_path / "gui-hana" / background.HOSTED_SERVER_DIR_NAME
    )
    database.call(
        lambda c: server_store.set_setting(
            c, SERVER_KEY_SETTING, server_pair.private_pem
        )
    )
    database.close()

    chat = open_window("hana", port)
    fill(chat.login.password_entry, PASSWORD)
    chat.login.create_button.invoke()
    wait_until(root, lambda: chat.login.offer_frame.winfo_ismapped(), what="the offer")
    assert chat.login.status_text.startswith(f"Cannot reach 127.0.0.1:{port}")
    offer = chat.login.offer_label.cget("text")
    assert (
        offer == f"Nobody answers at 127.0.0.1:{port}. Host a server on this computer?"
    )

    chat.login.host_button.invoke()
    wait_until(
        root, lambda: chat.main is not None, 30, "the login on the hosted server"
    )
    note = chat.main.hosting_label.cget("text")
    assert hosting_note(port, lan_addresses()) in note
    wait_until(
        root, lambda: chat.main.status_text.startswith("Connected"), what="connected"
    )

    close_like_window_manager(chat)
    chat.stopping.join(15)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


class Heartbeat:
    """An after() timer that records the longest gap between its beats."""

    def __init__(self, root, interval_ms=100):
        self.root = root
        self.interval_ms = interval_ms
        self.longest = 0.0
        self._last = time.monotonic()
        self._id = root.after(interval_ms, self._beat)

    def _beat(self):
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last)
        self._last = now
        self._id = self.root.after(self.interval_ms, self._beat)

    def stop(self):
        self.root.after_cancel(self._id)


def test_case_04_window_never_freezes(root, server, open_window, monkeypatch):
    # The client waits HELLO_TIMEOUT_SECONDS (8 s) for a silent server's hello, as
    # a real user would; the case asks for a failure within about 10 s.
    heartbeat = Heartbeat(root)

    # First launch: a 2048-bit key pair is made while the dialog keeps drawing.
    chat = open_window("dora", server.port, key_bits=2048)
    fill(chat.login.password_entry, PASSWORD)
    chat.login.create_button.invoke()
    seen = set()

    def logged_in():
        if chat.login is not None:
            seen.add(chat.login.status_text.split("  (")[0])
            assert chat.login.working or chat.main is not None, chat.login.status_text
        return chat.main is not None

    wait_until(root, logged_in, 60, "the first login")
    assert any(s.startswith("Making your 2048-bit key pair") for s in seen), seen
    close_like_window_manager(chat)

    # A server that accepts the connection and never says hello.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        chat = open_window("erin", silent.getsockname()[1])
        fill(chat.login.password_entry, PASSWORD)
        started = time.monotonic()
        chat.login.login_button.invoke()
        wait_until(root, lambda: not chat.login.working, 15, "the failure")
        assert time.monotonic() - started < 10
        assert chat.login.status_text == (
            f"Could not log in to 127.0.0.1:{silent.getsockname()[1]}: "
            "the server did not answer in time."
        )

        # Cancel and close work while it waits.
        chat.login.login_button.invoke()
        root.update()
        chat.login.cancel_button.invoke()
        assert chat.login.status_text == "Cancelled."
        chat.login.login_button.invoke()
        root.update()
        close_like_window_manager(chat)
        assert not chat.window.winfo_exists()

    wait_until(root, lambda: background.wait_for_stops(0), what="the clients to stop")
    heartbeat.stop()
    print(f"longest gap between 100 ms heartbeats: {heartbeat.longest * 1000:.0f} ms")
    assert heartbeat.longest <= 0.25


# --------------------------------------------------------------------------- case 03


class ThreadCheckingTk:
    """Stands in for a Tk interpreter and notes every use from another thread."""

    def __init__(self, real):
        self._real = real
        self.violations = []

    def __getattr__(self, name):
        current = threading.current_thread()
        if current is not threading.main_thread():
            self.violations.append(f"{current.name} used tk.{name}")
        return getattr(self._real, name)


def test_case_03_tk_only_main_thread(
    root, make_server, make_client, open_window, tmp_path, monkeypatch
):
    server = make_server(limits=Limits(messages_per_second=5000, message_burst=5000))
    make_client(server, "sender").stop()
    guard = ThreadCheckingTk(root.tk)
    monkeypatch.setattr(root, "tk", guard)  # every widget made from now on uses it

    bob_window = open_window("bob", server.port)
    bob = log_in(root, bob_window, create=True)
    add_contact_from_list(root, bob, "sender")

    # The sender's 500 messages wait in its outbox and leave in one burst on login.
    sender = ChatClient(
        tmp_path / "home-sender",
        "127.0.0.1",
        server.port,
        "sender",
        PASSWORD,
        key_bits=TEST_CLIENT_KEY_BITS,
    )
    try:
        expected = [f"burst {n:03d}" for n in range(500)]
        for text in expected:
            sender.send_text("bob", text)
        sender.start()
        started = time.monotonic()
        wait_until(root, lambda: len(bob.conversation.shown) >= 500, 30, "500 messages")
        print(
            f"500 messages drawn {time.monotonic() - started:.1f} s after the burst began"
        )
        assert texts_shown(bob) == expected
        assert [
            line.split("  ", 2)[2] for line in bob.conversation.message_lines()
        ] == expected

        # The server goes away: a status, not a message.
        server.stop()
        wait_until(
            root, lambda: bob.status_text.startswith("Offline"), what="offline status"
        )
        assert len(bob.conversation.message_lines()) == 500
        assert "Offline" not in bob.conversation.text.get("1.0", "end")

        # It comes back; the window is closed while messages are still arriving.
        server.start(server.port)
        wait_until(
            root, lambda: bob.status_text.startswith("Connected"), 30, "reconnection"
        )
        for number in range(300):
            sender.send_text("bob", f"late {number}")
            if number % 20 == 0:
                root.update()
            if number == 150:
                wait_until(
                    root, lambda: len(bob.conversation.shown) > 500, 30, "late ones"
                )
                close_like_window_manager(bob_window)
        bob_window.stopping.join(10)
        for _ in range(20):
            root.update()
            time.sleep(0.01)
    finally:
        sender.stop()
    assert guard.violations == []


APP_SCRIPT = textwrap.dedent(
    """
    import logging, sys
    from pathlib import Path
    logging.basicConfig(level=logging.WARNING)
    from chat_tk.gui.app import run_gui
    sys.exit(run_gui(Path(sys.argv[1]), "127.0.0.1", int(sys.argv[2]), "zed", key_bits=1024))
    """
)


def xdotool(*args):
    return subprocess.run(
        ["xdotool", *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()


def test_case_03_app_exits_cleanly_while_messages_arrive(
    make_server, make_client, tmp_path
):
    """The real run_gui in its own process: log in by keyboard, quit mid-burst."""
    if shutil.which("xdotool") is None:
        pytest.fail("xdotool is needed to drive the app in its own process")
    server = make_server(limits=Limits(messages_per_second=5000, message_burst=5000))
    make_client(server, "zed", home="gui-zed").stop()
    sender = make_client(server, "sender")
    app = subprocess.Popen(
        [sys.executable, "-c", APP_SCRIPT, str(tmp_path / "gui-zed"), str(server.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        # xdotool matches the title byte by byte, so the pattern skips the UTF-8 dash.
        window = xdotool(
            "search", "--sync", "--name", "^chat_tk .* log in$"
        ).splitlines()[0]
        xdotool("windowfocus", "--sync", window)
        xdotool("type", PASSWORD)
        xdotool("key", "Return")
        xdotool("search", "--sync", "--name", "^chat_tk .* zed$")
        for number in range(200):
            sender.send_text("zed", f"hello {number}")
        time.sleep(0.3)
        xdotool("key", "ctrl+q")
        quit_pressed = time.monotonic()
        out, err = app.communicate(timeout=30)
    except BaseException:
        if app.poll() is None:
            app.kill()
        print(app.communicate()[1])  # shown by pytest when the test fails
        raise
    assert app.returncode == 0, err
    print(f"the app ended {time.monotonic() - quit_pressed:.1f} s after Ctrl+Q")
    for trouble in (
        "Tcl_AsyncDelete",
        "main thread is not in main loop",
        "Traceback",
        "Exception ignored",
    ):
        assert trouble not in err, err


# --------------------------------------------------------------------------- menus


def test_menus_shortcuts_and_changed_keys(
    root, server, make_client, open_window, monkeypatch
):
    bob = make_client(server, "bob")
    make_client(server, "cleo")
    alice_window = open_window("alice", server.port)
    alice = log_in(root, alice_window, create=True)
    add_contact_by_typing(root, alice, "bob")
    add_contact_by_typing(root, alice, "cleo")
    assert alice.contacts.names() == ["bob", "cleo"]
    assert alice.contacts.selected() == "cleo"

    # Ctrl+Up and Ctrl+Down walk the list, from the input box too.
    press(root, alice.composer.input, "<Control-Up>")
    assert alice.conversation.peer == "bob"
    press(root, alice.contacts.tree, "<Control-Down>")
    assert alice.conversation.peer == "cleo"
    press(root, alice.contacts.tree, "<Control-Up>")
    assert alice.conversation.peer == "bob"

    press(root, alice.contacts.tree, "<Control-o>")
    wait_until(root, lambda: is_open(alice.online_dialog), what="the online dialog")
    wait_until(
        root,
        lambda: alice.online_dialog.names() == ["alice", "bob", "cleo"],
        what="names",
    )
    dialog = alice.online_dialog
    wait_until(root, lambda: inside(root.focus_get(), dialog), what="focus in it")
    press_where_the_focus_is(root, "<Escape>")
    assert not is_open(alice.online_dialog)

    # bob comes back with a new key pair: alice is warned and must decide.
    bob.stop()
    make_client(server, "bob", register=False, home="home-bob-new")
    wait_until(
        root, lambda: "⚠" in alice.contacts.row_text("bob")[0], what="the ⚠ flag"
    )
    assert "key changed" in alice.conversation.text.get("1.0", "end")
    assert alice.conversation.key_banner.winfo_ismapped()
    shrink_to_minimum(root, alice_window)
    assert fully_visible(alice.conversation.key_banner)
    assert fully_visible(alice.composer.send_button)

    press(root, alice.composer.input, "<Control-k>")
    wait_until(root, lambda: is_open(alice.safety_dialog), what="the safety dialog")
    dialog = alice.safety_dialog
    wait_until(root, lambda: inside(root.focus_get(), dialog), what="focus in it")
    press_where_the_focus_is(root, "<Escape>")
    assert not is_open(alice.safety_dialog)

    press(root, alice.composer.input, "<Control-k>")
    wait_until(root, lambda: is_open(alice.safety_dialog), what="the safety dialog")
    assert alice.composer.draft == ""  # Ctrl+K did not edit the text
    pinned, offered = alice.client.fingerprint_of("bob")
    assert offered is not None
    assert pinned != offered
    alice.safety_dialog.accept_button.invoke()
    wait_until(
        root, lambda: "⚠" not in alice.contacts.row_text("bob")[0], what="accepted"
    )
    assert not alice.conversation.key_banner.winfo_ismapped()

    monkeypatch.setattr(messagebox, "askyesno", lambda *args, **kwargs: False)
    press(root, alice.contacts.tree, "<Delete>")
    root.update()
    assert alice.contacts.names() == ["bob", "cleo"]
    monkeypatch.setattr(messagebox, "askyesno", lambda *args, **kwargs: True)
    press(root, alice.contacts.tree, "<Delete>")
    wait_until(root, lambda: alice.contacts.names() == ["cleo"], what="bob removed")


def received_texts(client, count):
    seen = []
    while len(seen) < count:
        event = wait_for_event(client.events, lambda e: isinstance(e, ev.MessageAdded))
        seen.append(event.record.text)
    return seen


def test_added_contact_opens_and_each_conversation_keeps_its_draft(
    root, server, make_client, open_window
):
    bob = make_client(server, "bob")
    carol = make_client(server, "carol")
    zoe = make_client(server, "Zoë")
    alice = log_in(root, open_window("alice", server.port), create=True)
    add_contact_by_typing(root, alice, "bob")
    add_contact_by_typing(root, alice, "carol")
    assert alice.contacts.selected() == "carol"

    # With bob selected, Zoë is added by typing her name: her conversation opens,
    # so the next message goes to her. The list sorts her after bob and carol.
    alice.contacts.select("bob")
    root.update()
    assert alice.conversation.title == "bob  ·  online"
    add_contact_by_typing(root, alice, "Zoë")
    assert alice.contacts.names() == ["bob", "carol", "Zoë"]
    assert alice.contacts.selected() == "Zoë"
    assert alice.conversation.peer == "Zoë"
    assert alice.conversation.title == "Zoë  ·  online"
    type_and_send(root, alice, "hello Zoë")
    assert received_texts(zoe, 1) == ["hello Zoë"]

    # Each conversation keeps its own draft, whether reached by key or by click.
    alice.composer.input.insert("end", "abcdef")
    press(root, alice.composer.input, "<Control-Up>")
    assert alice.conversation.peer == "carol"
    assert alice.composer.draft == ""
    alice.composer.input.insert("end", "for carol")
    alice.contacts.select("bob")  # what a click on bob's row does
    root.update()
    assert alice.conversation.title.startswith("bob")
    assert alice.composer.draft == ""
    press(root, alice.composer.input, "<Control-Down>")
    assert alice.composer.draft == "for carol"
    type_and_send(root, alice, "")
    press(root, alice.composer.input, "<Control-Down>")
    assert alice.composer.draft == "abcdef"
    type_and_send(root, alice, "")
    assert received_texts(carol, 1) == ["for carol"]
    assert received_texts(zoe, 1) == ["abcdef"]
    assert alice.client.history("bob") == []

    # While our own connection is down, nobody is shown online. (Quiet first: a
    # server stopped while it still answers requests may log an error.)
    wait_until(
        root,
        lambda: (
            [r.state for r in alice.client.history("carol")] == ["delivered"]
            and outgoing_states(alice) == ["delivered"] * 2
        ),
        what="everything delivered",
    )
    server.stop()
    wait_until(root, lambda: alice.status_text.startswith("Offline"), what="offline")
    assert [alice.contacts.row_text(n)[0][0] for n in ("bob", "carol", "Zoë")] == [
        "○"
    ] * 3
    assert alice.conversation.title == "Zoë"

    server.start(server.port)
    wait_until(
        root,
        lambda: alice.conversation.title == "Zoë  ·  online",
        30,
        "Zoë online again",
    )
    wait_until(root, lambda: alice.contacts.row_text("bob")[0] == "●  bob", what="bob")
    assert bob.account == "bob"


# --------------------------------------------------------------------------- drawing


def make_record(seq, text, state="received", outgoing=False, problem=None, at=None):
    stamp = at if at is not None else 1_700_000_000.0 + seq
    return MessageRecord(
        seq, f"id{seq}", "bob", outgoing, text, state, problem, stamp, stamp
    )


def test_conversation_draws_each_message_once_and_updates_in_place(root):
    window = tk.Toplevel(root)
    try:
        view = ConversationView(window, "alice")
        view.pack()
        view.show("bob", [make_record(1, "one"), make_record(3, "three")])
        view.add_many(
            [make_record(2, "two"), make_record(2, "two"), make_record(1, "one")]
        )
        pending = make_record(4, "four", "pending", outgoing=True)
        view.add_many([pending, pending])
        assert [line.split("  ", 2)[2] for line in view.message_lines()] == [
            "one",
            "two",
            "three",
            "four  …",
        ]

        view.add_many(
            [make_record(4, "four", "failed", outgoing=True, problem="no such user")]
        )
        view.add_many(
            [make_record(5, "", "unreadable", problem="signature does not match")]
        )
        lines = view.message_lines()
        assert lines[3].endswith("four  ✗ no such user")
        assert lines[4].endswith("bob  [could not be read: signature does not match]")
        assert "unreadable" in view.text.tag_names(f"m5.first + {len(lines[4]) - 3}c")
    finally:
        window.destroy()


def test_times_and_marks():
    noon = time.mktime((2026, 3, 5, 12, 0, 0, 0, 0, -1))
    assert format_time(noon - 3600, now=noon) == "11:00"
    assert format_time(noon - 2 * 86400, now=noon) == "3 Mar 12:00"
    assert format_time(noon - 400 * 86400, now=noon) == "29 Jan 2025 12:00"
    assert state_mark(make_record(1, "x", "stored", outgoing=True)) == "✓"
    assert state_mark(make_record(1, "x", "delivered", outgoing=True)) == "✓✓"
    assert state_mark(make_record(1, "x", "received")) == ""


def test_hosting_note_names_address_and_port_as_the_form_asks():
    assert (
        hosting_note(9999, ["192.0.2.2"])
        == "Others on your network can connect to 192.0.2.2 port 9999."
    )
    assert hosting_note(9999, ["192.0.2.2", "198.51.100.7"]) == (
        "Others on your network can connect to 192.0.2.2 or 198.51.100.7 port 9999."
    )
    assert hosting_note(9999, []) == (
        "Others on your network can connect to this computer's network address, "
        "port 9999."
    )
