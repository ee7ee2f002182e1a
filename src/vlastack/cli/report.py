"""``vlastack report RESULTS_DIR... --out report.html``: one self-contained HTML page.

Tables, plots (success by task, success vs latency, stress drops, chain length), rollout videos
and manifests of one or several ``vlastack eval`` results folders.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="build an HTML report from results folders",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("results", nargs="+", help="results folders written by `vlastack eval`")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument(
        "--videos",
        choices=["auto", "embed", "link"],
        default="auto",
        help="embed videos as data URIs, link them relatively, or embed below 25 MB",
    )
    p.add_argument("--title", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlastack.errors import require

    require("matplotlib", "report", "plots in the HTML report")
    from vlastack.evaluation.report import build_report

    path = build_report(args.results, args.out, videos=args.videos, title=args.title)
    print(f"report: {path}")
    return 0
