"""``python -m lightnets.cli``: the same command as ``lightnets``."""

import sys

from . import main

sys.exit(main())
