"""svrt: spatially variant restoration of ground-based solar observations.

A neural spatially variant convolution emulator (SVCE, Asensio Ramos) and the SV-MOMFBD built on it.
Heavy or optional parts (ONNX Runtime, TensorRT, CUDA kernels) are imported only when used.
"""

__version__ = "0.1.0"

from svrt.errors import SvrtError  # noqa: E402,F401
