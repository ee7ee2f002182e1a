"""Intervention switches from the standard library: a key in this terminal, or a foot pedal.

``vlastack robot --teleop ...`` needs to know when a person takes over. A leader arm (an SO-100
leader) cannot say so itself; these switches can, with no extra dependency:

* ``TerminalKeySwitch``: a key pressed in the terminal vlastack runs in toggles the flag (press
  to take over, again to hand back: a terminal reports key presses, never releases). While it
  runs, the terminal is in cbreak mode (``tty.setcbreak``: keys arrive one by one, unechoed;
  unlike full raw mode, Ctrl-C still raises ``KeyboardInterrupt`` and output newlines still
  return the carriage) and ``close()`` puts back the exact settings it found, on a normal exit,
  an exception, Ctrl-C or (with ``vlastack.lifeline.raise_on_sigterm``, as the CLI does)
  SIGTERM: use it as a context manager or close it in a ``finally``. Typed-ahead keys are
  discarded when it starts. When stdin is not a terminal (piped, redirected, a service) or this
  process is in the terminal's background, the switch stays off and ``reason`` says why.
* ``EvdevPedalSwitch``: a Linux input device (``/dev/input/eventN`` or
  ``/dev/input/by-id/...-event-kbd``: USB foot pedals show up as keyboards) read as the kernel's
  ``struct input_event`` records (``struct timeval time; __u16 type, code; __s32 value``,
  ``linux/input.h``). ``mode="hold"`` (default): a person drives while a key is held down;
  ``"toggle"``: each press toggles. ``code`` picks one key (its Linux key code, e.g. 48 for
  KEY_B; the log prints the codes it sees), default any. The device is grabbed
  (``EVIOCGRAB``) so its key presses do not also type into other programs. If the device goes
  away (unplugged) the switch turns off (the policy drives again) and ``lost`` says why.

Both are ``InterventionSwitch``es: pass one as ``TeleopIntervention(..., intervening=switch)``.
Each reads in a daemon thread that waits in ``select`` and stops within ``poll_s`` of ``close()``.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import struct
import sys
import threading
from typing import Any

from vlastack.errors import ConfigError
from vlastack.robot.intervention import InterventionSwitch

log = logging.getLogger("vlastack.robot")

KEYS = {"SPACE": (b" ",), "ENTER": (b"\n", b"\r"), "RETURN": (b"\n", b"\r"), "TAB": (b"\t",)}

INPUT_EVENT = struct.Struct("@llHHi")  # struct input_event (native long timeval: 24 B on 64-bit)
EV_KEY = 0x01
KEY_UP, KEY_DOWN, KEY_REPEAT = 0, 1, 2
EVIOCGRAB = 0x40044590  # _IOW('E', 0x90, int)
PEDAL_MODES = ("hold", "toggle")


def parse_key(text: str, flag: str = "key") -> tuple[bytes, ...]:
    """The bytes a terminal sends for ``text``: SPACE, ENTER (RETURN), TAB, or one printable
    character other than a space (case kept: ``i`` is not ``I``)."""
    name = text.strip()
    if name.upper() in KEYS:
        return KEYS[name.upper()]
    if len(text) == 1 and text.isprintable() and not text.isspace():
        return (text.encode(),)
    raise ConfigError(
        f"{flag} {text!r}: expected SPACE, ENTER, TAB or one printable character (e.g. i)"
    )


class _ReaderSwitch(InterventionSwitch):
    """An ``InterventionSwitch`` fed by a thread reading a file descriptor."""

    def __init__(self, poll_s: float) -> None:
        super().__init__()
        self.poll_s = float(poll_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None

    def _start_thread(self, name: str) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        fd = self._fd
        assert fd is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([fd], [], [], self.poll_s)
                if not ready:
                    continue
                data = os.read(fd, 4096)
            except BlockingIOError:
                continue
            except OSError as exc:  # ENODEV: unplugged; EBADF: closed under us
                self._ended(f"{exc.strerror or exc} (errno {exc.errno})")
                return
            if not data:
                self._ended("end of file")
                return
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        raise NotImplementedError

    def _ended(self, why: str) -> None:
        pass

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, 4 * self.poll_s))
        self._thread = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TerminalKeySwitch(_ReaderSwitch):
    """``key`` (``parse_key``) typed in the terminal on ``fd`` (default: stdin) toggles the flag.

    ``start()`` returns whether the switch is live; when it is not, ``reason`` says why and the
    flag stays off. ``close()`` (idempotent) stops the reader and restores the terminal.
    """

    def __init__(self, key: str = "SPACE", *, fd: int | None = None, poll_s: float = 0.05) -> None:
        super().__init__(poll_s)
        self.key_name = key.strip().upper() if key.strip().upper() in KEYS else key
        self.key_bytes = parse_key(key)
        self.fd_given = fd
        self.reason: str | None = None
        self.presses = 0
        self._saved: tuple[int, list[Any]] | None = None  # (fd, termios attributes)

    def _terminal_fd(self) -> int | None:
        if self.fd_given is not None:
            fd = self.fd_given
        else:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):  # pytest's capture, a closed stdin
                self.reason = "stdin is not a terminal (it has no file descriptor)"
                return None
        if not os.isatty(fd):
            self.reason = "stdin is not a terminal (piped, redirected or run without one)"
            return None
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                self.reason = (
                    "this process runs in the terminal's background (&): keys go elsewhere"
                )
                return None
        except OSError:
            pass  # no controlling terminal (a pty passed in): the keys still arrive
        return fd

    def start(self) -> bool:
        if self._thread is not None:
            return True
        try:
            import termios
            import tty
        except ImportError:  # not a POSIX system
            self.reason = "this system has no termios (POSIX terminals only)"
            return False
        fd = self._terminal_fd()
        if fd is None:
            log.warning("intervention key %s is off: %s", self.key_name, self.reason)
            return False
        self._saved = (fd, termios.tcgetattr(fd))
        try:
            tty.setcbreak(fd, termios.TCSAFLUSH)  # TCSAFLUSH: drop keys typed before now
            self._fd = fd
            self._start_thread("vlastack-intervention-key")
        except BaseException:
            self._restore()
            raise
        self.reason = None
        log.info(
            "press %s in this terminal to take over from the policy, %s again to hand back",
            self.key_name,
            self.key_name,
        )
        return True

    def _feed(self, data: bytes) -> None:
        for i in range(len(data)):
            if data[i : i + 1] in self.key_bytes:
                self.presses += 1
                self.toggle()

    def _restore(self) -> None:
        if self._saved is None:
            return
        import termios

        fd, attrs = self._saved
        self._saved = None
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
        except termios.error as exc:  # the terminal went away: nothing left to restore
            log.warning("could not restore the terminal settings: %s", exc)

    def _ended(self, why: str) -> None:
        self.reason = f"the terminal closed ({why})"
        self.set(False)
        log.error("intervention key %s: %s; the policy drives", self.key_name, self.reason)

    def close(self) -> None:
        try:
            self._stop_thread()
        finally:
            self._restore()
            self._fd = None


class EvdevPedalSwitch(_ReaderSwitch):
    """A foot pedal (any evdev device) at ``path``: see the module docstring."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        code: int | None = None,
        mode: str = "hold",
        grab: bool = True,
        poll_s: float = 0.05,
        flag: str = "pedal",
    ) -> None:
        super().__init__(poll_s)
        if mode not in PEDAL_MODES:
            raise ConfigError(f"{flag} mode {mode!r}: expected one of {', '.join(PEDAL_MODES)}")
        self.path = os.fspath(path)
        self.code = code
        self.mode = mode
        self.grab = grab
        self.flag = flag
        self.lost: str | None = None
        self.presses = 0
        self._buf = b""
        self._down: set[int] = set()

    def start(self) -> bool:
        if self._thread is not None:
            return True
        where = f"{self.flag} {self.path}"
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise ConfigError(
                f"{where}: no such device; list the input devices with "
                "`ls -l /dev/input/by-id/` (a pedal is usually ...-event-kbd)"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{where} is a folder; give the device, e.g. /dev/input/event5")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        except PermissionError:
            raise ConfigError(
                f"{where}: permission denied; add yourself to the group that owns it "
                "(`sudo usermod -aG input $USER`, then log in again) or add a udev rule"
            ) from None
        except OSError as exc:
            raise ConfigError(f"{where}: cannot open it ({exc.strerror})") from None
        if self.grab and stat.S_ISCHR(st.st_mode):
            import fcntl

            try:
                fcntl.ioctl(fd, EVIOCGRAB, 1)
            except OSError as exc:
                log.warning("%s: not grabbed (%s); its keys also reach other programs", where, exc)
        self._fd = fd
        self.lost = None
        self._buf, self._down = b"", set()
        self._start_thread("vlastack-intervention-pedal")
        which = "any key" if self.code is None else f"key code {self.code}"
        how = "hold it down to take over" if self.mode == "hold" else "press to take over/hand back"
        log.info("foot pedal %s (%s): %s", self.path, which, how)
        return True

    def _feed(self, data: bytes) -> None:
        buf = self._buf + data
        size = INPUT_EVENT.size
        whole = len(buf) - len(buf) % size
        for off in range(0, whole, size):
            _sec, _usec, etype, code, value = INPUT_EVENT.unpack_from(buf, off)
            if etype != EV_KEY or value == KEY_REPEAT:
                continue
            log.debug("%s: key code %d %s", self.path, code, "down" if value else "up")
            if self.code is not None and code != self.code:
                continue
            if value == KEY_DOWN:
                self.presses += 1
                self._down.add(code)
                if self.mode == "toggle":
                    self.toggle()
            elif value == KEY_UP:
                self._down.discard(code)
            if self.mode == "hold":
                self.set(bool(self._down))
        self._buf = buf[whole:]

    def _ended(self, why: str) -> None:
        self.lost = why
        self._down.clear()
        self.set(False)
        log.error("foot pedal %s lost (%s): the policy drives", self.path, why)

    def close(self) -> None:
        try:
            self._stop_thread()
        finally:
            if self._fd is not None:
                try:
                    os.close(self._fd)  # closing releases the grab
                except OSError as exc:
                    if exc.errno != errno.EBADF:
                        raise
                self._fd = None


__all__ = ["EvdevPedalSwitch", "INPUT_EVENT", "TerminalKeySwitch", "parse_key"]
