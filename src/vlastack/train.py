"""``python -m vlastack.train RECIPE --data PATH [--key=value ...]``: the torchrun entry point.

``torchrun --nproc_per_node N -m vlastack.train cpu_default --data PATH --distributed=ddp``
starts N processes; each reads RANK / WORLD_SIZE from the environment (training/distributed.py).
"""

from __future__ import annotations

import sys


def main() -> int:
    from vlastack.cli.train import main as cli_main
    from vlastack.errors import VlastackError

    try:
        return cli_main(sys.argv[1:], prog="python -m vlastack.train")
    except VlastackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
