from __future__ import annotations

import asyncio
import inspect
import logging
import logging.handlers
import sys

import pytest

from chat_tk.logs import configure_logging, log

SECRET = "correct-horse-battery-staple-7f3a"


@log
def greet(name, *, password=None):
    """Say hello."""
    return f"hello {name}"


class Greeter:
    @log
    def hello(self, name):
        return f"hi {name}"


@log
async def fetch(value):
    await asyncio.sleep(0)
    return value


@log
def explode(reason):
    raise ValueError(reason)


def _records_for(caplog, func):
    return [r for r in caplog.records if r.name == func.__module__]


def test_log_records_function_and_caller_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger=greet.__module__)

    assert greet("bob") == "hello bob"

    [record] = _records_for(caplog, greet)
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == (
        "call greet from test_log_records_function_and_caller_at_debug"
    )


def test_log_never_records_argument_values(caplog):
    caplog.set_level(logging.DEBUG)

    greet(SECRET, password=SECRET)
    Greeter().hello(SECRET)

    assert len(_records_for(caplog, greet)) == 2
    assert SECRET not in caplog.text
    for record in caplog.records:
        assert SECRET not in repr(record.args)


def test_log_is_silent_when_debug_is_off(caplog):
    caplog.set_level(logging.INFO, logger=greet.__module__)

    assert greet("bob") == "hello bob"

    assert _records_for(caplog, greet) == []


def test_log_on_a_method_names_the_class(caplog):
    caplog.set_level(logging.DEBUG, logger=Greeter.__module__)

    assert Greeter().hello("ann") == "hi ann"

    [record] = _records_for(caplog, Greeter.hello)
    assert record.getMessage() == (
        "call Greeter.hello from test_log_on_a_method_names_the_class"
    )


def test_log_on_a_coroutine_function(caplog):
    caplog.set_level(logging.DEBUG, logger=fetch.__module__)

    async def awaiting_caller():
        return await fetch(42)

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(awaiting_caller()) == 42
    [record] = _records_for(caplog, fetch)
    assert record.getMessage() == "call fetch from awaiting_caller"


def test_log_preserves_metadata():
    assert greet.__name__ == "greet"
    assert greet.__qualname__ == "greet"
    assert greet.__doc__ == "Say hello."
    assert greet.__wrapped__.__name__ == "greet"
    assert Greeter.hello.__qualname__ == "Greeter.hello"
    assert fetch.__name__ == "fetch"


def test_log_lets_exceptions_through():
    with pytest.raises(ValueError, match="boom"):
        explode("boom")


# --- configure_logging ---------------------------------------------------------------


@pytest.fixture
def restore_root_logger():
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers_before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level_before)


def _file_handlers(root):
    return [
        h for h in root.handlers if isinstance(h, logging.handlers.RotatingFileHandler)
    ]


def _stderr_handlers(root):
    return [
        h
        for h in root.handlers
        if type(h) is logging.StreamHandler and h.stream is sys.stderr
    ]


def test_configure_logging_writes_debug_to_the_file(tmp_path, restore_root_logger):
    log_file = tmp_path / "nested" / "logs" / "chat_tk.log"

    configure_logging(log_file)
    logging.getLogger("chat_tk.example").debug("frame of %d bytes", 17)
    for handler in _file_handlers(restore_root_logger):
        handler.flush()

    assert restore_root_logger.level == logging.DEBUG
    [handler] = _file_handlers(restore_root_logger)
    assert handler.maxBytes == 1_000_000
    assert handler.backupCount == 3
    line = log_file.read_text(encoding="utf-8").splitlines()[-1]
    assert line.endswith(" DEBUG chat_tk.example: frame of 17 bytes")


def test_configure_logging_twice_does_not_duplicate_handlers(
    tmp_path, restore_root_logger
):
    first_file = tmp_path / "first.log"
    second_file = tmp_path / "second.log"
    configure_logging(first_file)
    count_after_first = len(restore_root_logger.handlers)

    configure_logging(second_file, verbose=True)
    logging.getLogger("chat_tk.example").warning("only in the second file")
    for handler in _file_handlers(restore_root_logger):
        handler.flush()

    assert len(restore_root_logger.handlers) == count_after_first
    assert len(_file_handlers(restore_root_logger)) == 1
    assert len(_stderr_handlers(restore_root_logger)) == 1
    assert "only in the second file" in second_file.read_text(encoding="utf-8")
    assert "only in the second file" not in first_file.read_text(encoding="utf-8")


@pytest.mark.parametrize(("verbose", "info_shown"), [(False, False), (True, True)])
def test_configure_logging_stderr_level(
    capsys, restore_root_logger, verbose, info_shown
):
    configure_logging(None, verbose=verbose)
    example = logging.getLogger("chat_tk.example")

    example.debug("debug line")
    example.info("info line")
    example.warning("warning line")

    err = capsys.readouterr().err
    assert _file_handlers(restore_root_logger) == []
    assert "debug line" not in err
    assert ("INFO chat_tk.example: info line" in err) is info_shown
    assert "WARNING chat_tk.example: warning line" in err
