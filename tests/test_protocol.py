"""The sans-IO protocol layer fed bytes and dicts directly: framing, names, requests.

Section names in comments refer to the wire contract (PROTOCOL.md); case numbers to
the failure cases (CASES.md).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chat_tk import protocol
from chat_tk.errors import FatalFrameError, LocalProtocolError, RemoteProtocolError
from chat_tk.protocol import (
    BadFrame,
    FrameDecoder,
    UnknownAction,
    WrongAccount,
    confusable_skeleton,
    encode,
    name_key,
    normalize_account_name,
    parse_request,
)

MAX = protocol.MAX_FRAME_BYTES
ME = "Alice"
MSG_ID = "Q7x-_9aZ" * 2  # 16 characters, the shortest valid id
PEM = "-----BEGIN RSA PUBLIC KEY-----\nMAo=\n-----END RSA PUBLIC KEY-----\n"

# No example database: every run explores afresh, and the inputs that once broke
# something are pinned with @example instead.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def feed_all(decoder, chunks):
    """Feed every chunk in turn and return all the frames they complete."""
    frames = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    return frames


def split_at(data, cuts):
    """Cut `data` at the given positions (any order, duplicates allowed)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def frame_of_size(size):
    """A valid JSON object frame of exactly `size` bytes, newline included."""
    frame = b'{"p":"' + b"x" * (size - 9) + b'"}\n'
    assert len(frame) == size
    return frame


# --------------------------------------------------------------------------- framing


def test_two_frames_split_at_every_byte_position():
    first = {"action": "msg", "message": "héllo 👋", "n": 1}
    second = {"action": "probe", "time": 1.5}
    data = encode(first) + encode(second)

    for cut in range(len(data) + 1):
        decoder = FrameDecoder()
        frames = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert frames == [first, second], cut
        assert not decoder.has_partial_frame


def test_several_frames_in_one_read_arrive_in_order():
    messages = [{"action": "probe", "n": n} for n in range(6)]
    data = b"".join(encode(m) for m in messages)

    assert FrameDecoder().feed(data) == messages


def test_frame_fed_one_byte_at_a_time():
    message = {"action": "msg", "message": "Жёлтый 🍋", "time": 1700000000}
    data = encode(message)
    decoder = FrameDecoder()

    for byte in data[:-1]:
        assert decoder.feed(bytes([byte])) == []
    assert decoder.has_partial_frame
    assert decoder.buffered_bytes == len(data) - 1

    assert decoder.feed(data[-1:]) == [message]
    assert not decoder.has_partial_frame


def test_case_01_multibyte_split():
    # Case 01: the text is cut right after the first byte of "р" (0xD1 0x80), and the
    # sender logs in with a Cyrillic name.
    text = "привет 👋"
    login = {
        "action": "authenticate",
        "time": 1,
        "user": {"account_name": "Борис", "password": "c2VhbA=="},
    }
    message = {
        "action": "msg",
        "id": MSG_ID,
        "time": 1,
        "from": "Борис",
        "to": "Анна",
        "encoding": "e",
        "message": text,
    }
    data = encode(login) + encode(message)
    cut = data.index(text.encode()) + len("п".encode()) + 1
    assert data[cut - 1 : cut + 1] == b"\xd1\x80"
    decoder = FrameDecoder()

    assert decoder.feed(data[:cut]) == [login]
    assert decoder.has_partial_frame
    assert decoder.feed(data[cut:]) == [message]

    assert parse_request(login) == protocol.Authenticate("Борис", "c2VhbA==")
    assert parse_request(message, me="Борис").payload == text
    # The connection stays usable.
    assert decoder.feed(encode({"action": "probe"})) == [{"action": "probe"}]


def test_crlf_line_ending_is_tolerated():
    decoder = FrameDecoder()

    assert decoder.feed(b'{"action":"probe"}\r\n') == [{"action": "probe"}]
    assert decoder.feed(b'{"n":1}\r') == []
    assert decoder.feed(b'\n{"n":2}\r\n') == [{"n": 1}, {"n": 2}]


NOT_AN_OBJECT = {
    "blank line": b"",
    "only spaces": b"   ",
    "bad utf-8": b'{"a":"\xff\xfe"}',
    "utf-8 cut short": b'{"a":"\xd1"}',
    "bad json": b'{"action": "probe"',
    "trailing garbage": b'{"a":1} x',
    "nan": b"NaN",
    "nan in object": b'{"time":NaN}',
    "infinity": b'{"time":Infinity}',
    "minus infinity": b'{"time":-Infinity}',
    "array": b'[{"action":"probe"}]',
    "number": b"42",
    "string": b'"hello"',
    "null": b"null",
    "true": b"true",
    "deep nesting": b"[" * 30_000 + b"]" * 30_000,
}


