"""Where punl's own files are: the configurations, the notebook templates and the book's
skeleton (``_config.yml``, the local Sphinx extension, the stylesheet and the prose chapters).

In a checkout they are the repository's folders. A wheel carries copies under
``<prefix>/share/punl`` (``pyproject.toml``'s data-files), so that ``punl run digits-quick`` and,
after ``punl init``, ``punl book`` work from any folder.
"""
from __future__ import annotations

import shutil
import site
import sysconfig
from pathlib import Path

#: The repository holding this package, where punl runs from a checkout.
CHECKOUT = Path(__file__).resolve().parents[2]
#: What a book folder needs, relative to its root; ``punl init`` copies these.
BOOK_SKELETON = ("_config.yml", "_ext", "_static", "book/intro.md", "book/methods.md",
                 "book/reproduce.md")


def installed_roots() -> list[Path]:
    """Where an installed wheel puts its data-files: the environment's prefix, then the
    user's (``pip install --user``)."""
    return [Path(sysconfig.get_path("data")) / "share" / "punl",
            Path(site.getuserbase()) / "share" / "punl"]


def resource(name: str) -> Path:
    """``configs``, ``notebooks`` or a path of :data:`BOOK_SKELETON`: the checkout's, else an
    installed copy; FileNotFoundError naming where it looked."""
    checkout = [CHECKOUT] if (CHECKOUT / "pyproject.toml").is_file() else []
    places = [*checkout, *installed_roots()]
    for base in places:
        if (base / name).exists():
            return base / name
    raise FileNotFoundError(f"punl's {name} is in none of {', '.join(map(str, places))}; "
                            "reinstall punl")


def init_book(folder: str | Path) -> list[Path]:
    """Lay out a book folder a user can edit: a copy of :data:`BOOK_SKELETON` in ``folder``
    (created if needed). Refuses, before copying anything, when one of them is there already;
    returns what it wrote."""
    folder = Path(folder)
    present = [name for name in BOOK_SKELETON if (folder / name).exists()]
    if present:
        raise FileExistsError(f"{folder} already holds {', '.join(present)}; nothing copied")
    sources = {name: resource(name) for name in BOOK_SKELETON}    # all found, or nothing copied
    written = []
    for name, source in sources.items():
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
        written.append(target)
    return written
