"""Make docs/screenshot.png: alice's real main window in a short conversation.

Starts a real server in a temporary folder and real clients (bob, carol and dave
chat from plain ChatClients, alice through the GUI), then captures the window with
ImageMagick's `import`. Without a DISPLAY it starts its own Xvfb.

    python scripts/screenshot.py [--output docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import subprocess
import sys
import tempfile
import time
import tkinter as tk
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat_tk import crypto  # noqa: E402
from chat_tk.client import events as ev  # noqa: E402
from chat_tk.client.core import ChatClient  # noqa: E402
from chat_tk.gui.app import ChatWindow  # noqa: E402
from chat_tk.gui.background import wait_for_stops  # noqa: E402
from chat_tk.gui.main_window import MainWindow  # noqa: E402
from chat_tk.gui.theme import prepare_root  # noqa: E402
from chat_tk.server.net import ServerConfig  # noqa: E402
from chat_tk.server.runner import HostedServer  # noqa: E402

log = logging.getLogger(__name__)

SCREEN = "1100x700x24"
FIRST_DISPLAY_NUMBER = 99
CLIENT_KEY_BITS = 1024  # quick to make; the server's key is a real 2048-bit one
PASSWORD = "correct horse battery"
WAIT_SECONDS = 30.0


@contextmanager
def display() -> Iterator[str]:
    """The DISPLAY to draw on: the current one, or a private Xvfb for the run."""
    if os.environ.get("DISPLAY"):
        yield os.environ["DISPLAY"]
        return
    number = FIRST_DISPLAY_NUMBER
    while Path(f"/tmp/.X{number}-lock").exists():
        number += 1
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-screen", "0", SCREEN, "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not Path(f"/tmp/.X11-unix/X{number}").exists():
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("Xvfb did not start")
            time.sleep(0.05)
        os.environ["DISPLAY"] = f":{number}"
        yield os.environ["DISPLAY"]
    finally:
        server.terminate()
        server.wait(10)


def wait_for(root: tk.Tk, condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what}")
        root.update()
        time.sleep(0.01)


def wait_for_message_count(root: tk.Tk, main: MainWindow, count: int) -> None:
    wait_for(root, lambda: len(main.conversation.shown) == count, "a message")


def wait_for_event(client: ChatClient, wanted: type) -> ev.Event:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            event = client.events.get(timeout=0.1)
        except queue.Empty:
            continue
        if isinstance(event, wanted):
            return event
        if isinstance(event, ev.LoginFailed):
            raise SystemExit(f"{client.account}: {event.reason}")
    raise SystemExit(f"{client.account}: no {wanted.__name__}")


def peer(home: Path, port: int, name: str) -> ChatClient:
    client = ChatClient(
        home / name,
        "127.0.0.1",
        port,
        name,
        PASSWORD,
        register=True,
        key_bits=CLIENT_KEY_BITS,
    )
    client.start()
    wait_for_event(client, ev.LoggedIn)
    return client


def say(root: tk.Tk, main: MainWindow, text: str) -> None:
    """Type into alice's input box and press Send, as a user would."""
    main.composer.input.insert("end", text)
    main.composer.send_button.invoke()


def stage_conversation(
    root: tk.Tk, home: Path, port: int
) -> tuple[ChatWindow, list[ChatClient]]:
    bob, carol, dave = (peer(home, port, name) for name in ("bob", "carol", "dave"))
    dave.stop()  # registered, now offline

    chat = ChatWindow(
        root,
        data_dir=home / "alice",
        host="127.0.0.1",
        port=port,
        account="alice",
        key_bits=CLIENT_KEY_BITS,
    )
    assert chat.login is not None
    chat.login.password_entry.insert(0, PASSWORD)
    chat.login.create_button.invoke()
    wait_for(root, lambda: chat.main is not None, "alice's login")
    main = chat.main
    assert main is not None
    for name in ("bob", "carol", "dave"):
        main.client.add_contact(name)
    wait_for(
        root, lambda: main.contacts.names() == ["bob", "carol", "dave"], "contacts"
    )
    main.contacts.select("bob")
    wait_for(root, lambda: main.conversation.peer == "bob", "bob's conversation")

    def delivered() -> bool:
        return all(
            r.state == "delivered"
            for r in main.conversation.shown.values()
            if r.outgoing
        )

    script = [
        ("bob", "Morning! Did the release build pass on Windows?"),
        ("alice", "Yes, all green. The installer is 14 MB now."),
        ("bob", "Nice. Can you send me the checksum so I can post it?"),
        (
            "alice",
            "sha256 is in the release notes, line 3.\nI'll paste it here too once I'm back at my desk.",
        ),
        ("bob", "Perfect, thanks!"),
    ]
    for speaker, text in script:
        if speaker == "alice":
            say(root, main, text)
            wait_for(root, delivered, "delivery")
        else:
            shown = len(main.conversation.shown)
            bob.send_text("alice", text)
            wait_for_message_count(root, main, shown + 1)
    carol.send_text("alice", "Are we still on for lunch?")
    wait_for(
        root,
        lambda: main.contacts.row_text("carol")[1] == "1",
        "carol's unread message",
    )
    return chat, [bob, carol]


def xwininfo(*args: str) -> dict[str, str]:
    info = subprocess.run(
        ["xwininfo", *args], capture_output=True, text=True, check=True
    ).stdout
    return dict(
        line.strip().split(": ", 1) for line in info.splitlines() if ": " in line
    )


def capture(root: tk.Tk, output: Path) -> None:
    """Grab the window from the screen, with the menu bar Tk draws in its parent."""
    root.update_idletasks()  # draw, without letting the poller mark anything delivered
    wrapper = xwininfo("-tree", "-id", hex(root.winfo_id()))[
        "Parent window id"
    ].split()[0]
    box = xwininfo("-id", wrapper)
    x, y = box["Absolute upper-left X"], box["Absolute upper-left Y"]
    crop = f"{box['Width']}x{box['Height']}+{x}+{y}"
    subprocess.run(
        ["import", "-window", "root", "-crop", crop, str(output)], check=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"
    parser.add_argument("--output", type=Path, default=default)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with display(), tempfile.TemporaryDirectory() as temp:
        home = Path(temp)
        print("making the server's 2048-bit key…", flush=True)
        config = ServerConfig(
            host="127.0.0.1", port=0, data_dir=home / "server", open_registration=True
        )
        server = HostedServer(config, crypto.generate_key_pair(2048))
        port = server.start()
        root = tk.Tk(className="chat_tk")
        prepare_root(root)
        peers: list[ChatClient] = []
        try:
            chat, peers = stage_conversation(root, home, port)
            assert chat.main is not None
            say(root, chat.main, "Sending it now")  # shown pending: nothing polled yet
            capture(root, args.output)
            chat.close()
            wait_for_stops(10)
        finally:
            for client in peers:
                client.stop()
            server.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
