"""``python -m app.stack probe HOST:PORT [SERVICE]``: the container health check (see :func:`app.stack.runner.main`)."""

from __future__ import annotations

import sys

from app.stack.runner import main

if __name__ == "__main__":
    sys.exit(main())
