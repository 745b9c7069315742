"""Names of Spark SQL tables that dfnet writes (prediction and metric tables).

:func:`check_table_name` validates a user's table name before any work starts,
so a long training run does not end in a parse error at ``saveAsTable``.
"""

from __future__ import annotations

import re

from .errors import DataValidationError

_UNQUOTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KINDS = {1: "table", 2: "database.table", 3: "catalog.database.table"}


def check_table_name(name: str) -> tuple[str, ...]:
    """Check a table name as Spark SQL reads it; return its parts, unquoted.

    Accepted: ``name``, ``db.name`` or ``catalog.db.name``, each part either
    plain (a letter or ``_``, then letters, digits and ``_``) or backquoted
    (`` `my table` ``; any printable characters, a backquote written twice).
    Spark's parser reads all of these as the returned parts.

    Refused with :class:`~dfnet.errors.DataValidationError` naming the name and
    the rule: a non-string or empty name, more than three parts, an empty part
    (``a..b``), spaces, semicolons, quotes, dashes or other characters in a
    plain part, a plain part that starts with a digit (Spark reads ``1abc`` as
    a name but ``1e5`` as a number; backquote it: `` `1abc` ``), whitespace
    around the name or a dot, an unclosed or empty backquoted part, control
    characters anywhere.

    The catalog may be stricter still: Spark's built-in session catalog
    creates only tables and databases whose names are letters, digits and
    ``_``.

    >>> check_table_name("analytics.`mnist predictions`")
    ('analytics', 'mnist predictions')
    """
    if not isinstance(name, str):
        raise DataValidationError(f"table name {name!r} must be a string, got {type(name).__name__}")
    if not name:
        raise DataValidationError("table name is empty; expected table, database.table or catalog.database.table")
    if _CONTROL.search(name):
        raise DataValidationError(f"table name {name!r} contains a control character (newline, tab, ...)")
    parts, i = [], 0
    while True:
        if name.startswith("`", i):
            part, i = _backquoted(name, i)
        else:
            end = name.find(".", i)
            end = len(name) if end < 0 else end
            part = name[i:end]
            _check_plain(name, part)
            i = end
        parts.append(part)
        if i == len(name):
            break
        if name[i] != ".":
            raise DataValidationError(f"table name {name!r}: expected '.' or the end after the backquoted part "
                                      f"`{parts[-1]}`, found {name[i:]!r}")
        i += 1
        if i == len(name):
            raise DataValidationError(f"table name {name!r} ends with '.': a part is missing")
    if len(parts) > 3:
        raise DataValidationError(f"table name {name!r} has {len(parts)} parts; expected at most 3: "
                                  f"table, database.table or catalog.database.table")
    return tuple(parts)


def _backquoted(name: str, start: int) -> tuple[str, int]:
    """The part backquoted at ``name[start]``, and the index just after its closing backquote."""
    chars, i = [], start + 1
    while i < len(name):
        if name[i] == "`":
            if name.startswith("``", i):
                chars.append("`")
                i += 2
                continue
            if not chars:
                raise DataValidationError(f"table name {name!r} has an empty backquoted part ``")
            return "".join(chars), i + 1
        chars.append(name[i])
        i += 1
    raise DataValidationError(f"table name {name!r}: the backquote at position {start} is never closed")


def _check_plain(name: str, part: str) -> None:
    if not part:
        raise DataValidationError(f"table name {name!r} has an empty part ('..' or a leading '.')")
    if _UNQUOTED.fullmatch(part):
        return
    if part[0].isdigit() and re.fullmatch(r"[A-Za-z0-9_]+", part):
        raise DataValidationError(f"table name {name!r}: part {part!r} starts with a digit; a name starts with a "
                                  f"letter or _ (or backquote it: `{part}`)")
    bad = sorted({c for c in part if not (c.isascii() and (c.isalnum() or c == "_"))})
    shown = ", ".join("space" if c == " " else repr(c) for c in bad)
    raise DataValidationError(f"table name {name!r}: part {part!r} may hold only letters, digits and _ (found "
                              f"{shown}); backquote a part that needs other characters: `{part}`")
