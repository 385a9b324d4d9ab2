"""Does a failed login take the same time for an unknown name as for a wrong password?

Starts a real server on 127.0.0.1 in this process, makes one account, then times
`authenticate` over loopback for: a wrong password on the real account, an unknown
name, and a seal that does not open. The login throttle is lifted for the run for the run (it would answer 429 after five tries). Prints medians and the ratio of each
failure kind to the wrong-password baseline; a ratio near 1.0 reveals nothing.

    python bench/login_timing.py [--tries 30]
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat_tk import crypto, protocol  # noqa: E402
from chat_tk.server import hub as hub_module  # noqa: E402
from chat_tk.server.net import ServerConfig  # noqa: E402
from chat_tk.server.runner import HostedServer  # noqa: E402


class Connection:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.decoder = protocol.FrameDecoder()
        self.hello = self.read()
        self.key = crypto.load_public_key(self.hello["key"])

    def read(self) -> dict:
        while True:
            frames = self.decoder.feed(self.sock.recv(65536))
            if frames:
                return frames[0]  # one request in flight at a time

    def timed_login(self, action: str, name: str, sealed: str) -> tuple[float, int]:
        message = {
            "action": action,
            "time": time.time(),
            "user": {"account_name": name, "password": sealed},
        }
        started = time.perf_counter()
        self.sock.sendall(protocol.encode(message))
        reply = self.read()
        return time.perf_counter() - started, reply["response"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    # The throttle would answer 429 after a few tries; this run measures the 402 path.
    hub_module.LOGIN_FAILURES_PER_ADDRESS = hub_module.LOGIN_FAILURES_PER_NAME = 10**9

    with tempfile.TemporaryDirectory() as folder:
        server = HostedServer(
            ServerConfig(port=0, data_dir=Path(folder), open_registration=True)
        )
        port = server.start()
        setup = Connection(port)
        setup.timed_login(
            "register",
            "realuser",
            crypto.seal_password("right-password", setup.hello["nonce"], setup.key),
        )

        timings: dict[str, list[float]] = {
            "wrong password": [],
            "unknown name": [],
            "unopenable seal": [],
        }
        for attempt in range(args.tries):
            for kind in timings:
                conn = Connection(port)
                name = "realuser" if kind != "unknown name" else f"nobody{attempt}"
                if kind == "unopenable seal":
                    sealed = base64.b64encode(
                        os.urandom(256)
                    ).decode()  # random, key-sized
                else:
                    sealed = crypto.seal_password(
                        "wrong-password", conn.hello["nonce"], conn.key
                    )
                seconds, code = conn.timed_login("authenticate", name, sealed)
                assert code == 402, code
                timings[kind].append(seconds)
                conn.sock.close()
        setup.sock.close()
        server.stop()

    baseline = statistics.median(timings["wrong password"])
    print(f"{args.tries} tries each, median time to the 402 answer:")
    for kind, values in timings.items():
        median = statistics.median(values)
        print(
            f"  {kind:16} {median * 1000:7.1f} ms  (ratio to wrong password {median / baseline:.2f})"
        )


if __name__ == "__main__":
    main()
