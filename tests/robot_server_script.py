"""A policy server in its own process for the kill -9 test: serves ``ScriptedPolicy`` (3-d, H=5)
on a free loopback port, prints the port, and serves until killed."""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _robot_fakes import ScriptedPolicy  # noqa: E402
from vlastack.serving.server import ServerThread  # noqa: E402

if __name__ == "__main__":
    srv = ServerThread(ScriptedPolicy(), port=0).start()
    print(srv.port, flush=True)
    while True:
        time.sleep(1)
