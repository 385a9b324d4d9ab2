from __future__ import annotations

import asyncio
import socket
from socket import SOCK_DGRAM, SOCK_RAW

import pytest

from chat_tk.logs import log
from chat_tk.verifiers import ClientVerifier, ServerVerifier

# Refused classes are built by calling the metaclass on a namespace, so that each
# pytest.raises block holds one statement. The functions are never run: the
# verifiers only read their bytecode.


@pytest.fixture
def class_level_socket():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        yield sock


# --- ClientVerifier: what it accepts -------------------------------------------------


def test_client_with_create_connection_and_connect_is_accepted():
    class ChatClient(metaclass=ClientVerifier):
        port = 5000

        def __init__(self, host):
            self.host = host
            self.sock = None

        def open(self):
            self.sock = socket.create_connection((self.host, self.port), timeout=5)

        def open_by_hand(self):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.connect((self.host, self.port))
            return sock

        def send(self, data):
            self.sock.sendall(data)
            return self.sock.recv(4096)

        @property
        def connected(self):
            return self.sock is not None

    assert ChatClient("localhost").connected is False


def test_client_subclass_that_behaves_is_accepted():
    class Base(metaclass=ClientVerifier):
        def open(self):
            return socket.create_connection(("localhost", 1))

    class Child(Base):
        def close(self, sock):
            sock.close()

    assert type(Child) is ClientVerifier


# --- ClientVerifier: what it refuses, one rule at a time -----------------------------


def _accepts(self, sock):
    return sock.accept()


def _listens(self, sock):
    sock.listen(5)


@pytest.mark.parametrize(
    ("method", "offence"), [(_accepts, "accept"), (_listens, "listen")]
)
def test_client_calling_a_server_method_is_refused(method, offence):
    with pytest.raises(
        TypeError, match=rf"ClientVerifier refused class 'Bad'.*{offence}"
    ):
        ClientVerifier("Bad", (), {"serve": method})


def test_client_accept_hidden_in_a_nested_function_is_refused():
    def serve(self, sock):
        def later():
            return [conn for conn, _ in [sock.accept()]]

        return later

    with pytest.raises(TypeError, match="accept"):
        ClientVerifier("Bad", (), {"serve": serve})


def test_client_listen_in_a_lambda_is_refused():
    with pytest.raises(TypeError, match="listen"):
        ClientVerifier("Bad", (), {"serve": lambda self, sock: sock.listen()})


def test_client_listen_behind_a_decorator_is_refused():
    @log
    def serve(self, sock):
        sock.listen()

    with pytest.raises(TypeError, match="listen"):
        ClientVerifier("Bad", (), {"serve": serve})


@pytest.mark.parametrize("wrap", [staticmethod, classmethod, property])
def test_client_accept_in_a_descriptor_is_refused(wrap):
    def serve(first):
        return first.accept()

    with pytest.raises(TypeError, match="accept"):
        ClientVerifier("Bad", (), {"serve": wrap(serve)})


def test_client_accept_in_a_nested_class_is_refused():
    def make():
        class Outer(metaclass=ClientVerifier):
            class Inner:
                def serve(self, sock):
                    return sock.accept()

        return Outer

    with pytest.raises(TypeError, match="Outer.*Inner.serve.*accept"):
        make()


def test_client_subclass_that_listens_is_refused():
    class Base(metaclass=ClientVerifier):
        pass

    with pytest.raises(TypeError, match="Child.*listen"):
        ClientVerifier("Child", (Base,), {"serve": _listens})


def test_client_with_a_class_level_socket_is_refused(class_level_socket):
    with pytest.raises(TypeError, match="'Bad'.*'sock' is a socket"):
        ClientVerifier("Bad", (), {"sock": class_level_socket})


def _udp_by_attribute(self):
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def _udp_by_name(self):
    return socket.socket(socket.AF_INET, SOCK_DGRAM)


def _raw_by_attribute(self):
    return socket.socket(socket.AF_INET, socket.SOCK_RAW)


def _raw_by_name(self):
    return socket.socket(socket.AF_INET, SOCK_RAW)


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        (_udp_by_attribute, "SOCK_DGRAM"),
        (_udp_by_name, "SOCK_DGRAM"),
        (_raw_by_attribute, "SOCK_RAW"),
        (_raw_by_name, "SOCK_RAW"),
    ],
)
def test_client_using_a_non_tcp_socket_is_refused(method, kind):
    with pytest.raises(TypeError, match=rf"'Bad'.*{kind}.*TCP"):
        ClientVerifier("Bad", (), {"open": method})


def test_client_with_a_non_tcp_kind_as_class_attribute_is_refused():
    with pytest.raises(TypeError, match="'kind' is SOCK_DGRAM"):
        ClientVerifier("Bad", (), {"kind": socket.SOCK_DGRAM})


# --- ServerVerifier ------------------------------------------------------------------


def test_asyncio_server_is_accepted():
    class ChatServer(metaclass=ServerVerifier):
        def __init__(self):
            self.server = None

        async def start(self, host, port):
            self.server = await asyncio.start_server(self.handle, host, port)
            return self.server.sockets[0].getsockname()

        async def handle(self, reader, writer):
            try:
                data = await reader.readexactly(4)
                writer.write(data)
                await writer.drain()
            finally:
                writer.close()
                await writer.wait_closed()

        async def stop(self):
            self.server.close()
            await self.server.wait_closed()

    assert type(ChatServer) is ServerVerifier


def test_plain_socket_server_is_accepted():
    class Listener(metaclass=ServerVerifier):
        def serve(self, port):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port))
                sock.listen()
                conn, _ = sock.accept()
                conn.close()

    assert type(Listener) is ServerVerifier


def _connects(self, sock):
    sock.connect(("localhost", 1))


def _creates_connection(self):
    return socket.create_connection(("localhost", 1))


async def _opens_asyncio_connection(self):
    return await asyncio.open_connection("localhost", 1)


@pytest.mark.parametrize(
    ("method", "offence"),
    [
        (_connects, "connect"),
        (_creates_connection, "create_connection"),
        (_opens_asyncio_connection, "open_connection"),
    ],
)
def test_server_opening_a_connection_is_refused(method, offence):
    with pytest.raises(
        TypeError, match=rf"ServerVerifier refused class 'Bad'.*'{offence}'"
    ):
        ServerVerifier("Bad", (), {"dial": method})


def test_server_connect_in_a_nested_function_is_refused():
    def dial(self, sock):
        def later():
            sock.connect(("localhost", 1))

        return later

    with pytest.raises(TypeError, match="connect"):
        ServerVerifier("Bad", (), {"dial": dial})


def test_server_with_a_class_level_socket_is_refused(class_level_socket):
    with pytest.raises(TypeError, match="ServerVerifier refused class 'Bad'.*socket"):
        ServerVerifier("Bad", (), {"listener": class_level_socket})


def test_server_connect_through_super_is_refused():
    def make():
        class Base:
            def connect(self):
                return None

        class Bad(Base, metaclass=ServerVerifier):
            def dial(self):
                return super().connect()

        return Bad

    with pytest.raises(TypeError, match="Bad.dial uses 'connect'"):
        make()
