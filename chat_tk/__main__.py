"""Command line entry: the GUI client by default, `--console`, or `server`.

Kept thin: parse arguments, set up logging, hand over. PyInstaller uses main().
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from chat_tk import __version__
from chat_tk.errors import ChatError
from chat_tk.logs import configure_logging
from chat_tk.paths import resolve_data_dir

log = logging.getLogger(__name__)

DEFAULT_PORT = 7777


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat_tk",
        description="chat_tk messenger. Run 'chat_tk server --help' for the server.",
    )
    parser.add_argument(
        "-a", "--addr", default="localhost", help="server address (default: localhost)"
    )
    parser.add_argument(
        "-p",
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="server port (default: 7777)",
    )
    parser.add_argument("-u", "--user", help="account name to fill in")
    parser.add_argument(
        "--console", action="store_true", help="use the terminal instead of a window"
    )
    parser.add_argument(
        "--register", action="store_true", help="(console) create the account first"
    )
    parser.add_argument(
        "--data-dir", help="folder for databases, keys and logs (or set CHAT_TK_HOME)"
    )
    parser.add_argument(
        "--forget-server",
        metavar="HOST:PORT",
        help="forget a pinned server key, then exit",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print informational logs too"
    )
    parser.add_argument("--version", action="version", version=f"chat_tk {__version__}")
    return parser


def server_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chat_tk server", description="Run the chat_tk server."
    )
    parser.add_argument(
        "-a", "--addr", default="0.0.0.0", help="address to listen on (default: all)"
    )
    parser.add_argument(
        "-p", "--port", type=_port, default=DEFAULT_PORT, help="port (default: 7777)"
    )
    parser.add_argument("--data-dir", help="folder for the server database and logs")
    parser.add_argument(
        "--open-registration", action="store_true", help="let anyone create an account"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--add-user",
        metavar="NAME",
        help="create an account (password from a prompt or stdin)",
    )
    group.add_argument(
        "--remove-user",
        metavar="NAME",
        help="delete an account and its queued messages",
    )
    group.add_argument(
        "--list-users", action="store_true", help="list accounts with message counts"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="print informational logs too"
    )
    parser.add_argument("--version", action="version", version=f"chat_tk {__version__}")
    return parser


def run_server_command(argv: Sequence[str]) -> int:
    from chat_tk.server import runner
    from chat_tk.server.net import DATABASE_FILE, ServerConfig

    args = server_parser().parse_args(argv)
    data_dir = (
        resolve_data_dir(args.data_dir)
        if args.data_dir
        else resolve_data_dir(None) / "server"
    )
    if (args.list_users or args.remove_user) and not (
        data_dir / DATABASE_FILE
    ).exists():
        raise ChatError(f"there is no server database in {data_dir}; check --data-dir")
    data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(data_dir / "logs" / "server.log", verbose=True)

    if args.add_user:
        name = runner.add_user(data_dir, args.add_user, runner.read_new_password())
        print(f"created account {name}")
        return 0
    if args.remove_user:
        runner.remove_user(data_dir, args.remove_user)
        print(f"removed account {args.remove_user}")
        return 0
    if args.list_users:
        for name, sent, received, last_login in runner.list_users(data_dir):
            seen = "never" if last_login is None else _when(last_login)
            print(f"{name}\tsent {sent}\treceived {received}\tlast login {seen}")
        return 0

    config = ServerConfig(args.addr, args.port, data_dir, args.open_registration)
    return runner.run_headless(config)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def run_client_command(argv: Sequence[str]) -> int:
    args = client_parser().parse_args(argv)
    data_dir = resolve_data_dir(args.data_dir)
    configure_logging(data_dir / "logs" / "client.log", verbose=args.verbose)

    if args.forget_server:
        from chat_tk.client.core import KNOWN_SERVERS_FILE
        from chat_tk.storage.client_store import KnownServers

        forgotten = KnownServers(data_dir / KNOWN_SERVERS_FILE).forget(
            args.forget_server
        )
        print(("forgot " if forgotten else "no pinned key for ") + args.forget_server)
        return 0
    if args.console:
        from chat_tk.client.console import run_console

        return run_console(data_dir, args.addr, args.port, args.user, args.register)

    try:
        from chat_tk.gui.app import run_gui
    except ImportError as exc:  # a Python without Tk, or a build that lost it
        print(
            f"chat_tk: the window cannot open because Tk is missing ({exc}). "
            "Install Tk for Python (Debian: apt install python3-tk) or use --console.",
            file=sys.stderr,
        )
        return 1
    return run_gui(data_dir, args.addr, args.port, args.user)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "server":
            return run_server_command(argv[1:])
        return run_client_command(argv)
    except ChatError as exc:
        print(f"chat_tk: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:  # e.g. a data folder that is not allowed
        print(f"chat_tk: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
