"""tritonnet: the layers of convolutional networks as Triton kernels.

``import tritonnet`` neither queries a device nor imports Triton; kernels load on first use.
"""

from . import functional, nn
from .backend import get_backend, set_backend, use_backend
from .convert import convert

__version__ = "0.1.0"

__all__ = ["convert", "functional", "get_backend", "nn", "set_backend", "use_backend"]
