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
to build the AVX2 code on an AVX-512 CPU, as the tests do). Without a compiler, or with ``VLASTACK_NATIVE=0``, nothing is
built and every caller keeps its torch path (oneDNN / MKL); ``status()`` says which and why.

Only float32 CPU tensors, at inference (no autograd). Single-threaded: a product goes native
when torch runs one thread or when it is small enough that a second thread would not pay
(``_THREADED_MIN_MACS``); larger products at several threads keep torch's threaded kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

_SRC = Path(__file__).with_name("kernels.c")
_ABI = 1
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno", "-std=gnu11"]
_ACT = {None: 0, "none": 0, "relu": 1, "gelu": 2}
# products of at least this many multiply-adds run torch's threaded kernels when torch has
# more than one thread (2 cores: 16 x 256 x 1024, 4.2M, measured 1.05x faster native at 1
# thread than oneDNN at 2; BENCHMARKS.md session 12)
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
    for part in (_SRC.read_bytes(), version.encode(), " ".join(flags).encode(),
                 _cpu_flags().encode()):
        key.update(part)
    out = _cache_dir() / f"vlkernels-{key.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.stem, suffix=".tmp.so", dir=out.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [cc, *flags, str(_SRC), "-o", tmp, "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{cc} failed on {_SRC.name}: {proc.stderr.strip()[-2000:]}")
        os.replace(tmp, out)  # atomic: another process may have built the same file meanwhile
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
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
    lib.vl_linear.argtypes = [L, L, L, P, L, P, P, P, L, P, L, ctypes.c_int]
    lib.vl_linear.restype = None
    lib.vl_attention.argtypes = [L] * 5 + [P, L, L] * 3 + [P, ctypes.c_float, P]
    lib.vl_attention.restype = ctypes.c_int
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


def usable(weight: torch.Tensor) -> bool:
    """A plan built from ``weight`` may pack it for the native product."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32 and available()


class NativeLinear(tuple):
    """A linear layer packed for ``vl_linear``: (panels, padded bias or None, weight, bias,
    out_features, in_features). The plain weight and bias serve the torch fallback."""

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
    return NativeLinear((panels, b, w, bias, N, K))


def linear(
    x: torch.Tensor,
    pack: NativeLinear,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(x Wᵀ + b) (+ residual)`` for a pack from ``pack_linear``; x (…, K) float32 on the
    CPU. Runs torch's kernels where the native one does not fit (see the module docstring)."""
    panels, bp, w, b, N, K = pack
    M = x.numel() // K if K else 0
    lib = _lib
    if (
        lib is None
        or x.dtype is not torch.float32
        or x.requires_grad
        or (M * N * K >= _THREADED_MIN_MACS and torch.get_num_threads() > 1)
    ):
        y = F.linear(x, w, b)
        if activation == "relu":
            y = F.relu(y)
        elif activation == "gelu":
            y = F.gelu(y)
        return y if residual is None else residual + y
    if not x.is_contiguous():
        x = x.contiguous()
    shape = (*x.shape[:-1], N)
    if residual is not None:
        if residual.shape != shape or residual.dtype is not torch.float32:
            residual = residual.expand(shape).float()
        if not residual.is_contiguous():
            residual = residual.contiguous()
    y = torch.empty(shape, dtype=torch.float32)
    lib.vl_linear(
        M,
        N,
        K,
        x.data_ptr(),
        K,
        panels.data_ptr(),
        None if bp is None else bp.data_ptr(),
        None if residual is None else residual.data_ptr(),
        N,
        y.data_ptr(),
        N,
        _ACT[activation],
    )
    return y


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    key_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention with the heads still side by side in the last dimension:
    q (B, T, ·), k and v (B, S, ·), each row holding the H heads' hd values contiguously from
    its start (views into a stacked projection are fine: only the last dimension must have
    stride 1); key_mask (B, S) bool, True = attend. Returns (B, T, H·hd), the input of the
    output projection, with no transposes. Scale 1/√hd, as SDPA's default."""
    lib = _load()
    assert lib is not None
    B, T = q.shape[0], q.shape[1]
    S = k.shape[1]
    D = q.shape[-1] if q.shape[-1] % heads == 0 and q.dim() == 3 else None
    assert D is not None
    hd = D // heads
    for t in (q, k, v):
        assert t.dtype is torch.float32 and t.stride(-1) == 1
    m = None
    if key_mask is not None:
        m = key_mask.reshape(B, S).to(torch.uint8).contiguous()
    out = torch.empty(B, T, D, dtype=torch.float32)
    rc = lib.vl_attention(
        B,
        T,
        S,
        heads,
        hd,
        q.data_ptr(),
        q.stride(0),
        q.stride(1),
        k.data_ptr(),
        k.stride(0),
        k.stride(1),
        v.data_ptr(),
        v.stride(0),
        v.stride(1),
        None if m is None else m.data_ptr(),
        hd**-0.5,
        out.data_ptr(),
    )
    if rc != 0:
        raise MemoryError("vl_attention could not allocate its score buffer")
    return out