@pytest.mark.parametrize("line", NOT_AN_OBJECT.values(), ids=NOT_AN_OBJECT.keys())
def test_not_an_object_is_a_bad_frame_and_the_decoder_keeps_working(line):
    decoder = FrameDecoder()

    frames = decoder.feed(line + b"\n" + b'{"action":"probe"}\n')

    assert len(frames) == 2
    assert isinstance(frames[0], BadFrame)
    assert frames[0].reason
    assert frames[1] == {"action": "probe"}
    assert decoder.feed(b'{"n":3}\n') == [{"n": 3}]


def test_frame_of_exactly_the_limit_is_accepted():
    frame = frame_of_size(MAX)
    decoder = FrameDecoder()

    # One byte short of the limit, still without its newline: not yet refused.
    assert decoder.feed(frame[:-1]) == []
    assert decoder.feed(b"\n") == [{"p": "x" * (MAX - 9)}]
    assert FrameDecoder().feed(frame + b'{"n":1}\n')[1] == {"n": 1}


@pytest.mark.parametrize("chunk_bytes", [MAX + 1, 1000, 4096])
def test_frame_one_byte_over_the_limit_is_fatal(chunk_bytes):
    frame = frame_of_size(MAX + 1)
    chunks = [frame[i : i + chunk_bytes] for i in range(0, len(frame), chunk_bytes)]

    with pytest.raises(FatalFrameError) as caught:
        feed_all(FrameDecoder(), chunks)
    assert caught.value.code == 400


def test_limit_reached_without_newline_is_fatal():
    decoder = FrameDecoder()
    decoder.feed(b"x" * (MAX - 1))

    with pytest.raises(FatalFrameError):
        decoder.feed(b"x")


def test_fatal_frame_error_is_a_remote_protocol_error():
    assert issubclass(FatalFrameError, RemoteProtocolError)


def test_decoder_limit_can_be_lowered():
    decoder = FrameDecoder(max_frame_bytes=16)

    assert decoder.feed(b'{"p":"xxxxxxx"}\n') == [{"p": "xxxxxxx"}]
    with pytest.raises(FatalFrameError):
        decoder.feed(b'{"p":"xxxxxxxx"}\n')


# --------------------------------------------------------------------------- encode


def test_encode_is_one_line_even_when_text_has_newlines():
    message = {"action": "msg", "message": "line one\nline two\r\n", "name": "Борис"}

    frame = encode(message)

    assert frame.endswith(b"\n")
    assert frame.count(b"\n") == 1
    assert "Борис".encode() in frame
    assert FrameDecoder().feed(frame) == [message]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_encode_refuses_nan_and_infinity(value):
    with pytest.raises(LocalProtocolError):
        encode({"action": "probe", "time": value})


def test_encode_refuses_what_json_cannot_hold():
    with pytest.raises(LocalProtocolError):
        encode({"action": "probe", "thing": object()})


def test_encode_refuses_a_lone_surrogate():
    # A JSON "\ud800" escape parses into a str that UTF-8 cannot carry; relaying it
    # must fail as our own protocol error, not as a bare UnicodeEncodeError.
    relayed = json.loads('{"action":"msg","message":"\\ud800"}')

    with pytest.raises(LocalProtocolError):
        encode(relayed)


def test_encode_accepts_the_limit_and_refuses_one_byte_more():
    assert len(encode({"p": "x" * (MAX - 9)})) == MAX
    with pytest.raises(LocalProtocolError):
        encode({"p": "x" * (MAX - 8)})


# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("code", [100, 200, 201, 202, 511])
def test_answer_uses_alert_for_the_documented_success_codes(code):
    message = protocol.answer(code, ["alice", "bob"], request_id=MSG_ID)

    assert message == {"response": code, "alert": ["alice", "bob"], "id": MSG_ID}


@pytest.mark.parametrize("code", [400, 401, 402, 403, 404, 409, 429, 500])
def test_answer_uses_error_for_the_other_codes(code):
    assert protocol.answer(code, "no") == {"response": code, "error": "no"}
    assert protocol.answer(code) == {"response": code, "error": ""}


