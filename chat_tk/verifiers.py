"""Metaclasses that read bytecode and refuse a class playing the wrong socket role.

This module owns ClientVerifier and ServerVerifier. It uses the standard library only
and must not import anything from chat_tk, so that any layer can use it.
"""

from __future__ import annotations

import dis
import logging
import socket
import types
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Methods a client has no business calling: they belong to a listening socket.
CLIENT_FORBIDDEN_CALLS = frozenset({"accept", "listen"})

# Socket kinds that are not TCP. A client speaks our protocol over a stream only.
CLIENT_FORBIDDEN_SOCKET_KINDS = frozenset(
    {"SOCK_DGRAM", "SOCK_RAW", "SOCK_RDM", "SOCK_SEQPACKET"}
)

# Ways of opening an outgoing connection, which a server never needs.
SERVER_FORBIDDEN_CALLS = frozenset({"connect", "create_connection", "open_connection"})

# Instructions that load a name or an attribute. Python 3.11 calls a method through
# LOAD_METHOD; 3.12 folded that into LOAD_ATTR with a flag in the argument, but
# `argval` is the bare name in every version, so comparing it covers both.
# LOAD_GLOBAL and LOAD_NAME catch names brought in with `from socket import ...`.
_LOADING_OPNAMES = frozenset(
    {
        "LOAD_ATTR",
        "LOAD_METHOD",
        "LOAD_SUPER_ATTR",
        "LOAD_GLOBAL",
        "LOAD_NAME",
        "LOAD_FROM_DICT_OR_GLOBALS",
    }
)


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    """Yield a code object and every code object nested in it (closures, lambdas...)."""
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _functions_of(value: object, owner_qualname: str) -> Iterator[types.FunctionType]:
    """Yield the plain functions behind one value found in a class body."""
    # Descriptors wrap the function we want to read.
    if isinstance(value, (staticmethod, classmethod)):
        yield from _functions_of(value.__func__, owner_qualname)
    elif isinstance(value, property):
        for accessor in (value.fget, value.fset, value.fdel):
            if accessor is not None:
                yield from _functions_of(accessor, owner_qualname)

    # A decorated function hides the original behind __wrapped__; read every layer,
    # since the wrapper's own code runs as part of the class too.
    elif isinstance(value, types.FunctionType):
        seen: set[int] = set()
        current: object = value
        while isinstance(current, types.FunctionType) and id(current) not in seen:
            seen.add(id(current))
            yield current
            current = getattr(current, "__wrapped__", None)

    # A class defined inside this class body is part of it; an alias to a class
    # defined elsewhere is not ours to judge.
    elif isinstance(value, type) and value.__qualname__.startswith(
        owner_qualname + "."
    ):
        for inner in vars(value).values():
            yield from _functions_of(inner, value.__qualname__)


def _loaded_names(
    namespace: Mapping[str, object], owner_qualname: str
) -> Iterator[tuple[str, str]]:
    """Yield (function qualname, loaded name) for every function of a class body."""
    for value in namespace.values():
        for function in _functions_of(value, owner_qualname):
            for code in _code_objects(function.__code__):
                for instruction in dis.get_instructions(code):
                    if instruction.opname in _LOADING_OPNAMES and isinstance(
                        instruction.argval, str
                    ):
                        yield function.__qualname__, instruction.argval


def _first_use(
    namespace: Mapping[str, object], owner_qualname: str, names: Iterable[str]
) -> tuple[str, str] | None:
    wanted = frozenset(names)
    for function_qualname, name in _loaded_names(namespace, owner_qualname):
        if name in wanted:
            return function_qualname, name
    return None


def _refuse_socket_attributes(
    verifier: str, class_name: str, namespace: Mapping[str, object]
) -> None:
    for attr_name, value in namespace.items():
        if isinstance(value, socket.socket):
            raise TypeError(
                f"{verifier} refused class {class_name!r}: class attribute "
                f"{attr_name!r} is a socket; create sockets per instance, "
                "not at class level"
            )


class ClientVerifier(type):
    """Refuse a client class that listens, accepts, keeps a class-level socket or
    uses a socket kind other than TCP."""

    def __init__(
        cls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        /,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        _refuse_socket_attributes("ClientVerifier", name, namespace)

        for attr_name, value in namespace.items():
            if (
                isinstance(value, socket.SocketKind)
                and value.name in CLIENT_FORBIDDEN_SOCKET_KINDS
            ):
                raise TypeError(
                    f"ClientVerifier refused class {name!r}: class attribute "
                    f"{attr_name!r} is {value.name}; a client may only use TCP "
                    "(SOCK_STREAM)"
                )

        offence = _first_use(namespace, cls.__qualname__, CLIENT_FORBIDDEN_CALLS)
        if offence is not None:
            raise TypeError(
                f"ClientVerifier refused class {name!r}: {offence[0]} uses "
                f"{offence[1]!r}, which belongs to a server; a client connects"
            )

        offence = _first_use(namespace, cls.__qualname__, CLIENT_FORBIDDEN_SOCKET_KINDS)
        if offence is not None:
            raise TypeError(
                f"ClientVerifier refused class {name!r}: {offence[0]} uses "
                f"{offence[1]}; a client may only use TCP (SOCK_STREAM)"
            )
        log.debug("ClientVerifier accepted class %s", cls.__qualname__)


class ServerVerifier(type):
    """Refuse a server class that opens outgoing connections or keeps a class-level
    socket."""

    def __init__(
        cls,
        name: str,
        bases: tuple[type, ...],
        namespace: dict[str, Any],
        /,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, bases, namespace, **kwargs)
        _refuse_socket_attributes("ServerVerifier", name, namespace)

        offence = _first_use(namespace, cls.__qualname__, SERVER_FORBIDDEN_CALLS)
        if offence is not None:
            raise TypeError(
                f"ServerVerifier refused class {name!r}: {offence[0]} uses "
                f"{offence[1]!r}, which opens an outgoing connection; a server "
                "only accepts"
            )
        log.debug("ServerVerifier accepted class %s", cls.__qualname__)
