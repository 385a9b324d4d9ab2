import time, threading
import pytest
from tests.wire import WirePool, encode
def test_vanish(server):
    pool = WirePool(server.port)
    errors = []
    old = threading.excepthook
    threading.excepthook = lambda a: errors.append(a)
    try:
        pool.connect().register("bob", "pw-bob1")
        alice = pool.user("alice", "pw-alice")
        alice.send_raw(b"".join(encode(alice.msg_frame("bob", "x" * 100)) for _ in range(300)))
        alice.close()
        time.sleep(1)
        c = pool.connect()
        t = time.time()
        try:
            print(c.register("carol", "pw-carol", ), time.time() - t)
        except Exception as e:
            print("register failed", repr(e), time.time() - t)
        print("thread errors", [(a.thread.name, a.exc_type, a.exc_value) for a in errors])
    finally:
        threading.excepthook = old
        pool.close_all()
