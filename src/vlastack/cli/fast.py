"""``vlastack fast fit DATASET --out DIR``: fit a FAST action tokenizer on a LeRobot v3 dataset.

Every window of ``action_horizon`` steps (stride ``--stride``, edge-padded past an episode's end
like the training windows) is normalized with the dataset's q01/q99 (openpi's quantile rule, the
normalization π0-FAST uses), then DCT + BPE are fit (Pertsch et al. 2501.09747).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def collect_chunks(
    root: str | Path,
    action_horizon: int,
    stride: int = 1,
    max_chunks: int = 0,
    key: str = "action",
    seed: int = 0,
):
    """Normalized (N, H, A) action windows of a dataset and the (q01, q99) used."""
    import numpy as np

    from vlastack.data.reader import DatasetReader
    from vlastack.errors import DataError

    reader = DatasetReader(root, verify_videos=False)
    if key not in reader.features:
        raise DataError(
            f"{root}: no feature {key!r} (features: {sorted(reader.features)}); pass --key"
        )
    col = np.asarray(reader.column(key), dtype=np.float64)
    if col.ndim == 1:
        col = col[:, None]
    st = reader.stats.get(key, {})
    if "q01" in st and "q99" in st:
        q01, q99 = np.asarray(st["q01"], np.float64), np.asarray(st["q99"], np.float64)
    else:  # stats missing from meta: exact quantiles of the column
        q01, q99 = np.quantile(col, 0.01, axis=0), np.quantile(col, 0.99, axis=0)
    norm = (col - q01) / (q99 - q01 + 1e-6) * 2 - 1
    chunks = []
    for i in range(reader.num_episodes):
        ep = reader.episode(i)
        lo, hi = ep.dataset_from_index, ep.dataset_to_index
        for start in range(lo, hi, stride):
            idx = np.minimum(np.arange(start, start + action_horizon), hi - 1)
            chunks.append(norm[idx])
    if not chunks:
        raise DataError(f"{root}: the dataset has no frames to fit a FAST tokenizer on")
    arr = np.stack(chunks)
    if max_chunks and len(arr) > max_chunks:
        arr = arr[np.random.default_rng(seed).choice(len(arr), max_chunks, replace=False)]
    return arr, q01, q99


def run_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from vlastack.functional.fast_tokenizer import FastTokenizer

    chunks, q01, q99 = collect_chunks(
        args.dataset, args.action_horizon, args.stride, args.max_chunks, args.key
    )
    tok = FastTokenizer.fit(chunks, vocab_size=args.vocab_size, scale=args.scale)
    tok.extra = {
        "dataset": str(Path(args.dataset).resolve()),
        "feature": args.key,
        "normalization": "quantile",
        "q01": q01.tolist(),
        "q99": q99.tolist(),
        "num_chunks": int(len(chunks)),
    }
    tok.save(args.out)
    rec = tok.decode(tok.encode(chunks[: min(len(chunks), 2000)]))
    err = float(np.abs(rec - chunks[: len(rec)]).max())
    lens = [len(s) for s in tok.encode(chunks[: min(len(chunks), 2000)])]
    print(
        f"FAST tokenizer: {len(chunks)} chunks of ({args.action_horizon}, {chunks.shape[2]}), "
        f"vocab {tok.vocab_size}, coefficients [{tok.min_token}, {tok.max_token}], "
        f"{np.mean(lens):.1f} tokens/chunk (vs {chunks.shape[1] * chunks.shape[2]} numbers), "
        f"max round-trip error {err:.4f} → {args.out}"
    )
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("fast", help="FAST action tokenizer tools")
    sub = p.add_subparsers(dest="fast_command", metavar="ACTION", required=True)
    f = sub.add_parser("fit", help="fit a FAST tokenizer on a dataset's action chunks")
    f.add_argument("dataset", help="LeRobot v3 dataset folder")
    f.add_argument("--out", required=True, help="output folder (fast_config.json + tokenizer.json)")
    f.add_argument("--action-horizon", type=int, default=16, help="chunk length H (default 16)")
    f.add_argument("--vocab-size", type=int, default=1024, help="BPE vocabulary (default 1024)")
    f.add_argument("--scale", type=float, default=10.0, help="DCT coefficient scale (default 10)")
    f.add_argument("--stride", type=int, default=1, help="frames between chunk starts")
    f.add_argument("--max-chunks", type=int, default=0, help="subsample to at most N chunks")
    f.add_argument("--key", default="action", help="action feature name")
    f.set_defaults(func=run_fit)
