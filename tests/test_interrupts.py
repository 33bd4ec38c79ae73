"""An interruption that Python can only print (raised inside a weakref callback, as during an import) still stops
the command: seen in CI, where a SIGHUP so lost left `fwbench conformance` asleep in a hung plugin."""
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHILD = '''
import os, signal, sys, time, weakref
from fwbench.harness import interrupts
interrupts.catch()
def callback(ref):
    os.kill(os.getpid(), int(sys.argv[1]))
    for _ in range(10000):  # the handler runs here, inside the callback, where an exception is printed and dropped
        pass
class Box:
    pass
box = Box()
ref = weakref.ref(box, callback)
try:
    del box
    time.sleep(20)
    print("slept on")
except KeyboardInterrupt as e:
    print(type(e).__name__, e)
'''


@pytest.mark.parametrize("sig,expected", [(signal.SIGHUP, "Terminated SIGHUP"), (signal.SIGTERM, "Terminated SIGTERM"),
                                          (signal.SIGINT, "KeyboardInterrupt")])
def test_an_interruption_lost_in_a_callback_is_raised_again(sig, expected):
    out = subprocess.run([sys.executable, "-c", CHILD, str(int(sig))], cwd=ROOT, capture_output=True, text=True,
                         timeout=15, preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    assert out.stdout.strip() == expected
    assert "Exception ignored" not in out.stderr  # nothing dropped, so nothing to report as dropped


def test_other_unraisable_exceptions_still_reach_the_previous_hook():
    child = ("import weakref\nfrom fwbench.harness import interrupts\ninterrupts.catch()\n"
             "class Box: pass\nbox = Box()\nref = weakref.ref(box, lambda r: 1 / 0)\ndel box\nprint('went on')")
    out = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=15)
    assert out.stdout.strip() == "went on" and "ZeroDivisionError" in out.stderr