@pytest.mark.parametrize("code", [101, 203, 204, 299])
def test_answer_uses_alert_for_every_1xx_and_2xx_code(code):
    # PROTOCOL.md, "Answers": alert for 1xx and 2xx, not only for the codes in use.
    message = protocol.answer(code, "fine")

    assert message.get("alert") == "fine"
    assert "error" not in message


def test_answer_without_text_has_no_alert():
    assert protocol.answer(200) == {"response": 200}


# --------------------------------------------------------------------------- names

VALID_NAMES = {
    "latin": "alice",
    "latin with digit": "Alice_1",
    "one letter": "a",
    "digit first": "7up",
    "punctuation inside": "a.b-c_d",
    "32 chars": "x" * 32,
    "cyrillic": "Борис",
    "cyrillic yo": "Ёжик",
    "chinese": "王小明",
    "kanji and hiragana": "山田たろう",
    "katakana and kanji": "タナカ花子",
    "kanji with iteration mark": "佐々木",
    "katakana with long vowel mark": "ラーメン",
    "hangul": "김철수",
    "greek": "Ωμέγα",
    "latin with accent": "José",
}


@pytest.mark.parametrize("name", VALID_NAMES.values(), ids=VALID_NAMES.keys())
def test_valid_account_names_are_accepted(name):
    assert normalize_account_name(name) == name


def test_names_are_nfc_normalised_before_counting():
    decomposed = "Jose\u0301"
    assert normalize_account_name(decomposed) == "José"
    # 32 letters written decomposed are 64 code points, but 32 characters after NFC.
    assert normalize_account_name("e\u0301" * 32) == "é" * 32


INVALID_NAMES = {
    "empty": "",
    "33 chars": "x" * 33,
    "33 after nfc": "é" * 33,
    "starts with _": "_alice",
    "starts with .": ".alice",
    "starts with -": "-alice",
    "starts with mark": "\u0301alice",
    "space": "al ice",
    "bang": "alice!",
    "at": "al@ice",
    "slash": "a/b",
    "newline": "alice\n",
    "emoji": "bob👋",
    "cyrillic first letter": "аdmin",
    "latin with cyrillic inside": "pаypal",
    "latin and greek": "alphaβ",
}


@pytest.mark.parametrize("name", INVALID_NAMES.values(), ids=INVALID_NAMES.keys())
def test_invalid_account_names_are_refused(name):
    with pytest.raises(RemoteProtocolError) as caught:
        normalize_account_name(name)
    assert caught.value.code == 400


INVISIBLE = {
    "zero width space": "ad\u200bmin",
    "right-to-left override": "ad\u202emin",
    "zero width joiner": "ad\u200dmin",
    "word joiner": "ad\u2060min",
    "byte order mark": "admin\ufeff",
    "soft hyphen": "ad\u00admin",
    "combining grapheme joiner": "admin\u034f",
    "variation selector": "admin\ufe0f",
    "hangul filler only": "\u3164",
}


@pytest.mark.parametrize("name", INVISIBLE.values(), ids=INVISIBLE.keys())
def test_invisible_characters_are_refused(name):
    # Each of these renders as nothing, so it would let a second "admin" exist.
    with pytest.raises(RemoteProtocolError):
        normalize_account_name(name)


@pytest.mark.parametrize(
    "raw", [None, 42, ["alice"], {"name": "alice"}, b"alice", True]
)
def test_non_string_account_name_is_refused(raw):
    with pytest.raises(RemoteProtocolError):
        normalize_account_name(raw)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Alice", "ALICE"),
        ("alice", "aLiCe"),
        ("Straße", "STRASSE"),
        ("Борис", "БОРИС"),
        ("José", "JOSE\u0301"),
    ],
)
def test_name_key_ignores_case(one, other):
    assert name_key(normalize_account_name(one)) == name_key(
        normalize_account_name(other)
    )


def test_name_key_keeps_different_names_apart():
    assert name_key("alice") != name_key("alicia")
    assert name_key("Борис") != name_key("Boris")


def test_confusable_skeleton_joins_cyrillic_lookalikes():
    assert confusable_skeleton("аdmin") == confusable_skeleton("admin")
    assert confusable_skeleton("АDMIN") == confusable_skeleton("admin")
    # All-Cyrillic "асе" passes the one-script rule, so only the skeleton stops it.
    assert normalize_account_name("асе") == "асе"
    assert confusable_skeleton("асе") == confusable_skeleton("ace")


