"""Logging set-up for the entry points and the @log call-tracing decorator.

This module owns the handlers on the root logger. It uses the standard library only
and must not import anything from chat_tk, so that any layer can use the decorator.
"""

from __future__ import annotations

import functools
import inspect
import logging
import logging.handlers
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, cast

# The usual module logger is called `log` elsewhere; here that name is the decorator.
logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FILE_MAX_BYTES = 1_000_000
LOG_FILE_BACKUP_COUNT = 3

# The handlers the last configure_logging() call attached, so that the next call can
# take them off again instead of stacking duplicates.
_installed_handlers: list[logging.Handler] = []


def _caller_name() -> str:
    """Name the function that called the wrapper that called us."""
    # Walking frames is cheaper than inspect.stack(), which builds a record (with
    # source positions) for every frame on the stack.
    frame = inspect.currentframe()
    try:
        for _ in range(2):
            if frame is None:
                return "?"
            frame = frame.f_back
        return "?" if frame is None else frame.f_code.co_name
    finally:
        # Break the reference cycle between this frame and the local variable.
        del frame


def log(func: Callable[P, R]) -> Callable[P, R]:
    """Record every call of `func` at DEBUG on its module's logger.

    Only the function's qualified name and its caller's name are logged, never the
    arguments, which may hold passwords or message text. The caller is looked up
    only when DEBUG is enabled, so the decorator costs almost nothing otherwise.
    """
    func_logger = logging.getLogger(func.__module__)
    qualname = func.__qualname__

    # A coroutine function gets a coroutine wrapper, so that asyncio and
    # inspect.iscoroutinefunction() still see it for what it is.
    if inspect.iscoroutinefunction(func):
        async_func = cast(Callable[P, Awaitable[Any]], func)

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            if func_logger.isEnabledFor(logging.DEBUG):
                func_logger.debug("call %s from %s", qualname, _caller_name())
            return await async_func(*args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if func_logger.isEnabledFor(logging.DEBUG):
            func_logger.debug("call %s from %s", qualname, _caller_name())
        return func(*args, **kwargs)

    return wrapper


class _BriefFormatter(logging.Formatter):
    """Leaves tracebacks out: a terminal user gets the message, the file the details."""

    def format(self, record: logging.LogRecord) -> str:
        brief = logging.LogRecord(
            record.name,
            record.levelno,
            record.pathname,
            record.lineno,
            record.msg,
            record.args,
            None,
            record.funcName,
        )
        brief.created, brief.msecs = record.created, record.msecs
        text = super().format(brief)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" ({type(record.exc_info[1]).__name__}; details in the log file)"
        return text


def configure_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Send DEBUG and up to `log_file` (rotated) and WARNING (INFO if `verbose`) and
    up to stderr. Calling it again replaces the handlers the previous call added."""
    root = logging.getLogger()
    for handler in _installed_handlers:
        root.removeHandler(handler)
        handler.close()
    _installed_handlers.clear()

    formatter = logging.Formatter(LOG_FORMAT)
    root.setLevel(logging.DEBUG)

    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file,
            maxBytes=LOG_FILE_MAX_BYTES,
            backupCount=LOG_FILE_BACKUP_COUNT,
            encoding="utf-8",
        )
        file_handler.setLevel(logging.DEBUG)
        _installed_handlers.append(file_handler)

    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.INFO if verbose else logging.WARNING)
    _installed_handlers.append(stderr_handler)

    for handler in _installed_handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    stderr_handler.setFormatter(_BriefFormatter(LOG_FORMAT))
    logger.debug("logging configured: file=%s verbose=%s", log_file, verbose)
