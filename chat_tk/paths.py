"""Where chat_tk keeps its per-user data (database, keys, log file).

This module owns the choice of that folder. It uses the standard library only and
must not import anything from chat_tk.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

APP_DIR_NAME = "chat_tk"
DATA_DIR_ENV_VAR = "CHAT_TK_HOME"
DATA_DIR_MODE = 0o700

# The folder this code was loaded from. Data must never land here: a checkout is not
# per-user, and PyInstaller's unpack folder is deleted when the program exits.
_PACKAGE_DIR = Path(__file__).resolve().parent


def _platform_data_dir(platform: str, environ: Mapping[str, str], home: Path) -> Path:
    """The conventional per-user data folder for chat_tk on `platform`."""
    if platform == "win32":
        appdata = environ.get("APPDATA")
        base = Path(appdata) if appdata else home / "AppData" / "Roaming"
        return base / APP_DIR_NAME
    if platform == "darwin":
        return home / "Library" / "Application Support" / APP_DIR_NAME

    # The XDG base directory spec says a relative XDG_DATA_HOME is invalid and must
    # be ignored.
    xdg_data_home = environ.get("XDG_DATA_HOME", "")
    if xdg_data_home and Path(xdg_data_home).is_absolute():
        return Path(xdg_data_home) / APP_DIR_NAME
    return home / ".local" / "share" / APP_DIR_NAME


def default_data_dir() -> Path:
    """The data folder to use when no --data-dir is given: $CHAT_TK_HOME if set,
    else the platform's per-user application data folder."""
    override = os.environ.get(DATA_DIR_ENV_VAR, "")
    if override:
        return Path(override).expanduser()
    return _platform_data_dir(sys.platform, os.environ, Path.home())


def _code_dirs() -> list[Path]:
    folders = [_PACKAGE_DIR]
    bundle_dir = getattr(sys, "_MEIPASS", None)
    if bundle_dir:
        folders.append(Path(bundle_dir).resolve())
    return folders


def resolve_data_dir(arg: str | None) -> Path:
    """Turn a --data-dir argument (or None) into an absolute, existing folder.

    The argument wins over $CHAT_TK_HOME and the platform default. A missing folder
    is created readable by its owner only. Raises ValueError for a folder inside the
    program's own code, where data would be shared or thrown away.
    """
    chosen = Path(arg).expanduser() if arg else default_data_dir()
    data_dir = chosen.resolve()
    for code_dir in _code_dirs():
        if data_dir == code_dir or code_dir in data_dir.parents:
            raise ValueError(
                f"refusing data folder {data_dir}: it lies inside the program's "
                f"code at {code_dir}"
            )

    if not data_dir.is_dir():
        data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
        log.info("created data folder %s", data_dir)
    return data_dir
