"""Message texts and passwords never cross the wire or reach the server's disk.

Two real ChatClients talk through a relay that records every byte in both
directions; afterwards the traffic, every file under the server's data folder and
every log record are searched for the secrets in each form they could leak in.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import pytest
from conftest import wait_for_event

from chat_tk.client import events as ev
from tests.wire import RecordingRelay

ALICE_PASSWORD = "Pässwörd-alice-7f3a-🔑"
BOB_PASSWORD = "bob-sесrеt-9d2c-Ünïcode"  # with Cyrillic letters among the Latin
TEXTS = [
    "The eagle lands at midnight 🦅 — marker-4c1e",
    "Квитанция номер 8841, café ☕ marker-b0b5",
    # Longer than one RSA block of the 1024-bit test keys (117 bytes).
    "long-marker-77aa " + "Съешь же ещё этих мягких французских булок. " * 8,
]

# An ASCII piece of each secret, long enough never to turn up by chance.
MARKERS = {
    ALICE_PASSWORD: "alice-7f3a",
    BOB_PASSWORD: "-9d2c-",
    TEXTS[0]: "marker-4c1e",
    TEXTS[1]: "marker-b0b5",
    TEXTS[2]: "long-marker-77aa",
}


def leak_forms(secret: str) -> dict[str, bytes]:
    """The byte strings under which `secret` could appear in traffic or files."""
    raw = secret.encode("utf-8")
    forms = {
        "utf-8": raw,
        "json-escaped": json.dumps(secret)[1:-1].encode("ascii"),
        "base64": base64.b64encode(raw),
        "utf-16-le": secret.encode("utf-16-le"),
    }
    # The ASCII marker alone catches a secret that was cut or re-encoded around it.
    forms["marker"] = MARKERS[secret].encode("ascii")
    return forms


def find_leaks(blob: bytes, where: str) -> list[str]:
    leaks = []
    for secret in [ALICE_PASSWORD, BOB_PASSWORD, *TEXTS]:
        for form, needle in leak_forms(secret).items():
            if needle in blob:
                leaks.append(f"{where}: {secret[:30]!r} as {form}")
    return leaks


def test_no_plaintext_on_the_wire_or_on_the_server_disk(
    server, make_client, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    relay = RecordingRelay(server.port)
    try:
        via_relay = type("Address", (), {"port": relay.port})()
        bob = make_client(via_relay, "bob", password=BOB_PASSWORD)
        alice = make_client(via_relay, "alice", password=ALICE_PASSWORD)

        for text in TEXTS:
            alice.send_text("bob", text)
            wait_for_event(
                bob.events,
                lambda e, t=text: isinstance(e, ev.MessageAdded) and e.record.text == t,
            )
        bob.send_text("alice", TEXTS[1] + " (echo)")
        wait_for_event(
            alice.events,
            lambda e: (
                isinstance(e, ev.MessageAdded) and e.record.text.endswith("(echo)")
            ),
        )
        assert [r.text for r in bob.history("alice")][:3] == TEXTS
    finally:
        for client in (locals().get("alice"), locals().get("bob")):
            if client is not None:
                client.stop()
        traffic = relay.stop()
        time.sleep(0.2)  # let the server see the goodbyes before it stops
        server.stop()  # checkpoint and close the database files

    assert len(traffic) > 5_000, "the relay recorded almost nothing"
    assert b'"action":"msg"' in traffic.replace(b" ", b"")

    leaks = find_leaks(traffic, "traffic")
    files = [p for p in Path(server.data_dir).rglob("*") if p.is_file()]
    assert any(p.name == "server.sqlite" for p in files)
    for path in files:
        leaks += find_leaks(path.read_bytes(), str(path.relative_to(server.data_dir)))
    log_text = "\n".join(record.getMessage() for record in caplog.records)
    leaks += find_leaks(log_text.encode("utf-8"), "log records")
    assert leaks == [], "\n".join(leaks)

    # Control: the same search does find the texts where they belong, in the
    # recipient's own database.
    bob_files = b"".join(
        p.read_bytes() for p in (tmp_path / "home-bob").rglob("*") if p.is_file()
    )
    assert find_leaks(bob_files, "bob's data"), (
        "the search finds nothing even where it should"
    )


@pytest.mark.parametrize("secret", list(MARKERS))
def test_leak_forms_are_distinct_and_searchable(secret):
    forms = leak_forms(secret)
    assert find_leaks(b"prefix " + forms["utf-8"] + b" suffix", "sample")
    assert find_leaks(forms["json-escaped"], "sample")
