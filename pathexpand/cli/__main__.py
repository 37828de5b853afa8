"""``python -m pathexpand.cli``: the same as the ``pathexpand`` command."""

import sys

from . import main

sys.exit(main())
