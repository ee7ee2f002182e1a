"""The one inference switch the plain modules read: whether a CUDA graph is being captured
(``graph_capture``; ``runners.cuda_graphs`` sets it), so that data-reading input checks stand
aside (a host synchronization is illegal during capture).

Every inference speed-up lives in a runner (``vlastack.runners``), not here: the modules carry
no fast-path flags and no caches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_CAPTURING = False


@contextlib.contextmanager
def graph_capture() -> Iterator[None]:
    """Inside: a CUDA graph is being recorded (``runners.cuda_graphs``). Host synchronizations
    (``bool(tensor)``) are illegal then, so data-reading checks stand aside."""
    global _CAPTURING
    old, _CAPTURING = _CAPTURING, True
    try:
        yield
    finally:
        _CAPTURING = old


def is_capturing() -> bool:
    return _CAPTURING
