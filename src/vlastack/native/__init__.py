"""vlastack's native CPU kernels (``kernels.c``), built on first use for this CPU and called
through ``ctypes``.

What they are for: the inference plans' small-row fp32 products (a batch-1 chunk is ~20
products of 3-16 rows) and attention over a few tokens. ``kernels.c`` says why they are written
by hand; BENCHMARKS.md (session 12) has the numbers.

Build: the host C compiler (``$CC``, else ``cc``/``gcc``/``clang``) compiles ``kernels.c`` with
``-O3 -march=native`` into ``$VLASTACK_CACHE/native`` (default ``~/.cache/vlastack/native``),
named by a hash of the source, the compiler and the CPU's feature flags, written to a temporary
name and renamed, so concurrent processes and CPUs of different kinds sharing a home folder are
safe. It takes under a second. ``VLASTACK_NATIVE_CFLAGS`` adds flags (e.g. ``-march=haswell``
to build the AVX2 code on an AVX-512 CPU, as the tests do). Without a compiler, or with
``VLASTACK_NATIVE=0``, nothing is built and every caller keeps its torch path (oneDNN / MKL);
``status()`` says which and why.

Only float32 CPU tensors, at inference (no autograd). Single-threaded: a product goes native
when torch runs one thread or when it is small enough that a second thread would not pay
(``_THREADED_MIN_MACS``); larger products at several threads keep torch's threaded kernels.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from vlastack import atomic

log = logging.getLogger(__name__)

_SRC = Path(__file__).with_name("kernels.c")
_ABI = 4
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-std=gnu11"]
_ACT = {None: 0, "none": 0, "relu": 1, "gelu": 2}
# products of at least this many multiply-adds run torch's threaded kernels when torch has
# more than one thread. Not tuned: it keeps a batch-1 chunk's products (at most 16 x 1024 x 256,
# 4.2M) native and sends batched ones to torch's threads (BENCHMARKS.md, session 12, has the
# 2-thread ratios this gives)
_THREADED_MIN_MACS = 1 << 23

_lib: ctypes.CDLL | None = None
_state: str | None = None  # None: not tried yet; else a one-line status
_NR = 0


def _cache_dir() -> Path:
    root = os.environ.get("VLASTACK_CACHE")
    if root:
        return Path(root) / "native"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg or Path.home() / ".cache") / "vlastack" / "native"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compiler() -> str | None:
    cc = os.environ.get("CC")
    if cc:
        return cc
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _build() -> Path:
    """The shared library for this source, compiler and CPU: built if absent. Raises
    RuntimeError with the compiler's message when it cannot be built."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (set CC, or install gcc)")
    try:
        version = subprocess.run(
            [cc, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise RuntimeError(f"{cc} --version failed: {e}") from e
    flags = _FLAGS + os.environ.get("VLASTACK_NATIVE_CFLAGS", "").split()
    key = hashlib.sha256()
    for part in (
        _SRC.read_bytes(),
        version.encode(),
        " ".join(flags).encode(),
        _cpu_flags().encode(),
    ):
        key.update(part)
    out = _cache_dir() / f"vlkernels-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    # atomic: another process may have built the same file meanwhile
    with atomic.replacing(out) as tmp:
        proc = subprocess.run(
            [cc, *flags, str(_SRC), "-o", str(tmp), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed on {_SRC.name}: {proc.stderr.strip()[-2000:]}")
    return out


def _load() -> ctypes.CDLL | None:
    global _lib, _state, _NR
    if _state is not None:
        return _lib
    if os.environ.get("VLASTACK_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        _state = "off (VLASTACK_NATIVE=0)"
        return None
    if platform.machine().lower() not in ("x86_64", "amd64", "aarch64", "arm64"):
        _state = f"off (untested architecture {platform.machine()})"
        return None
    try:
        path = _build()
        lib = ctypes.CDLL(str(path))
        if lib.vl_abi() != _ABI:
            raise RuntimeError(f"{path} has ABI {lib.vl_abi()}, expected {_ABI}")
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        _state = f"off ({e})"
        log.warning("vlastack native kernels unavailable, using torch's: %s", e)
        return None
    L, P = ctypes.c_long, ctypes.c_void_p
    # (argtypes lists mix ctypes types mypy's stubs type apart)
    lib.vl_linear.argtypes = [L, L, L, P, L, P, P, P, L, P, L, ctypes.c_int]  # type: ignore[list-item]
    lib.vl_linear.restype = None
    lib.vl_attention.argtypes = [L] * 5 + [P, L, L] * 3 + [P, ctypes.c_float, P]  # type: ignore[assignment]
    lib.vl_attention.restype = ctypes.c_int
    lib.vl_ln_linear.argtypes = [
        L,
        L,
        L,
        P,
        L,
        P,
        P,
        ctypes.c_float,
        P,
        P,
        P,
        L,
        P,
        L,
        ctypes.c_int,
    ]  # type: ignore[assignment]
    lib.vl_ln_linear.restype = ctypes.c_int
    lib.vl_decoder.argtypes = [L] * 7 + [P, L, P, L, P, L, P, P, P, ctypes.c_int, P]  # type: ignore[assignment]
    lib.vl_decoder.restype = ctypes.c_int
    lib.vl_conv1d.argtypes = [L, L, L, P, L, L, L, P, P, L, L, P, P, ctypes.c_float, P, P, L, P, P]  # type: ignore[assignment]
    lib.vl_conv1d.restype = ctypes.c_int
    _NR = lib.vl_nr()
    _lib = lib
    _state = f"on ({path.name}, {_NR}-column panels)"
    return lib


def available() -> bool:
    """The kernels are built and loaded (building them now if this is the first call)."""
    return _load() is not None


def status() -> str:
    """'on (…)' or 'off (why)'."""
    _load()
    assert _state is not None
    return _state


_off = 0  # depth of ``disabled()`` blocks


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Inside, ``usable`` is False: plans and packs built here keep torch's kernels (tests of
    those paths, A/B timings). Plans built before keep what they were built with."""
    global _off
    _off += 1
    try:
        yield
    finally:
        _off -= 1


def usable(weight: torch.Tensor) -> bool:
    """A plan built from ``weight`` may pack it for the native product."""
    return (
        not _off and weight.device.type == "cpu" and weight.dtype == torch.float32 and available()
    )


class NativeLinear(tuple):
    """A linear layer packed for ``vl_linear``: (panels, padded bias or None, weight, bias,
    out_features, in_features, the panels' address, the padded bias's address or None). The
    plain weight and bias serve the torch fallback."""

    __slots__ = ()


def pack_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> NativeLinear:
    """``weight`` (N, K) and ``bias`` (N,) in the panel layout ``kernels.c`` describes."""
    assert _load() is not None and _NR
    w = weight.detach().float().contiguous()
    N, K = w.shape
    Np = -(-N // _NR) * _NR
    padded = w.new_zeros(Np, K)
    padded[:N] = w
    panels = padded.view(Np // _NR, _NR, K).transpose(1, 2).contiguous()
    b = None
    if bias is not None:
        b = w.new_zeros(Np)
        b[:N] = bias.detach().float()
        bias = bias.detach()
    return NativeLinear(
        (panels, b, w, bias, N, K, panels.data_ptr(), None if b is None else b.data_ptr())
    )


_F32 = torch.float32


def _runs_native(x: torch.Tensor, macs: int) -> bool:
    """A product of ``macs`` multiply-adds on ``x`` runs in the native kernel (else torch's)."""
    return (
        _lib is not None
        and x.dtype is _F32
        and not x.requires_grad
        and (macs < _THREADED_MIN_MACS or torch.get_num_threads() == 1)
    )


def linear(
    x: torch.Tensor,
    pack: tuple,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(x Wᵀ + b) (+ residual)`` for a pack from ``pack_linear``; x (…, K) float32 on the
    CPU. Runs torch's kernels where the native one does not fit (see the module docstring).
    Kept lean: it runs ~30 times per chunk, and each Python step here costs about what a
    16-row product of a 256-wide layer saves."""
    N, K = pack[4], pack[5]
    M = x.numel() // K if K else 0
    if not _runs_native(x, M * N * K):
        y = F.linear(x, pack[2], pack[3])
        if activation == "relu":
            y = F.relu(y)
        elif activation == "gelu":
            y = F.gelu(y)
        return y if residual is None else residual + y
    if not x.is_contiguous():
        x = x.contiguous()
    assert _lib is not None  # _runs_native checked it
    y = torch.empty((*x.shape[:-1], N), dtype=_F32)
    r = None
    if residual is not None:
        if residual.shape != y.shape or residual.dtype is not _F32:
            residual = residual.expand(y.shape).to(_F32)
        if not residual.is_contiguous():
            residual = residual.contiguous()
        r = residual.data_ptr()
    _lib.vl_linear(
        M, N, K, x.data_ptr(), K, pack[6], pack[7], r, N, y.data_ptr(), N, _ACT[activation]
    )
    return y


def ln_linear(
    x: torch.Tensor, norm: tuple, pack: tuple, activation: str | None = None
) -> torch.Tensor:
    """``linear(layer_norm(x), pack, activation)`` with ``norm`` = (weight or None, bias or
    None, eps) over the last dimension, the normalized rows never a tensor of their own (one
    call where a plan makes two)."""
    N, K = pack[4], pack[5]
    M = x.numel() // K
    if not _runs_native(x, M * N * K):
        return linear(torch.layer_norm(x, (K,), norm[0], norm[1], norm[2]), pack, activation)
    if not x.is_contiguous():
        x = x.contiguous()
    assert _lib is not None
    y = torch.empty((*x.shape[:-1], N), dtype=_F32)
    g, b, eps = norm
    rc = _lib.vl_ln_linear(
        M, N, K, x.data_ptr(), K, None if g is None else g.data_ptr(),
        None if b is None else b.data_ptr(), eps, pack[6], pack[7], None, N, y.data_ptr(), N,
        _ACT[activation],
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("vl_ln_linear could not allocate its buffer")
    return y


def key_mask_bytes(mask: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    """A boolean key mask broadcastable to (B, 1, 1, S) or (B, S), True = attend, as the
    attention calls here take it: (B, S) bytes; None stays None. Make it once per chunk."""
    if mask is None:
        return None
    return mask.reshape(batch, -1).to(torch.uint8).contiguous()


def _attend(
    B: int,
    T: int,
    S: int,
    H: int,
    D: int,
    q: int,
    qb: int,
    qt: int,
    k: int,
    kb: int,
    ks: int,
    v: int,
    vb: int,
    vs: int,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    out = torch.empty((B, T, D), dtype=_F32)
    hd = D // H
    assert _lib is not None
    rc = _lib.vl_attention(
        B, T, S, H, hd, q, qb, qt, k, kb, ks, v, vb, vs,
        None if mask is None else mask.data_ptr(), hd**-0.5, out.data_ptr(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("vl_attention could not allocate its buffers")
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention with the heads side by side in the last dimension: q (B, T, D),
    k and v (B, S, D), float32 on the CPU, each with stride 1 in the last dimension (views into
    a stacked projection are fine); key_mask (B, S) bool or bytes, True = attend. Returns
    (B, T, D), the input of the output projection, with no transposes. Scale 1/√(D/heads), as
    SDPA's default; a query whose keys are all masked gets zeros, as torch's CPU SDPA gives."""
    assert _load() is not None
    B, T, D = q.shape
    S = k.shape[1]
    if D % heads:
        raise ValueError(f"attention: width {D} is not divisible by heads {heads}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dtype is not _F32 or t.device.type != "cpu" or t.stride(-1) != 1:
            raise ValueError(f"attention: {name} must be float32 on the CPU with stride 1 last")
    return _attend(
        B, T, S, heads, D,
        q.data_ptr(), q.stride(0), q.stride(1),
        k.data_ptr(), k.stride(0), k.stride(1),
        v.data_ptr(), v.stride(0), v.stride(1), key_mask_bytes(key_mask, B),
    )  # fmt: skip


def self_attention(
    qkv: torch.Tensor, heads: int, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``attention`` over one stacked projection: qkv (B, T, 3·D) contiguous, q then k then v;
    key_mask from ``key_mask_bytes`` or None."""
    B, T, D3 = qkv.shape
    D = D3 // 3
    p = qkv.data_ptr()
    return _attend(B, T, T, heads, D, p, T * D3, D3, p + 4 * D, T * D3, D3, p + 8 * D, T * D3,
                   D3, key_mask)  # fmt: skip


def cross_attention(
    q: torch.Tensor,
    stacked: torch.Tensor,
    layer: int,
    heads: int,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attention`` of q (B, T, D), rows contiguous (a batch stride of 0, an expanded
    constant, is fine), to layer ``layer``'s K and V in ``stacked`` (B, S, L·2·D) contiguous,
    every layer's K then V as ``DecoderPlan.context_kv`` makes it; key_mask from
    ``key_mask_bytes`` or None."""
    B, T, D = q.shape
    S, W = stacked.shape[1], stacked.shape[2]
    p = stacked.data_ptr() + 8 * layer * D
    return _attend(B, T, S, heads, D, q.data_ptr(), q.stride(0), D, p, S * W, W, p + 4 * D, S * W,
                   W, key_mask)  # fmt: skip


def pack_conv1d(weight: torch.Tensor, bias: torch.Tensor | None) -> NativeLinear:
    """A ``Conv1d`` weight (N, C, k) packed tap-major for ``conv1d``: the (N, k·C) layer whose
    input row is k consecutive time steps of C channels."""
    N, C, k = weight.shape
    return pack_linear(weight.detach().permute(0, 2, 1).reshape(N, k * C), bias)


def conv1d(
    x: torch.Tensor,
    pack: tuple,
    kernel: int,
    stride: int = 1,
    padding: int = 0,
    norm: tuple | None = None,
    film: tuple | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """A 1-D convolution of time-major x (B, T, C) float32 (made contiguous) with a pack from
    ``pack_conv1d`` (or ``pack_linear`` of a tap-major (N, k·C) matrix), then optionally
    GroupNorm + Mish (``norm`` = (groups, weight, bias, eps)), FiLM (``film`` = (scale or None,
    bias): (B, N) views with stride 1 in the last dimension, e.g. slices of one stacked
    product), and a residual (B, T_out, N). Returns (B, T_out, N)."""
    assert _lib is not None
    if not x.is_contiguous():
        x = x.contiguous()
    B, T, C = x.shape
    N = pack[4]
    T_out = (T + 2 * padding - kernel) // stride + 1
    out = torch.empty((B, T_out, N), dtype=_F32)
    groups, gw, gb, eps = norm if norm is not None else (0, None, None, 0.0)
    fs = fb = None
    fstride = 0
    if film is not None:
        scale, shift = film
        fb = shift.data_ptr()
        fstride = shift.stride(0)
        if scale is not None:
            fs = scale.data_ptr()
    r = None
    if residual is not None:
        if not residual.is_contiguous():
            residual = residual.contiguous()
        r = residual.data_ptr()
    rc = _lib.vl_conv1d(
        B, T, C, x.data_ptr(), kernel, stride, padding, pack[6], pack[7], N, groups,
        None if gw is None else gw.data_ptr(), None if gb is None else gb.data_ptr(), eps,
        fs, fb, fstride, r, out.data_ptr(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("vl_conv1d could not allocate its buffers")
    return out


class DecoderParams:
    """What ``vl_decoder`` reads of a pre-norm cross-attention decoder, made once per plan: the
    18 pointers per block and the final norm's 2 in one C array, the norms' eps values, and
    the tensors behind the pointers (kept alive here). ``blocks``: per block (norm1, qkv,
    self-out, norm2, cross-q, cross-out, norm3, ffn-in, ffn-out) as ``DecoderPlan`` holds them,
    norms (weight or None, bias or None, eps), products ``NativeLinear`` packs."""

    def __init__(self, blocks: list[tuple], final_norm: tuple, width: int, heads: int,
                 hidden: int, activation: str) -> None:  # fmt: skip
        ptrs: list[int | None] = []
        eps: list[float] = []
        keep: list[torch.Tensor] = []

        def norm(n: tuple) -> None:
            for t in n[:2]:
                ptrs.append(None if t is None else t.data_ptr())
                if t is not None:
                    keep.append(t)

        for n1, qkv, o1, n2, q2, o2, n3, f1, f2 in blocks:
            for part in (n1, qkv, o1, n2, q2, o2, n3, f1, f2):
                if type(part) is NativeLinear:
                    ptrs.extend((part[6], part[7]))
                    keep.append(part[0])
                else:
                    norm(part)
            eps.extend((n1[2], n2[2], n3[2]))
        norm(final_norm)
        eps.append(final_norm[2])
        self.params = (ctypes.c_void_p * len(ptrs))(*ptrs)
        self.eps = torch.tensor(eps, dtype=_F32)
        self.keep = keep
        self.depth, self.width, self.heads, self.hidden = len(blocks), width, heads, hidden
        self.act = _ACT[activation]


def decoder(
    p: DecoderParams,
    x: torch.Tensor,
    kv: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    start: int = 0,
    first_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decoder ``p`` describes over x (B, T, D) from block ``start``, in one call (see
    ``vl_decoder`` in kernels.c): x's rows contiguous (a batch stride of 0, an expanded
    constant, is fine; x is not written), kv (B, S, L·2·D) contiguous as
    ``DecoderPlan.context_kv`` stacks it, key_mask from ``key_mask_bytes`` or None, first_q
    (B, T, D) rows contiguous or None. Returns the final-normed (B, T, D)."""
    assert _lib is not None
    B, T, D = x.shape
    out = torch.empty((B, T, D), dtype=_F32)
    rc = _lib.vl_decoder(
        B, T, D, p.heads, p.hidden, p.depth, start, x.data_ptr(), x.stride(0),
        None if first_q is None else first_q.data_ptr(),
        0 if first_q is None else first_q.stride(0), kv.data_ptr(), kv.shape[1],
        None if key_mask is None else key_mask.data_ptr(), p.params, p.eps.data_ptr(), p.act,
        out.data_ptr(),
    )  # fmt: skip
    if rc != 0:
        raise MemoryError("vl_decoder could not allocate its buffers")
    return out
