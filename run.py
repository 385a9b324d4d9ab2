"""Start chat_tk from a checkout: `python run.py` (window), `--console`, or `server`."""

import sys

from chat_tk.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
