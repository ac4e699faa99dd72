"""Markdown the book's pages are written in: table cells and code spans that keep whatever a
user's value holds as text (no markup reaches a page live), tables, JSON blocks, and paths shown
relative to the book (never an absolute path of the machine that built it)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .plan import relative_to


class Markdown(str):
    """Text the page writes as Markdown (a role, a link), which a table cell takes as it is."""


def md_cell(value: Any) -> str:
    """A value as the text of one markdown table cell: ``|`` and ``*`` escaped (so that
    ``a*log(b*P + 1)`` is not read as emphasis), and ``&``, ``<`` and ``>`` as HTML entities,
    so that no markup in a value (a user's ``--set``) reaches the page live; :class:`Markdown`
    as it is (on one line, ``|`` escaped)."""
    if isinstance(value, Markdown):
        return " ".join(value.split()).replace("|", "\\|")
    text = "null" if value is None else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)
    text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("*", "\\*")


def md_code(value: Any) -> str:
    """``value`` as inline code whatever it holds: fenced by one more backtick than its
    longest run of backticks (so none closes the span early), on one line."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table from a list of equal-keyed dicts."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(md_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def display_path(path: str | Path, root: str | Path | None = None) -> str:
    """``path`` relative to ``root`` (the working directory by default), with ``..`` where it
    lies outside: a page never shows an absolute path of the machine that built it."""
    return relative_to(path, Path(root or Path.cwd()).resolve())


def json_block(obj: Any) -> str:
    return "```json\n" + json.dumps(obj, indent=2, default=str) + "\n```\n"


def claim_anchor(claim_id) -> str:
    """The HTML id of a claim's block in its run's summary chapter: ``claim-`` and the claim's
    id in lower case with every run of other characters as one ``-`` (``5 (finetune)`` gives
    ``claim-5-finetune``); the front page's verdicts link to it."""
    return "claim-" + re.sub(r"[^a-z0-9]+", "-", str(claim_id).lower()).strip("-")