def test_confusable_skeleton_keeps_different_names_apart():
    assert confusable_skeleton("alice") != confusable_skeleton("bob")
    assert confusable_skeleton("admin") != confusable_skeleton("admins")


# --------------------------------------------------------------------------- requests


DROP = object()  # a field value meaning "leave this field out"


def msg(**changes):
    message = {
        "action": "msg",
        "id": MSG_ID,
        "time": 1700000000.25,
        "from": ME,
        "to": "bob",
        "encoding": "chat_tk-rsa-blocks-v1",
        "message": "opaque",
    }
    message.update(changes)
    return {k: v for k, v in message.items() if v is not DROP}


VALID_REQUESTS = [
    (
        {
            "action": "register",
            "time": 1,
            "user": {"account_name": "Борис", "password": "c2Vh"},
        },
        None,
        protocol.Register("Борис", "c2Vh"),
    ),
    (
        {
            "action": "authenticate",
            "time": 1,
            "user": {"account_name": "alice", "password": "c2Vh"},
        },
        None,
        protocol.Authenticate("alice", "c2Vh"),
    ),
    (
        {
            "action": "presence",
            "time": 1,
            "type": "status",
            "user": {"account_name": "ALICE", "status": "here", "public_key": PEM},
        },
        ME,
        protocol.Presence(ME, "here", PEM),
    ),
    (
        {"action": "presence", "user": {"account_name": "alice"}},
        ME,
        protocol.Presence(ME, "", None),
    ),
    (
        {"action": "get_contacts", "time": 1, "user_login": "alice"},
        ME,
        protocol.GetContacts(),
    ),
    (
        {"action": "add_contact", "time": 1, "user_id": "bob"},
        ME,
        protocol.AddContact("bob"),
    ),
    (
        {"action": "add_contact", "user_id": "bob", "user_login": "Alice"},
        ME,
        protocol.AddContact("bob"),
    ),
    (
        {"action": "del_contact", "time": 1, "user_id": "Борис"},
        ME,
        protocol.DelContact("Борис"),
    ),
    ({"action": "get_users", "time": 1}, ME, protocol.GetUsers()),
    ({"action": "get_online"}, ME, protocol.GetOnline()),
    ({"action": "pubkey_need", "user_login": "bob"}, ME, protocol.PubkeyNeed("bob")),
    ({"action": "probe"}, None, protocol.Probe()),
    ({"action": "exit"}, None, protocol.Exit()),
    ({"action": "quit", "time": 1}, ME, protocol.Exit()),
    ({"action": "ack", "id": MSG_ID}, ME, protocol.Ack(MSG_ID)),
]


@pytest.mark.parametrize(("message", "me", "expected"), VALID_REQUESTS)
def test_valid_requests_are_parsed(message, me, expected):
    assert parse_request(message, me) == expected


def test_msg_is_parsed_with_the_logged_in_spelling():
    request = parse_request(msg(**{"from": "alice", "to": "Bob"}), me=ME)

    assert isinstance(request, protocol.SendMessage)
    assert (request.message_id, request.sender, request.recipient) == (
        MSG_ID,
        ME,
        "Bob",
    )
    assert (request.encoding, request.payload) == ("chat_tk-rsa-blocks-v1", "opaque")
    assert request.frame["time"] == 1700000000.25


BAD_REQUESTS = {
    "register without user": {"action": "register", "time": 1},
    "register user not object": {"action": "register", "user": "alice"},
    "register bad name": {
        "action": "register",
        "user": {"account_name": "_x", "password": "p"},
    },
    "register no password": {"action": "register", "user": {"account_name": "alice"}},
    "register password not string": {
        "action": "register",
        "user": {"account_name": "alice", "password": 5},
    },
    "authenticate name not string": {
        "action": "authenticate",
        "user": {"account_name": 1, "password": "p"},
    },
    "presence without user": {"action": "presence"},
    "presence status not string": {
        "action": "presence",
        "user": {"account_name": ME, "status": 5},
    },
    "presence status too long": {
        "action": "presence",
        "user": {"account_name": ME, "status": "s" * 201},
    },
    "presence key not string": {
        "action": "presence",
        "user": {"account_name": ME, "public_key": 5},
    },
    "presence key too long": {
        "action": "presence",
        "user": {"account_name": ME, "public_key": "k" * 4097},
    },
    "get_contacts without user_login": {"action": "get_contacts"},
    "add_contact without user_id": {"action": "add_contact"},
    "add_contact bad user_id": {"action": "add_contact", "user_id": "a b"},
    "del_contact user_id not string": {"action": "del_contact", "user_id": ["bob"]},
    "pubkey_need without user_login": {"action": "pubkey_need"},
    "ack without id": {"action": "ack"},
    "ack short id": {"action": "ack", "id": "x" * 15},
    "msg without id": msg(id=DROP),
    "msg without time": msg(time=DROP),
    "msg without encoding": msg(encoding=DROP),
    "msg encoding not string": msg(encoding=1),
    "msg without message": msg(message=DROP),
    "msg message not string": msg(message={"r": "x"}),
    "msg without to": msg(to=DROP),
    "msg bad to": msg(to="bob!"),
    "msg without from": msg(**{"from": DROP}),
}


