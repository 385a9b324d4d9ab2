"""Keys, sealed passwords and end-to-end envelopes in chat_tk.crypto.

Key generation is pure Python and slow, so each size is made once per module. Case
numbers refer to CASES.md.
"""

from __future__ import annotations

import base64
import json
import re

import pytest
import rsa

from chat_tk import crypto, protocol
from chat_tk.crypto import (
    MAX_TEXT_BYTES,
    PasswordTooLong,
    TextTooLong,
    open_envelope,
    open_sealed_password,
    seal_envelope,
    seal_password,
)
from chat_tk.errors import (
    CryptoError,
    DecryptionFailed,
    EnvelopeMismatch,
    SignatureInvalid,
    WrongRecipientKey,
)

MSG_ID = "k3Jd9-_xQ0pLm2Zr"
SENT = 1712345678.125
NONCE = "9f" * 16  # 128 bits, as the server's hello carries


@pytest.fixture(scope="module")
def pair_512():
    return crypto.generate_key_pair(512)


@pytest.fixture(scope="module")
def pair_1024():
    return crypto.generate_key_pair(1024)


@pytest.fixture(scope="module")
def pair_2048():
    return crypto.generate_key_pair(2048)


def text_of_bytes(size):
    """A text of exactly `size` UTF-8 bytes mixing 1-, 2- and 4-byte characters."""
    pattern = "Жx👋 ю"  # 2 + 1 + 4 + 1 + 2 bytes
    text = ""
    while len(text.encode()) + len(pattern.encode()) <= size:
        text += pattern
    text += "y" * (size - len(text.encode()))
    assert len(text.encode()) == size
    return text


def seal(text, sender_pair, recipient_pair, sender="alice", recipient="bob"):
    return seal_envelope(
        text, sender, recipient, MSG_ID, SENT, sender_pair, recipient_pair.public
    )


def open_as_recipient(
    payload, sender_pair, recipient_pair, sender="alice", recipient="bob"
):
    return open_envelope(
        payload,
        sender,
        recipient,
        MSG_ID,
        sender_pair.public,
        recipient_pair,
        i_am_sender=False,
    )


def open_as_sender(payload, sender_pair, sender="alice", recipient="bob"):
    return open_envelope(
        payload,
        sender,
        recipient,
        MSG_ID,
        sender_pair.public,
        sender_pair,
        i_am_sender=True,
    )


def msg_frame(payload, sender="alice", recipient="bob", message_id=MSG_ID):
    return protocol.encode(
        {
            "action": "msg",
            "id": message_id,
            "time": SENT,
            "from": sender,
            "to": recipient,
            "encoding": crypto.ENVELOPE_ENCODING,
            "message": payload,
        }
    )


def edit_envelope(payload, **fields):
    envelope = json.loads(payload)
    envelope.update(fields)
    return json.dumps(envelope)


def envelope_bytes(payload, field):
    return base64.b64decode(json.loads(payload)[field])


def b64(data):
    return base64.b64encode(data).decode("ascii")


# --------------------------------------------------------------------------- envelopes


@pytest.mark.parametrize("size", [0, 245, 246, 5_000])
def test_envelope_round_trip(size, pair_1024, pair_2048):
    text = text_of_bytes(size)

    payload = seal(text, pair_1024, pair_2048)
    opened = open_as_recipient(payload, pair_1024, pair_2048)

    assert opened == crypto.OpenedMessage(text, SENT)
    assert open_as_sender(payload, pair_1024).text == text
    assert len(msg_frame(payload)) <= protocol.MAX_CLIENT_MSG_FRAME_BYTES


@pytest.mark.parametrize("bits", [2048, 1024])
def test_largest_text_round_trips_and_fits_the_msg_frame(bits, request):
    pair = request.getfixturevalue(f"pair_{bits}")
    # The worst case for the inner header: 32-letter names of 4-byte characters and a
    # 64-character id.
    sender, recipient, message_id = "𠀀" * 32, "𠀁" * 32, "Z" * 64
    text = text_of_bytes(MAX_TEXT_BYTES)

    payload = seal_envelope(
        text, sender, recipient, message_id, -1.2345678901234567e-300, pair, pair.public
    )
    frame = msg_frame(payload, sender, recipient, message_id)

    assert len(frame) <= protocol.MAX_CLIENT_MSG_FRAME_BYTES
    for i_am_sender in (False, True):
        opened = open_envelope(
            payload, sender, recipient, message_id, pair.public, pair, i_am_sender
        )
        assert opened.text == text


