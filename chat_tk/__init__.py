"""chat_tk: a small desktop messenger whose direct messages are end-to-end encrypted."""

__version__ = "0.1.0"
APP_NAME = "chat_tk"
