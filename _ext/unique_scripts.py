"""A Sphinx extension that writes each inline script of a page once.

Sphinx 7 adds an inline script registered after the builder starts (sphinx-thebe's
``const THEBE_JS_URL = ...``, sphinx-togglebutton's selector) to every page twice, and the second
``const`` declaration is a script error in the browser. This drops the repeats.
"""


def _key(script) -> tuple:
    """What makes two script entries the same: file (``None`` and ``''`` alike) and attributes."""
    return (script.filename or "", tuple(sorted(script.attributes.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of each identical entry of the page's ``script_files``."""
    scripts, seen, unique = context.get("script_files") or [], set(), []
    for script in scripts:
        if _key(script) not in seen:
            seen.add(_key(script))
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
