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


def _python_m_cifarlin() -> bool:
    """Whether this is ``python -m cifarlin``: while runpy imports the package, sys.argv[0] is
    only '-m'; the command line as given says which module."""
    argv = getattr(_sys, "orig_argv", [])
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("-m"):
            return (arg[2:] or (argv[i + 1] if i + 1 < len(argv) else "")) == "cifarlin"
    return False


if (
    _os.path.basename(_sys.argv[0]) == "cifarlin"
    or _sys.argv[0].endswith(_os.path.join("cifarlin", "__main__.py"))
    or (_sys.argv[0] == "-m" and _python_m_cifarlin())
):
    for _sig in (_signal.SIGINT, _signal.SIGTERM):
        if _signal.getsignal(_sig) in (_signal.default_int_handler, _signal.SIG_DFL):
            _signal.signal(_sig, _note_early)
