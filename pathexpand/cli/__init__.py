"""``pathexpand`` command line: derive, rank, attribute, diagram, report, models, demo.

Each command lives in its own module (``cli/derive.py``, ...) and registers itself on
``app``; heavy imports happen inside the command. Any ``PathexpandError`` becomes one
line on stderr and exit code 2, never a traceback; so does a command-line usage error.
"""

# ruff: noqa: I001  (command modules are imported in the order the help lists them)
from __future__ import annotations

from ._app import app, main

# Command modules register themselves on `app` when imported, one module per command, in the
# order `pathexpand --help` lists them. Add a line here when you add a command module.
from . import models as _models  # noqa: F401,E402
from . import derive as _derive  # noqa: F401,E402
from . import rank as _rank  # noqa: F401,E402
from . import attribute as _attribute  # noqa: F401,E402
from . import diagram as _diagram  # noqa: F401,E402
from . import report as _report  # noqa: F401,E402
from . import demo as _demo  # noqa: F401,E402

__all__ = ["app", "main"]
