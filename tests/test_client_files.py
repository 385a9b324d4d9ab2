"""The client's own files: a damaged database is reported by name, never replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TEST_CLIENT_KEY_BITS, wait_for_event

from chat_tk.client import events as ev
from chat_tk.client.core import KNOWN_SERVERS_FILE, ChatClient, profile_path
from chat_tk.errors import StorageError

GARBAGE = b"SQLite format 3\x00" + b"\xff" * 4000  # a header, then nonsense


def test_damaged_profile_database_is_named_and_kept(tmp_path: Path, server) -> None:
    profile = profile_path(tmp_path, "127.0.0.1", server.port, "alice")
    profile.parent.mkdir(parents=True)
    profile.write_bytes(GARBAGE)

    with pytest.raises(StorageError) as caught:
        ChatClient(
            tmp_path,
            "127.0.0.1",
            server.port,
            "alice",
            "pw-1234",
            key_bits=TEST_CLIENT_KEY_BITS,
        )

    assert str(profile) in str(caught.value)
    assert "move the file away" in str(caught.value)
    assert profile.read_bytes() == GARBAGE


def test_damaged_known_servers_file_fails_the_login_clearly(
    tmp_path: Path, server
) -> None:
    known = tmp_path / KNOWN_SERVERS_FILE
    known.write_bytes(GARBAGE)
    client = ChatClient(
        tmp_path,
        "127.0.0.1",
        server.port,
        "alice",
        "pw-1234",
        register=True,
        key_bits=TEST_CLIENT_KEY_BITS,
    )
    client.start()
    try:
        failed = wait_for_event(
            client.events, lambda e: isinstance(e, (ev.LoginFailed, ev.LoggedIn))
        )
    finally:
        client.stop()

    assert isinstance(failed, ev.LoginFailed)
    assert str(known) in failed.reason
    assert known.read_bytes() == GARBAGE


def test_profile_database_is_readable_by_its_owner_only(tmp_path: Path, server) -> None:
    client = ChatClient(
        tmp_path,
        "127.0.0.1",
        server.port,
        "alice",
        "pw-1234",
        key_bits=TEST_CLIENT_KEY_BITS,
    )
    client.store.close_thread_connection()
    mode = client.store.path.stat().st_mode & 0o777
    assert mode == 0o600, oct(mode)
