"""svrt: spatially variant restoration of ground-based solar observations.

A neural spatially variant convolution emulator (SVCE, Asensio Ramos) and the SV-MOMFBD built on it.
Heavy or optional parts (ONNX Runtime, TensorRT, CUDA kernels) are imported only when used.
"""

__version__ = "0.1.0"


def _console_start_guard():
    """When this process is the ``svrt`` console script, Ctrl-C before a command starts exits at once
    with status 130 and the word "aborted" (no traceback): until :func:`svrt.cli.main` takes over,
    a KeyboardInterrupt would surface as a traceback in whatever module was being imported. Returns
    the handler (``svrt.cli`` restores Python's own before running a command), or None when svrt is
    imported as a library."""
    import _signal  # the C module: importing `signal` builds enums, itself a window for a traceback
    import os
    import sys

    if os.path.basename(sys.argv[0] if sys.argv else "") not in ("svrt", "svrt.exe", "svrt-script.py"):
        return None
    if "__mp_main__" in sys.modules:  # a worker process spawned by svrt (multiprocessing), not the command
        return None

    def interrupted(signum, frame):
        try:
            os.write(2, b"aborted\n")
        finally:
            os._exit(130)

    try:
        _signal.signal(_signal.SIGINT, interrupted)
    except (ValueError, OSError):  # not the main thread
        return None
    return interrupted


_start_guard = _console_start_guard()

from svrt.errors import SvrtError  # noqa: E402,F401