@pytest.mark.parametrize("message", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_malformed_requests_are_400(message):
    with pytest.raises(RemoteProtocolError) as caught:
        parse_request(message, me=ME)
    assert caught.value.code == 400
    assert not isinstance(caught.value, (WrongAccount, UnknownAction))


NOT_ME = {
    "msg from someone else": (msg(**{"from": "bob"}), ME),
    "msg before login": (msg(), None),
    "get_contacts of someone else": (
        {"action": "get_contacts", "user_login": "bob"},
        ME,
    ),
    "get_contacts before login": ({"action": "get_contacts", "user_login": ME}, None),
    "add_contact for someone else": (
        {"action": "add_contact", "user_id": "carol", "user_login": "bob"},
        ME,
    ),
    "del_contact for someone else": (
        {"action": "del_contact", "user_id": "carol", "user_login": "bob"},
        ME,
    ),
    "presence of someone else": (
        {"action": "presence", "user": {"account_name": "bob"}},
        ME,
    ),
}


@pytest.mark.parametrize(("message", "me"), NOT_ME.values(), ids=NOT_ME.keys())
def test_field_naming_someone_else_is_403(message, me):
    with pytest.raises(WrongAccount) as caught:
        parse_request(message, me=me)
    assert caught.value.code == 403


@pytest.mark.parametrize(
    "message",
    [
        {"action": "dance"},
        {"action": "MSG"},
        {"action": ""},
        {},
        {"action": None},
        {"action": 7},
        {"action": ["msg"]},
    ],
)
def test_unknown_or_missing_action_is_unknown_action(message):
    with pytest.raises(UnknownAction):
        parse_request(message, me=ME)


# Case 09: client clocks are not trusted, but `time` must still be a number.
@pytest.mark.parametrize(
    "value", ["abc", "1700000000", True, False, None, [], [1], {"t": 1}]
)
def test_case_09_time_that_is_not_a_number_is_400(value):
    for message in (msg(time=value), {"action": "probe", "time": value}):
        with pytest.raises(RemoteProtocolError) as caught:
            parse_request(message, me=ME)
        assert caught.value.code == 400


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 10**400, -(10**400)],
    ids=["nan", "inf", "huge int", "huge negative int"],
)
def test_case_09_time_beyond_float_range_is_400(value):
    # JSON can carry 1e999 (parsed as inf) and integers of hundreds of digits.
    with pytest.raises(RemoteProtocolError) as caught:
        parse_request(msg(time=value), me=ME)
    assert caught.value.code == 400


@pytest.mark.parametrize("value", [0, -1, 1e20, 1.5, "now+5h"])
def test_case_09_any_number_is_a_valid_time(value):
    if value == "now+5h":
        value = time.time() + 5 * 3600

    request = parse_request(msg(time=value), me=ME)

    assert isinstance(request, protocol.SendMessage)
    assert request.frame["time"] == value


@pytest.mark.parametrize(
    "message_id",
    [
        "a" * 16,
        "Z" * 64,
        "0123456789abcdef",
        "a-b_c-d_e-f_g-h_",
        "-" * 16,
        "AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    ],
)
def test_message_id_pattern_accepts(message_id):
    assert parse_request(msg(id=message_id), me=ME).message_id == message_id
    assert parse_request({"action": "ack", "id": message_id}, me=ME) == protocol.Ack(
        message_id
    )


@pytest.mark.parametrize(
    "message_id",
    [
        "a" * 15,
        "a" * 65,
        "a" * 15 + "!",
        "a" * 15 + " ",
        "a" * 15 + "é",
        "a" * 15 + "/",
        "a" * 15 + "+",
        "a" * 15 + "=",
        "a" * 15 + ".",
        "a" * 16 + "\n",
        "",
        1234567890123456,
        None,
    ],
)
def test_message_id_pattern_refuses(message_id):
    for message in (msg(id=message_id), {"action": "ack", "id": message_id}):
        with pytest.raises(RemoteProtocolError) as caught:
            parse_request(message, me=ME)
        assert caught.value.code == 400


# --------------------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@FUZZ
@given(messages=st.lists(json_objects, max_size=6), data=st.data())
def test_any_chunking_of_encoded_messages_gives_them_back(messages, data):
    stream = b"".join(encode(m) for m in messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))

    assert feed_all(FrameDecoder(), split_at(stream, cuts)) == messages


