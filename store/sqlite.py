"""sqlite-utils, as every store module imports it: without its optional pandas and numpy.

sqlite-utils 4 imports pandas and numpy at import time when they are installed (the dev and verl extras
install both), only to map ``pandas.Timestamp`` and numpy's scalar types to column types, which zpd
never inserts. That is 0.35 s of each ``zpd`` process's start on a 2-core machine (0.43 s -> 0.08 s
measured): every daemon, replica server, export, snapshot and rollback pays it. Here the import sees
both as missing (sqlite-utils' own ``except ImportError`` branch); ``sys.modules`` is restored after, so
a later ``import pandas`` or ``import numpy`` anywhere in the process imports the real module. Where
either is already loaded, sqlite-utils sees it as usual. The store's modules import ``Database`` and
``Migrations`` from here, never from ``sqlite_utils`` (tests/test_store_owns_sql.py).
"""

from __future__ import annotations

import sys
from typing import Any, cast

_OPTIONAL = ("pandas", "numpy")


def _import_sqlite_utils() -> None:
    if "sqlite_utils.db" in sys.modules:
        return
    hidden = [name for name in _OPTIONAL if name not in sys.modules]
    for name in hidden:
        cast(dict[str, Any], sys.modules)[name] = None  # `import name` now raises ImportError
    try:
        import sqlite_utils.db  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]


_import_sqlite_utils()

from sqlite_utils import Database, Migrations  # noqa: E402

__all__ = ["Database", "Migrations"]
