"""The desktop app: one Tk root that shows the login dialog, then the main window.

This module owns the life of a window and of the session inside it: what is shown
when, and that closing it stops the client and any hosted server without making
the Tk thread wait. Data reaches Tk only through polling.EventPoller.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
import threading
import tkinter as tk
from collections.abc import Callable
from pathlib import Path

from chat_tk import crypto
from chat_tk.gui import theme
from chat_tk.gui.background import stop_in_background, wait_for_stops
from chat_tk.gui.login import LoginDialog, LoginResult
from chat_tk.gui.main_window import MainWindow

log = logging.getLogger(__name__)

# On exit, how long the process waits for the client to say goodbye and for a
# hosted server to close its connections (the window is already gone by then).
EXIT_WAIT_SECONDS = 15.0
SIGNAL_CHECK_MILLISECONDS = 250

# How often a thread running Python code must offer the GIL to a waiting one. Key
# generation (rsa.newkeys on the socket or hosted-server thread) lets go of the GIL
# briefly in os.urandom every few milliseconds; each time, CPython's default 5 ms
# wait of the Tk thread starts over, and the window was seen frozen for seconds.
# At 1 ms the Tk thread gets its turn during the next modular exponentiation.
GIL_SWITCH_INTERVAL_SECONDS = 0.001


def keep_tk_thread_responsive() -> None:
    """Make CPU-heavy worker threads yield to the Tk thread quickly (process-wide)."""
    if sys.getswitchinterval() > GIL_SWITCH_INTERVAL_SECONDS:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)


class ChatWindow:
    """One session in one window: a Tk root in the app, a Toplevel in the tests."""

    def __init__(
        self,
        window: tk.Tk | tk.Toplevel,
        *,
        data_dir: Path,
        host: str,
        port: int,
        account: str | None,
        key_bits: int = crypto.DEFAULT_KEY_BITS,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        self.window = window
        self.login: LoginDialog | None = None
        self.main: MainWindow | None = None
        self.closed = False
        self.stopping: threading.Thread | None = None
        self._on_closed_callback = on_closed
        keep_tk_thread_responsive()

        window.title("chat_tk — log in")
        window.resizable(False, False)
        window.protocol("WM_DELETE_WINDOW", self.close)
        self.login = LoginDialog(
            window,
            data_dir=data_dir,
            host=host,
            port=port,
            account=account,
            key_bits=key_bits,
            on_logged_in=self._on_logged_in,
            on_cancelled=self.close,
        )
        self.login.pack(fill="both", expand=True)

    def _on_logged_in(self, session: LoginResult) -> None:
        if self.login is not None:
            self.login.destroy()
            self.login = None
        log.info("logged in; showing the main window")
        self.main = MainWindow(self.window, session, on_quit=self.close)
        self.main.pack(fill="both", expand=True)

    def close(self) -> None:
        """Close the window now; the client and hosted server stop on another thread."""
        if self.closed:
            return
        self.closed = True
        if self.login is not None:
            self.login.abort()
        if self.main is not None:
            self.main.stop()
            self.stopping = stop_in_background(self.main.client, self.main.hosting)
        self.window.destroy()
        if self._on_closed_callback is not None:
            self._on_closed_callback()


def run_gui(
    data_dir: Path,
    host: str,
    port: int,
    account: str | None,
    key_bits: int = crypto.DEFAULT_KEY_BITS,
) -> int:
    """Run the app until its window closes; returns the exit status."""
    try:
        _run_window(data_dir, host, port, account, key_bits)
    except tk.TclError as exc:  # no display, for one
        log.error("cannot open a window: %s", exc)
        return 1

    # The Tk objects went out of scope with _run_window; collect them here, on
    # the main thread, rather than later on whichever thread the collector picks.
    gc.collect()
    if not wait_for_stops(EXIT_WAIT_SECONDS):
        log.warning("the client or the hosted server did not stop in time")
    return 0


def _run_window(
    data_dir: Path, host: str, port: int, account: str | None, key_bits: int
) -> None:
    root = tk.Tk(className="chat_tk")
    theme.prepare_root(root)
    chat = ChatWindow(
        root,
        data_dir=data_dir,
        host=host,
        port=port,
        account=account,
        key_bits=key_bits,
    )

    def on_interrupt(signum: int, frame: object) -> None:
        # Ctrl+C in the terminal closes the window the normal way; left alone it
        # would surface as an error inside whichever Tk callback was running.
        with contextlib.suppress(tk.TclError):
            root.after(0, chat.close)

    def on_wake_up() -> None:
        # Python runs a signal handler only when it gets to run some bytecode,
        # and an idle Tk main loop runs none.
        root.after(SIGNAL_CHECK_MILLISECONDS, on_wake_up)

    root.after(SIGNAL_CHECK_MILLISECONDS, on_wake_up)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        root.mainloop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
