"""How many messages a second the server's write path commits, with and without grouping.

Runs the real DatabaseWorker and server_store.store_message on a temporary file with
synchronous=FULL, from several submitting threads (as many connections would), twice:
grouped (the server's setting) and one commit per message (the baseline). Prints both
rates and their ratio.

    python bench/group_commit.py [--messages 4000] [--senders 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chat_tk.storage import db as db_module  # noqa: E402
from chat_tk.storage import server_store  # noqa: E402

PAYLOAD = "x" * 600  # about the size of a short encrypted message


def run(messages: int, senders: int, batch_limit: int) -> float:
    """Commit `messages` messages from `senders` threads; return messages per second."""
    db_module.MAX_BATCH_OPERATIONS = batch_limit
    with tempfile.TemporaryDirectory() as folder:
        worker = db_module.DatabaseWorker(
            Path(folder) / "bench.sqlite",
            server_store.SCHEMA,
            server_store.SCHEMA_VERSION,
        )
        for name in ("alice", "bob"):
            worker.call(
                lambda c, n=name: server_store.create_account(c, n, n, n, "h", 0.0)
            )

        per_sender = messages // senders

        def sender(index: int) -> None:
            futures: list[Future[object]] = []
            for number in range(per_sender):
                message_id = f"s{index:03d}-{number:08d}-padding"
                frame = {"action": "msg", "id": message_id, "message": PAYLOAD}
                futures.append(
                    worker.submit(
                        lambda c, m=message_id, f=frame: server_store.store_message(
                            c, "alice", m, "bob", f, time.time()
                        )
                    )
                )
                if len(futures) >= 8:  # a connection keeps a few answers in flight
                    futures.pop(0).result()
            for future in futures:
                future.result()

        started = time.perf_counter()
        threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        batches = worker.batches
        worker.close()

    rate = per_sender * senders / elapsed
    print(
        f"  batch limit {batch_limit:>4}: {rate:8.0f} msg/s, {per_sender * senders} messages in {batches} commits, {elapsed:.2f} s"
    )
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--senders", type=int, default=20)
    args = parser.parse_args()

    print(f"{args.messages} messages from {args.senders} senders, synchronous=FULL")
    grouped = run(args.messages, args.senders, 512)
    baseline = run(args.messages, args.senders, 1)
    print(
        f"group commit is {grouped / baseline:.1f}x the one-commit-per-message baseline"
    )


if __name__ == "__main__":
    main()
