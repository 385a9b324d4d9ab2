"""Look and feel shared by every window: the ttk theme, fonts, colours and spacing.

This module owns the constants the views draw with and the one-time set-up of a Tk
root (theme, fonts, and sending callback errors to the log instead of a dialog).
"""

from __future__ import annotations

import logging
import tkinter as tk
from tkinter import font as tkfont
from tkinter import ttk
from types import TracebackType

log = logging.getLogger(__name__)

PAD = 8
SMALL_PAD = 4
BASE_FONT_POINTS = 10

MUTED = "#6b7280"
ERROR = "#b42318"
WARNING_BACKGROUND = "#fff4ce"
WARNING_TEXT = "#7a4b00"
OWN_NAME = "#1d4ed8"
PEER_NAME = "#047857"
ONLINE = "#15803d"
CONVERSATION_BACKGROUND = "#ffffff"
BORDER = "#9ca3af"
INPUT_BACKGROUND = "#ffffff"
DISABLED_BACKGROUND = "#ecebe8"
PREFERRED_THEMES = ("clam", "alt", "default")


def _log_callback_exception(
    kind: type[BaseException], value: BaseException, traceback: TracebackType | None
) -> None:
    """Tk's default prints the traceback to stderr; ours goes to the log, no dialog."""
    log.error("error in a Tk callback", exc_info=(kind, value, traceback))


def prepare_root(root: tk.Tk) -> None:
    """Set up a fresh root once: error logging, theme, fonts and option defaults."""
    root.report_callback_exception = _log_callback_exception
    style = ttk.Style(root)
    for theme in PREFERRED_THEMES:
        if theme in style.theme_names():
            style.theme_use(theme)
            break

    for name in ("TkDefaultFont", "TkTextFont", "TkMenuFont", "TkHeadingFont"):
        tkfont.nametofont(name, root).configure(size=BASE_FONT_POINTS)
    style.configure("Treeview", rowheight=int(BASE_FONT_POINTS * 2.6))
    style.configure("Muted.TLabel", foreground=MUTED)
    style.configure("Error.TLabel", foreground=ERROR)
    style.configure(
        "Warning.TLabel",
        background=WARNING_BACKGROUND,
        foreground=WARNING_TEXT,
        padding=(PAD, SMALL_PAD),
    )
    style.configure("Status.TFrame", relief="groove", borderwidth=1)
    style.configure("Title.TLabel", font=font_spec(root, 3, "bold"))
    root.option_add("*tearOff", False)


def wrap_to_own_width(label: ttk.Label, margin_pixels: int) -> None:
    """Make a label wrap its text at the width the layout gives it, less a margin.

    A fixed wraplength either clips the text in a narrow window or leaves most of
    a wide one unused. The margin covers the label's own padding and border.
    """

    def on_resized(event: tk.Event[tk.Misc]) -> None:
        wanted = str(max(event.width - margin_pixels, PAD * 10))
        if str(label.cget("wraplength")) != wanted:
            label.configure(wraplength=wanted)

    label.bind("<Configure>", on_resized, add=True)


def font_spec(
    widget: tk.Misc, extra_points: int = 0, style: str = "normal"
) -> tuple[str, int, str]:
    """A font description based on the default font, e.g. font_spec(w, 0, "bold").

    Plain tuples rather than tkinter.font.Font objects: a Font deletes itself in
    __del__, which may run on whichever thread the garbage collector happens to
    run, and Tk must only be called from the main thread.
    """
    base = tkfont.nametofont("TkDefaultFont", widget)
    return (str(base.actual("family")), int(base.actual("size")) + extra_points, style)
