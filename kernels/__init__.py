"""Triton primitives: device code and thin launchers, installed as ``tritonnet.kernels``.

Every name exported here has a twin of the same signature in ``tritonnet.reference``.
Importing this module imports Triton; ``tritonnet`` imports it only when a Triton backend is
used. Set TRITON_INTERPRET=1 before the first import to run the kernels on CPU tensors.
"""

# one line per op family; each family file lists its primitives in __all__
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .conv_backward import *  # noqa: F403
from .cross_entropy import *  # noqa: F403
from .dropout import *  # noqa: F403
from .im2col import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .pool import *  # noqa: F403
from .pool_backward import *  # noqa: F403
from .softmax import *  # noqa: F403
from .upsample import *  # noqa: F403
