"""The one bridge from the client's socket thread to the widgets.

This module owns EventPoller, which reads the client's event queue on the Tk
thread with after(). Nothing else may carry data into Tk: the socket thread only
puts events on the queue, and only the Tk thread takes them off and draws them.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import tkinter as tk
from collections.abc import Callable
from concurrent.futures import Future
from typing import Generic, TypeVar

from chat_tk.client import events as ev

log = logging.getLogger(__name__)

POLL_MILLISECONDS = 50
# A burst is drawn in slices, so that a thousand incoming messages cannot keep the
# window from answering the user for the time it takes to draw them all.
MAX_EVENTS_PER_POLL = 200
BUSY_POLL_MILLISECONDS = 5
FUTURE_POLL_MILLISECONDS = 100

T = TypeVar("T")


def cancel_after(widget: tk.Misc, after_id: str | None) -> None:
    """Cancel a timer; a destroyed widget has dropped its timers already."""
    if after_id is not None:
        with contextlib.suppress(tk.TclError):
            widget.after_cancel(after_id)


class EventPoller:
    """Calls handle(batch) on the Tk thread with the events that have arrived."""

    def __init__(
        self,
        widget: tk.Misc,
        source: queue.Queue[ev.Event],
        handle: Callable[[list[ev.Event]], None],
    ) -> None:
        self._widget = widget
        self._source = source
        self._handle = handle
        self._after_id: str | None = None

    @property
    def running(self) -> bool:
        return self._after_id is not None

    def start(self) -> None:
        if self._after_id is None:
            self._after_id = self._widget.after(POLL_MILLISECONDS, self._on_poll)

    def stop(self) -> None:
        after_id, self._after_id = self._after_id, None
        cancel_after(self._widget, after_id)

    def _on_poll(self) -> None:
        batch: list[ev.Event] = []
        while len(batch) < MAX_EVENTS_PER_POLL:
            try:
                batch.append(self._source.get_nowait())
            except queue.Empty:
                break

        # Schedule the next poll first: if drawing fails, the failure is logged by
        # report_callback_exception and the window still goes on receiving.
        delay = (
            BUSY_POLL_MILLISECONDS
            if len(batch) == MAX_EVENTS_PER_POLL
            else POLL_MILLISECONDS
        )
        self._after_id = self._widget.after(delay, self._on_poll)
        if batch:
            self._handle(batch)


class FutureWatcher(Generic[T]):
    """Calls done(future) on the Tk thread once a worker thread has finished it."""

    def __init__(
        self, widget: tk.Misc, future: Future[T], done: Callable[[Future[T]], None]
    ) -> None:
        self._widget = widget
        self._check: Callable[[], None] = lambda: self._on_check(future, done)
        self._after_id: str | None = widget.after(FUTURE_POLL_MILLISECONDS, self._check)

    def cancel(self) -> None:
        after_id, self._after_id = self._after_id, None
        cancel_after(self._widget, after_id)

    def _on_check(self, future: Future[T], done: Callable[[Future[T]], None]) -> None:
        if not future.done():
            self._after_id = self._widget.after(FUTURE_POLL_MILLISECONDS, self._check)
            return
        self._after_id = None
        done(future)
