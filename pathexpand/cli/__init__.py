"""``pathexpand`` command line: derive, rank, attribute, diagram, report, models, demo.

Each command lives in its own module (``cli/derive.py``, ...) and registers itself on
``app``; heavy imports happen inside the command. Any ``PathexpandError`` becomes one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys

from . import attribute as _attribute
from . import demo as _demo
from . import derive as _derive
from . import diagram as _diagram

# Command modules register themselves on `app` when imported, one module per command.
# Add a line here when you add a command module.
from . import models as _models
from . import rank as _rank
from . import report as _report
from ._app import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
