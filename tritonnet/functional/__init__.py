"""tritonnet.functional: torch.nn.functional's names and signatures for every op tritonnet
implements, plus fused ops of its own (``linear(..., activation=)``)."""

# one line per op family; each family file lists its names in __all__
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .im2col import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .pool import *  # noqa: F403
from .softmax import *  # noqa: F403