def test_largest_text_on_the_smallest_accepted_key_fits_or_is_refused_before_sending(
    pair_512,
):
    # load_public_key accepts 512-bit keys; a text the length check allows must then
    # either fit the msg frame or be refused by seal_envelope with TextTooLong.
    text = text_of_bytes(MAX_TEXT_BYTES)

    try:
        payload = seal(text, pair_512, pair_512)
    except TextTooLong:
        return
    assert len(msg_frame(payload)) <= protocol.MAX_CLIENT_MSG_FRAME_BYTES


def test_text_one_byte_over_the_maximum_is_refused(pair_1024, pair_2048):
    text = "x" * (MAX_TEXT_BYTES + 1)

    with pytest.raises(TextTooLong) as caught:
        crypto.check_text_length(text)
    assert (caught.value.size, caught.value.limit) == (
        MAX_TEXT_BYTES + 1,
        MAX_TEXT_BYTES,
    )
    assert (
        str(caught.value) == f"too long: {MAX_TEXT_BYTES + 1} of {MAX_TEXT_BYTES} bytes"
    )
    with pytest.raises(TextTooLong):
        seal(text, pair_1024, pair_2048)


def test_text_length_is_counted_in_utf8_bytes():
    half = MAX_TEXT_BYTES // 2

    assert crypto.check_text_length("ж" * half) == MAX_TEXT_BYTES
    # Fewer characters than the limit, but more bytes.
    with pytest.raises(TextTooLong) as caught:
        crypto.check_text_length("ж" * (half + 1))
    assert caught.value.size == MAX_TEXT_BYTES + 2
    assert issubclass(TextTooLong, CryptoError)


PASTE = ("Съешь же ещё этих мягких французских булок, да выпей чаю.\n" * 90)[:5_000]

CASE_06 = {
    "exactly one block": ("x" * 245, "pair_1024", "pair_2048"),
    "one byte more": ("x" * 246, "pair_1024", "pair_2048"),
    "30 cyrillic letters on a small key": ("Щ" * 30, "pair_512", "pair_512"),
    "5000-character paste": (PASTE, "pair_2048", "pair_1024"),
}


@pytest.mark.parametrize(
    ("text", "sender", "recipient"), CASE_06.values(), ids=CASE_06.keys()
)
def test_case_06_longer_than_one_block(text, sender, recipient, request):
    sender_pair = request.getfixturevalue(sender)
    recipient_pair = request.getfixturevalue(recipient)

    payload = seal(text, sender_pair, recipient_pair)

    assert open_as_recipient(payload, sender_pair, recipient_pair).text == text
    assert open_as_sender(payload, sender_pair).text == text
    assert len(msg_frame(payload)) <= protocol.MAX_CLIENT_MSG_FRAME_BYTES


def test_case_06_block_boundaries_of_the_small_key(pair_512):
    # The inner header shifts where blocks end, so walk across several boundaries.
    for size in range(40, 180, 7):
        text = text_of_bytes(size)
        assert (
            open_as_recipient(seal(text, pair_512, pair_512), pair_512, pair_512).text
            == text
        )


def test_recipient_cannot_open_the_senders_copy(pair_1024, pair_2048):
    payload = seal("for bob", pair_1024, pair_2048)

    with pytest.raises(DecryptionFailed):
        open_envelope(
            payload,
            "alice",
            "bob",
            MSG_ID,
            pair_1024.public,
            pair_2048,
            i_am_sender=True,
        )


def test_names_compare_ignoring_case(pair_1024, pair_2048):
    # The server relays the registered spelling, which may differ in case from what
    # the sender typed.
    payload = seal("hi", pair_1024, pair_2048, sender="alice", recipient="Борис")

    opened = open_as_recipient(
        payload, pair_1024, pair_2048, sender="ALICE", recipient="БОРИС"
    )

    assert opened.text == "hi"


def test_ciphertext_does_not_contain_the_plaintext(pair_1024, pair_2048):
    text = "the plan: meet at the old mill at dawn, bring the map. " * 4
    plain = text.encode()

    payload = seal(text, pair_1024, pair_2048)

    assert "meet at the old mill" not in payload
    for shift in range(3):
        assert b64(plain[shift : shift + 48]) not in payload
    for field in ("r", "s"):
        assert b"old mill" not in envelope_bytes(payload, field)


