"""Case 08: the one-file executable, built here, run from an awkward folder.

Builds with PyInstaller into a temporary folder (about 20 s), copies the result to a
path with spaces and Cyrillic letters, and runs it with an environment that has no
Python settings: the version, the server's account commands (rsa and sqlite3 inside)
and the login window (Tcl/Tk inside), whose data must land in CHAT_TK_HOME.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def frozen_executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "PyInstaller",
            "--noconfirm",
            "--log-level",
            "WARN",
            "--distpath",
            str(build / "dist"),
            "--workpath",
            str(build / "work"),
            str(REPO / "pyinstaller.spec"),
        ],
        cwd=REPO,
        check=True,
        timeout=600,
    )
    awkward = build / "мои программы" / "chat tk folder"
    awkward.mkdir(parents=True)
    target = awkward / "chat_tk"
    shutil.copy2(build / "dist" / "chat_tk", target)
    return target


def bare_environment(home: Path) -> dict[str, str]:
    """What a user's desktop session might have: no Python variables at all."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "CHAT_TK_HOME": str(home / "data"),
    }
    if "DISPLAY" in os.environ:
        env["DISPLAY"] = os.environ["DISPLAY"]
    return env


def test_case_08_frozen_executable(frozen_executable: Path, tmp_path: Path) -> None:
    env = bare_environment(tmp_path)
    version = subprocess.run(
        [str(frozen_executable), "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("chat_tk ")

    server_dir = tmp_path / "server data"
    added = subprocess.run(
        [
            str(frozen_executable),
            "server",
            "--data-dir",
            str(server_dir),
            "--add-user",
            "Алиса",
        ],
        env=env,
        input="long-password\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [
            str(frozen_executable),
            "server",
            "--data-dir",
            str(server_dir),
            "--list-users",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Алиса" in listed.stdout

    # The login window opens (Tk is inside) and logs go to the user's data folder.
    window = subprocess.Popen(
        [str(frozen_executable), "-p", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        found = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not found:
            assert window.poll() is None, window.communicate()
            search = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", "chat_tk"],
                capture_output=True,
                text=True,
                env={**env, "PATH": "/usr/bin:/bin"},
            )
            found = search.stdout.strip()
            time.sleep(0.5)
        assert found, "no chat_tk window appeared"
    finally:
        window.terminate()
        window.communicate(timeout=10)

    assert (tmp_path / "data" / "logs" / "client.log").exists()
    assert sorted(p.name for p in frozen_executable.parent.iterdir()) == ["chat_tk"]
