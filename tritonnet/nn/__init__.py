"""tritonnet.nn: drop-in modules with torch.nn's names, constructor signatures and state_dict
keys. Each subclasses its torch.nn class and only replaces ``forward``."""

# one line per op family; each family file lists its names in __all__
from .activation import *  # noqa: F403
from .conv import *  # noqa: F403
from .dropout import *  # noqa: F403
from .im2col import *  # noqa: F403
from .linear import *  # noqa: F403
from .loss import *  # noqa: F403
from .pool import *  # noqa: F403
from .softmax import *  # noqa: F403
