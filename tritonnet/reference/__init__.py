"""Pure-PyTorch primitives: the same names and signatures as ``tritonnet.kernels``.

They are the CPU fallback and the readable spec of each kernel's algorithm."""

# one line per op family; each family file lists its primitives in __all__
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .im2col import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .pool import *  # noqa: F403
from .softmax import *  # noqa: F403
from .upsample import *  # noqa: F403
