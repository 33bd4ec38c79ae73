"""SIGTERM and SIGHUP handled as Ctrl-C is, and an interruption that Python swallowed delivered again."""
from __future__ import annotations

import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is: finished results kept, children stopped, exit 130."""


def _terminate(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # a second one must not cut short the saving of what is finished
    raise Terminated(signal.Signals(signum).name)


def _redeliver(unraisable) -> None:
    """An interruption raised where Python can only print it (a weakref callback, __del__): signal it again."""
    # Seen in CI: SIGHUP arrived inside importlib's module-lock callback, the exception was printed and dropped,
    # and the process slept on in a plugin that hangs.
    exc = unraisable.exc_value
    if isinstance(exc, Terminated):
        signum = signal.Signals[str(exc)]
        signal.signal(signum, _terminate)
    elif isinstance(exc, KeyboardInterrupt) and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signum = signal.SIGINT
    else:
        _previous_hook(unraisable)
        return
    # From another thread, shortly: a handler run now would raise inside this hook, and be dropped again. A real
    # signal at the main thread, where _thread.interrupt_main would not wake a blocking call such as sleep.
    timer = threading.Timer(0.01, signal.pthread_kill, (threading.main_thread().ident, signum))
    timer.daemon = True
    timer.start()


_previous_hook = sys.unraisablehook


def catch() -> dict:
    """Turn SIGTERM and SIGHUP into Terminated; the handlers they replace, to give to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    sys.unraisablehook = _redeliver
    # One ignored on purpose (nohup) stays ignored.
    return {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGHUP)
            if signal.getsignal(sig) is signal.SIG_DFL}


def restore(replaced: dict) -> None:
    """Put back the handlers that catch replaced."""
    for sig, handler in replaced.items():
        signal.signal(sig, handler)
    if sys.unraisablehook is _redeliver:
        sys.unraisablehook = _previous_hook