def test_two_seals_of_one_text_differ(pair_1024, pair_2048):
    assert seal("same", pair_1024, pair_2048) != seal("same", pair_1024, pair_2048)


# --------------------------------------------------------------------------- tampering


def flip_middle_byte(data):
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


TAMPERING = {
    "one flipped byte in the recipient ciphertext": (
        lambda p: edit_envelope(p, r=b64(flip_middle_byte(envelope_bytes(p, "r")))),
        SignatureInvalid,
    ),
    "one flipped byte in the sender copy": (
        lambda p: edit_envelope(p, s=b64(flip_middle_byte(envelope_bytes(p, "s")))),
        SignatureInvalid,
    ),
    "ciphertext cut short": (
        lambda p: edit_envelope(p, r=b64(envelope_bytes(p, "r")[:-10])),
        (SignatureInvalid, DecryptionFailed),
    ),
    "ciphertext emptied": (
        lambda p: edit_envelope(p, r=""),
        (SignatureInvalid, DecryptionFailed),
    ),
    "invalid base64": (lambda p: edit_envelope(p, r="not*base64!"), DecryptionFailed),
    "invalid base64 signature": (
        lambda p: edit_envelope(p, sig="%%%%"),
        DecryptionFailed,
    ),
    "bad signature": (
        lambda p: edit_envelope(p, sig=b64(flip_middle_byte(envelope_bytes(p, "sig")))),
        SignatureInvalid,
    ),
    "payload not json": (lambda p: p[: len(p) // 2], DecryptionFailed),
    "payload a json list": (lambda p: json.dumps([p]), DecryptionFailed),
    "payload plain text": (lambda p: "hello bob", DecryptionFailed),
    "unknown envelope version": (lambda p: edit_envelope(p, v=2), DecryptionFailed),
    "signature missing": (
        lambda p: json.dumps({k: v for k, v in json.loads(p).items() if k != "sig"}),
        DecryptionFailed,
    ),
    "ciphertext not a string": (lambda p: edit_envelope(p, r=12345), DecryptionFailed),
}


@pytest.mark.parametrize(
    ("tamper", "expected"), TAMPERING.values(), ids=TAMPERING.keys()
)
def test_case_07_cannot_decrypt(tamper, expected, pair_1024, pair_2048):
    payload = seal("secret words", pair_1024, pair_2048)

    with pytest.raises(expected):
        open_as_recipient(tamper(payload), pair_1024, pair_2048)


def test_case_07_signature_by_another_key_is_refused(pair_512, pair_1024, pair_2048):
    payload = seal("who sent this?", pair_512, pair_2048)

    with pytest.raises(SignatureInvalid):
        open_as_recipient(payload, pair_1024, pair_2048)


def test_case_07_recipient_regenerated_key_pair(pair_1024):
    old_pair = crypto.generate_key_pair(512)
    payload = seal("sent to your old key", pair_1024, old_pair)
    new_pair = crypto.generate_key_pair(512)

    with pytest.raises(WrongRecipientKey) as caught:
        open_as_recipient(payload, pair_1024, new_pair)
    assert isinstance(caught.value, DecryptionFailed)
    assert (
        open_as_recipient(payload, pair_1024, old_pair).text == "sent to your old key"
    )


def test_case_07_recipient_key_of_another_size(pair_1024, pair_2048, pair_512):
    payload = seal("sized for 512", pair_1024, pair_512)

    with pytest.raises(WrongRecipientKey):
        open_as_recipient(payload, pair_1024, pair_2048)


RELAY_CHANGES = {
    "sender": ("mallory", "bob", MSG_ID),
    "recipient": ("alice", "carol", MSG_ID),
    "sender and recipient swapped": ("bob", "alice", MSG_ID),
    "id": ("alice", "bob", "Other-id-0000000"),
}


@pytest.mark.parametrize(
    ("sender", "recipient", "message_id"),
    RELAY_CHANGES.values(),
    ids=RELAY_CHANGES.keys(),
)
def test_outer_fields_changed_by_a_relay_are_caught(
    sender, recipient, message_id, pair_1024, pair_2048
):
    payload = seal("to bob only", pair_1024, pair_2048)

    # The sender's real key is used, so only the header binding can catch the change.
    with pytest.raises((SignatureInvalid, EnvelopeMismatch)):
        open_envelope(
            payload,
            sender,
            recipient,
            message_id,
            pair_1024.public,
            pair_2048,
            i_am_sender=False,
        )


def test_forwarded_inner_content_is_an_envelope_mismatch(
    pair_512, pair_1024, pair_2048
):
    # Bob re-encrypts what Alice sent him to Carol and signs it himself: the signature
    # is good, but the sealed header still says alice -> bob.
    inner = (
        json.dumps({"from": "alice", "to": "bob", "id": MSG_ID, "time": SENT}).encode()
        + b"\nhello"
    )
    for_carol = crypto._encrypt_blocks(inner, pair_512.public)
    for_bob = crypto._encrypt_blocks(inner, pair_2048.public)
    signed = crypto._signed_bytes("bob", "carol", MSG_ID, for_carol, for_bob)
    signature = rsa.sign(signed, pair_2048.private, "SHA-256")
    payload = json.dumps(
        {"v": 1, "r": b64(for_carol), "s": b64(for_bob), "sig": b64(signature)}
    )

    with pytest.raises(EnvelopeMismatch):
        open_envelope(
            payload,
            "bob",
            "carol",
            MSG_ID,
            pair_2048.public,
            pair_512,
            i_am_sender=False,
        )


def test_signature_must_use_sha256(pair_1024, pair_2048):
    payload = seal("hashed", pair_1024, pair_2048)
    r, s = envelope_bytes(payload, "r"), envelope_bytes(payload, "s")
    signed = crypto._signed_bytes("alice", "bob", MSG_ID, r, s)
    weak = rsa.sign(signed, pair_1024.private, "SHA-1")

    # The SHA-1 signature is genuine, so only the hash check can refuse it.
    assert rsa.verify(signed, weak, pair_1024.public.key) == "SHA-1"
    with pytest.raises(SignatureInvalid):
        open_as_recipient(edit_envelope(payload, sig=b64(weak)), pair_1024, pair_2048)


# --------------------------------------------------------------------------- notices


def test_notice_signature_round_trip_and_tampering(pair_1024, pair_512):
    data = b"could not decrypt " + MSG_ID.encode()
    signature = crypto.sign_notice(data, pair_1024)

    crypto.verify_notice(data, signature, pair_1024.public)
    with pytest.raises(SignatureInvalid):
        crypto.verify_notice(data + b"!", signature, pair_1024.public)
    with pytest.raises(SignatureInvalid):
        crypto.verify_notice(data, signature, pair_512.public)
    with pytest.raises(SignatureInvalid):
        crypto.verify_notice(data, "not base64!", pair_1024.public)


def test_notice_signature_must_use_sha256(pair_1024):
    data = b"could not decrypt"
    weak = b64(rsa.sign(data, pair_1024.private, "SHA-1"))

    with pytest.raises(SignatureInvalid):
        crypto.verify_notice(data, weak, pair_1024.public)


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    "password", ["hunter2", "пароль с пробелом", "", 'quo"te\\slash']
)
def test_sealed_password_round_trip(password, pair_2048):
    sealed = seal_password(password, NONCE, pair_2048.public)

    if password:
        assert password.encode() not in base64.b64decode(sealed)
    assert open_sealed_password(sealed, NONCE, pair_2048) == password


def test_sealed_password_for_another_nonce_is_refused(pair_2048):
    sealed = seal_password("hunter2", NONCE, pair_2048.public)

    # A login captured on one connection cannot be replayed on another.
    with pytest.raises(DecryptionFailed):
        open_sealed_password(sealed, "00" * 16, pair_2048)


GARBAGE_SEALS = {
    "not base64": "this is not base64!",
    "empty": "",
    "random block": b64(bytes(range(256))),
    "too long": b64(b"\x01" * 300),
    "short": b64(b"\x02" * 10),
}


@pytest.mark.parametrize("sealed", GARBAGE_SEALS.values(), ids=GARBAGE_SEALS.keys())
def test_garbage_sealed_password_is_refused(sealed, pair_2048):
    with pytest.raises(DecryptionFailed):
        open_sealed_password(sealed, NONCE, pair_2048)


@pytest.mark.parametrize(
    "plain",
    [
        b"[1, 2]",
        b'"just a string"',
        b'{"password": 5, "nonce": "x"}',
        b'{"nonce": "x"}',
        b"\xff\xfe",
        b"null",
    ],
)
def test_sealed_password_with_malformed_inside_is_refused(plain, pair_2048):
    sealed = b64(rsa.encrypt(plain, pair_2048.public.key))

    with pytest.raises(DecryptionFailed):
        open_sealed_password(sealed, NONCE, pair_2048)


def test_password_sealed_for_another_server_is_refused(pair_1024, pair_2048):
    sealed = seal_password("hunter2", NONCE, pair_1024.public)

    with pytest.raises(DecryptionFailed):
        open_sealed_password(sealed, NONCE, pair_2048)


def test_longest_password_that_fits_and_one_more(pair_2048):
    room = pair_2048.public.block_bytes - crypto.PKCS1_PADDING_BYTES
    overhead = len(json.dumps({"password": "", "nonce": NONCE}).encode())
    longest = "p" * (room - overhead)

    assert (
        open_sealed_password(
            seal_password(longest, NONCE, pair_2048.public), NONCE, pair_2048
        )
        == longest
    )
    with pytest.raises(PasswordTooLong):
        seal_password(longest + "p", NONCE, pair_2048.public)
    # Counted in bytes: half as many Cyrillic letters already do not fit.
    with pytest.raises(PasswordTooLong):
        seal_password("ж" * ((room - overhead) // 2 + 1), NONCE, pair_2048.public)


# --------------------------------------------------------------------------- keys


def test_fingerprint_is_stable_and_differs_between_keys(pair_512, pair_1024, pair_2048):
    reloaded = crypto.load_public_key(pair_1024.public.pem)

    assert (
        reloaded.fingerprint()
        == pair_1024.public.fingerprint()
        == crypto.fingerprint(pair_1024.public)
    )
    assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){7}", reloaded.fingerprint())
    prints = {p.public.fingerprint() for p in (pair_512, pair_1024, pair_2048)}
    assert len(prints) == 3


def test_key_pair_survives_its_private_pem(pair_1024):
    reloaded = crypto.load_key_pair(pair_1024.private_pem)

    assert reloaded.public.fingerprint() == pair_1024.public.fingerprint()
    assert reloaded.public.bits == 1024
    payload = seal("to myself", reloaded, reloaded)
    assert open_as_recipient(payload, pair_1024, pair_1024).text == "to myself"


def test_loaded_public_key_keeps_its_pem_verbatim(pair_2048):
    key = crypto.load_public_key(pair_2048.public.pem)

    assert key.pem == pair_2048.public.pem
    assert (key.bits, key.block_bytes) == (2048, 256)


def truncated_pem(pem):
    return pem[: len(pem) // 2] + "\n-----END RSA PUBLIC KEY-----\n"


GARBAGE_KEYS = {
    "empty": "",
    "words": "garbage",
    "none": None,
    "number": 42,
    "bytes": b"-----BEGIN RSA PUBLIC KEY-----",
    "non-ascii": "ключ",
    "empty pem": "-----BEGIN RSA PUBLIC KEY-----\n-----END RSA PUBLIC KEY-----\n",
    "pem of junk": "-----BEGIN RSA PUBLIC KEY-----\naGVsbG8gd29ybGQ=\n-----END RSA PUBLIC KEY-----\n",
    "pem bad base64": "-----BEGIN RSA PUBLIC KEY-----\n!!!!\n-----END RSA PUBLIC KEY-----\n",
}


@pytest.mark.parametrize("pem", GARBAGE_KEYS.values(), ids=GARBAGE_KEYS.keys())
def test_load_public_key_of_garbage_is_a_crypto_error(pem):
    with pytest.raises(CryptoError):
        crypto.load_public_key(pem)


def test_load_public_key_refuses_truncated_private_and_tiny_keys(pair_1024):
    tiny, _ = rsa.newkeys(256)

    with pytest.raises(CryptoError):
        crypto.load_public_key(truncated_pem(pair_1024.public.pem))
    with pytest.raises(CryptoError):
        crypto.load_public_key(pair_1024.private_pem)
    with pytest.raises(CryptoError):
        crypto.load_public_key(tiny.save_pkcs1().decode("ascii"))


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "garbage",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
    ],
)
def test_load_key_pair_of_garbage_is_a_crypto_error(pem):
    with pytest.raises(CryptoError):
        crypto.load_key_pair(pem)
