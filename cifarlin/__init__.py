"""cifarlin: a linear softmax classifier for CIFAR-10, trained, checked and explained."""

__version__ = "0.1.0"

# The cifarlin command itself (not a program that imports this package): a Ctrl-C or SIGTERM
# that arrives while the command line is being imported is noted here, and the command ends at
# once with one line and exit 130 (143), instead of a traceback (or death by the signal).
import os as _os
import signal as _signal
import sys as _sys

_early: list[int] = []  # stop signals received before the command line was ready for them


def _note_early(signum: int, frame: object) -> None:
    _early.append(signum)


if _os.path.basename(_sys.argv[0]) == "cifarlin" or _sys.argv[0].endswith(
    _os.path.join("cifarlin", "__main__.py")
):
    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(_sig) in (_signal.default_int_handler, _signal.SIG_DFL):
            _signal.signal(_sig, _note_early)