byte_soup = st.lists(
    st.sampled_from(
        [
            b"\n",
            b"\r\n",
            b"{",
            b"}",
            b'"a":',
            b'"',
            b"[",
            b"]",
            b"1",
            b",",
            b"\xd1",
            b"\xff",
            b"NaN",
        ]
    )
    | st.binary(max_size=12),
    max_size=40,
).map(b"".join)


def decode_or_fatal(chunks, limit):
    decoder = FrameDecoder(max_frame_bytes=limit)
    frames = []
    try:
        for chunk in chunks:
            frames.extend(decoder.feed(chunk))
    except FatalFrameError:
        return frames, True
    return frames, False


@FUZZ
@given(stream=byte_soup, limit=st.sampled_from([8, 32, MAX]), data=st.data())
def test_arbitrary_bytes_only_give_frames_or_a_fatal_error(stream, limit, data):
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))

    frames, fatal = decode_or_fatal(split_at(stream, cuts), limit)
    whole_frames, whole_fatal = decode_or_fatal([stream], limit)

    assert all(isinstance(f, (dict, BadFrame)) for f in frames)
    # How the bytes were chunked never changes the outcome.
    assert fatal == whole_fatal
    if not fatal:
        assert frames == whole_frames


KNOWN_ACTIONS = [
    "register",
    "authenticate",
    "presence",
    "get_contacts",
    "add_contact",
    "del_contact",
    "get_users",
    "get_online",
    "pubkey_need",
    "probe",
    "exit",
    "quit",
    "msg",
    "ack",
]
FIELDS = [
    "user",
    "id",
    "from",
    "to",
    "encoding",
    "message",
    "user_login",
    "user_id",
    "type",
]
USER_FIELDS = ["account_name", "password", "status", "public_key"]

# Leaves that sometimes pass validation, so the fuzzer gets past the first check;
# the huge integers are what a JSON number can hold beyond a float.
plausible = st.sampled_from(
    [
        "alice",
        "ALICE",
        "Alice",
        "bob",
        "Борис",
        MSG_ID,
        "x" * 64,
        PEM,
        0,
        -1,
        1e20,
        10**400,
    ]
)
request_values = st.recursive(
    json_scalars | plausible,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(USER_FIELDS) | st.text(max_size=5), children, max_size=4
        )
    ),
    max_leaves=10,
)


@FUZZ
@given(
    action=st.sampled_from(KNOWN_ACTIONS) | st.text(max_size=8) | json_scalars,
    clock=st.sampled_from([DROP, 0, -1, 1e20, 10**400, "abc", None, True])
    | json_scalars,
    fields=st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=5), request_values, max_size=6
    ),
    user=st.none()
    | st.dictionaries(st.sampled_from(USER_FIELDS), request_values, max_size=4),
    me=st.none() | st.sampled_from(["alice", "Борис"]),
)
@example(action="probe", clock=10**400, fields={}, user=None, me=None)
@example(
    action="msg",
    clock=DROP,
    fields={"id": [MSG_ID]},
    user={"account_name": {}},
    me="alice",
)
def test_parse_request_only_returns_a_request_or_raises_a_protocol_error(
    action, clock, fields, user, me
):
    message = {"action": action, **fields}
    if clock is not DROP:
        message["time"] = clock
    if user is not None:
        message["user"] = user

    try:
        request = parse_request(message, me)
    except RemoteProtocolError as exc:
        refused_with = exc.code
    else:
        refused_with = None
        assert isinstance(request, protocol.Request)
    assert refused_with in (None, 400, 403)


@pytest.mark.parametrize("bad_id", [{"a": 1}, 7, ["x"], "z" * 65])
def test_request_id_that_is_not_a_short_string_is_refused(bad_id):
    with pytest.raises(RemoteProtocolError) as caught:
        protocol.parse_request({"action": "probe", "id": bad_id})
    assert caught.value.code == 400
