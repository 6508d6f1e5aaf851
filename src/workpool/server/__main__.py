"""``python -m workpool.server ...``: the same as ``workpool serve ...``."""

import sys

from . import main

sys.exit(main())
