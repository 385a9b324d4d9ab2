from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

import chat_tk.paths
from chat_tk.paths import _platform_data_dir, default_data_dir, resolve_data_dir

PACKAGE_DIR = Path(chat_tk.paths.__file__).resolve().parent

posix_only = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="checks the XDG layout"
)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fake home folder, with no data-folder variables set."""
    fake_home = tmp_path / "home"
    fake_home.mkdir()
    monkeypatch.setenv("HOME", str(fake_home))
    monkeypatch.setenv("USERPROFILE", str(fake_home))
    monkeypatch.delenv("CHAT_TK_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return fake_home


def test_chat_tk_home_wins_over_the_platform_default(home, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAT_TK_HOME", str(tmp_path / "override"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    assert default_data_dir() == tmp_path / "override"


def test_chat_tk_home_expands_tilde(home, monkeypatch):
    monkeypatch.setenv("CHAT_TK_HOME", "~/chat-data")

    assert default_data_dir() == home / "chat-data"


def test_empty_chat_tk_home_is_ignored(home, monkeypatch):
    monkeypatch.setenv("CHAT_TK_HOME", "")

    assert default_data_dir() != Path()
    assert default_data_dir().name == "chat_tk"


@posix_only
def test_default_uses_xdg_data_home(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    assert default_data_dir() == tmp_path / "xdg" / "chat_tk"


@posix_only
def test_default_falls_back_to_local_share(home):
    assert default_data_dir() == home / ".local" / "share" / "chat_tk"


@posix_only
def test_relative_xdg_data_home_is_ignored(home, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")

    assert default_data_dir() == home / ".local" / "share" / "chat_tk"


def test_windows_uses_appdata(tmp_path):
    appdata = r"C:\Users\ann\AppData\Roaming"

    found = _platform_data_dir("win32", {"APPDATA": appdata}, tmp_path)

    assert found == Path(appdata) / "chat_tk"


def test_windows_without_appdata_uses_roaming_under_home(tmp_path):
    found = _platform_data_dir("win32", {}, tmp_path)

    assert found == tmp_path / "AppData" / "Roaming" / "chat_tk"


def test_macos_uses_application_support(tmp_path):
    found = _platform_data_dir("darwin", {"XDG_DATA_HOME": "/ignored"}, tmp_path)

    assert found == tmp_path / "Library" / "Application Support" / "chat_tk"


def test_default_is_never_next_to_the_code(home):
    assert PACKAGE_DIR not in default_data_dir().resolve().parents


def test_resolve_creates_the_chat_tk_home_folder_privately(home, tmp_path, monkeypatch):
    target = tmp_path / "deep" / "data"
    monkeypatch.setenv("CHAT_TK_HOME", str(target))

    resolved = resolve_data_dir(None)

    assert resolved == target.resolve()
    assert resolved.is_dir()
    if sys.platform != "win32":
        assert stat.S_IMODE(resolved.stat().st_mode) == 0o700


def test_resolve_argument_wins_over_chat_tk_home(home, tmp_path, monkeypatch):
    monkeypatch.setenv("CHAT_TK_HOME", str(tmp_path / "from-env"))

    resolved = resolve_data_dir(str(tmp_path / "from-arg"))

    assert resolved == (tmp_path / "from-arg").resolve()
    assert resolved.is_dir()
    assert not (tmp_path / "from-env").exists()


def test_resolve_expands_tilde_in_the_argument(home):
    assert resolve_data_dir("~/picked") == (home / "picked").resolve()
    assert (home / "picked").is_dir()


def test_resolve_returns_an_absolute_path(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    resolved = resolve_data_dir("relative-data")

    assert resolved.is_absolute()
    assert resolved == (tmp_path / "relative-data").resolve()


def test_resolve_keeps_an_existing_folder_and_its_contents(home, tmp_path):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "chat.db").write_bytes(b"keep me")

    resolved = resolve_data_dir(str(existing))

    assert resolved == existing.resolve()
    assert (existing / "chat.db").read_bytes() == b"keep me"


def test_resolve_refuses_a_folder_inside_the_package(home):
    inside = PACKAGE_DIR / "user-data"

    with pytest.raises(ValueError, match="inside the program's code"):
        resolve_data_dir(str(inside))
    assert not inside.exists()


def test_resolve_refuses_the_pyinstaller_unpack_folder(home, tmp_path, monkeypatch):
    # PyInstaller sets sys._MEIPASS to the folder it unpacks into.
    bundle = tmp_path / "_MEI12345"
    bundle.mkdir()
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)

    with pytest.raises(ValueError, match="inside the program's code"):
        resolve_data_dir(str(bundle / "chat_tk"))
    assert not (bundle / "chat_tk").exists()
