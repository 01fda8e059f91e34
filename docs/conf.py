"""Sphinx configuration of the anyio_proc documentation site.

Built by ``nox -s docs`` and by .ci/run, with warnings as errors:
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import pkgutil
import re
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import TYPE_CHECKING, Generic

from sphinx.ext import intersphinx
from sphinx.pycode import ModuleAnalyzer

import anyio_proc
import anyio_proc.remote
import anyio_proc.services

if TYPE_CHECKING:
    from types import ModuleType

    from docutils.nodes import Element, TextElement
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

DOCS = Path(__file__).resolve().parent
REPOSITORY = DOCS.parent

project = "anyio_proc"
author = "the anyio_proc authors"
copyright = "the anyio_proc authors, MIT License"
release = installed_version("anyio_proc")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", ".DS_Store"]

# Every reference must resolve: a name that does not is a warning, and warnings fail the build.
nitpicky = True

# -- Markdown (MyST) ------------------------------------------------------------------------

# The pages are read on GitHub too, where a heading's anchor is its slug: the same here.
myst_heading_anchors = 3

# -- The API reference (autodoc) -------------------------------------------------------------

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "member-order": "bysource",
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
# The public type aliases keep their names in signatures, linked to their entries (which
# are data: see _missing_reference).
PUBLIC_ALIASES = {"StdioArg", "ReadyCheck"}
autodoc_type_aliases = {name: name for name in PUBLIC_ALIASES}

# Classes shown without a constructor signature: the objects the library makes and hands
# out (their constructors take internal objects and are no part of the API), and an enum.
SHOWN_WITHOUT_SIGNATURE = {
    "anyio_proc.Child",
    "anyio_proc.PipelineChild",
    "anyio_proc.SpawnContext",
    "anyio_proc.PipeReceiveStream",
    "anyio_proc.PipeSendStream",
    "anyio_proc.PtyStream",
    "anyio_proc.services.Service",
    "anyio_proc.services.ServiceEvent",
    "anyio_proc.Stdio",
    "anyio_proc.remote.Host",
    "anyio_proc.remote.RemoteChild",
    "anyio_proc.remote.RemoteSpawnContext",
}

# Names that annotations show as they are written, where the module imports them only for
# the type checker: each leads where it means.
TYPE_ALIASES = {
    "TaskStatus": ("py", "class", "anyio.abc.TaskStatus"),
    "StrOrBytesPath": ("std", "term", "path-like object"),
    "_random.Random": ("py", "class", "random.Random"),
    # Python 3.11's documentation (the inventory we have) describes the pattern and match
    # objects in sections, not as classes.
    "re.Pattern": ("std", "ref", "re-objects"),
    "re.Match": ("std", "ref", "match-objects"),
}
nitpick_ignore = [
    # The builders' private base, which pipelines take (a Command), so that _pipeline.py
    # needs no import of _command.py.
    ("py:class", "anyio_proc._spec.Specified"),
    # RemoteSpawnContext's base, SpawnContext[_Running]: the type variable of its module.
    ("py:obj", "anyio_proc.remote._spawn._Running"),
    # The Literal aliases of the services' records (the namedtuple and dataclass machinery
    # hides their module from autodoc); OutputLine and ServiceEvent list their values.
    ("py:class", "StreamName"),
    ("py:class", "EventKind"),
]

# -- Links into Python's, anyio's and trio's documentation ------------------------------------

# The inventories are checked in (docs/_inventories/regenerate.sh says where each comes from):
# the build reads no network, on a developer's machine or on CI.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(DOCS / "_inventories" / "python.inv")),
    "anyio": ("https://anyio.readthedocs.io/en/stable", str(DOCS / "_inventories" / "anyio.inv")),
    "trio": ("https://trio.readthedocs.io/en/stable", str(DOCS / "_inventories" / "trio.inv")),
}

# -- HTML --------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"anyio_proc {release}"
html_static_path: list[str] = []
html_show_sourcelink = False

# -- Links between the repository's Markdown files --------------------------------------------

# README.md and CHANGELOG.md live at the repository's root, where GitHub shows them, and the
# pages under docs/ link to them there (`../README.md`). The site has them as pages: a link
# to one of these files leads to the page that shows it.
SITE_PAGES = {
    REPOSITORY / "README.md": DOCS / "index.md",
    REPOSITORY / "CHANGELOG.md": DOCS / "changelog.md",
}

# A Markdown link or image target: `](path)` or `](path#anchor)`; URLs are left alone below.
_LINK = re.compile(r"\]\((?P<path>[^()\s#]+)(?P<anchor>#[^()\s]*)?\)")


def _relink(text: str, written_in: Path, shown_in: Path) -> str:
    """Rewrite the relative links of ``text``, a file in ``written_in``, so that they point
    at the same files from a page in ``shown_in`` (an included file's links are read from
    the including page), or at the page that shows the file."""

    def relinked(match: re.Match[str]) -> str:
        path = match["path"]
        if ":" in path:  # a URL (https:, mailto:)
            return match[0]
        target = (written_in / path).resolve()
        target = SITE_PAGES.get(target, target)
        if not target.exists():
            return match[0]  # leave it to Sphinx to report
        new = Path(os.path.relpath(target, shown_in)).as_posix()
        return f"]({new}{match['anchor'] or ''})"

    return _LINK.sub(relinked, text)


def _page_dir(app: Sphinx, docname: str) -> Path:
    return Path(app.env.doc2path(docname)).resolve().parent


def _source_read(app: Sphinx, docname: str, source: list[str]) -> None:
    here = _page_dir(app, docname)
    source[0] = _relink(source[0], here, here)


def _include_read(
    app: Sphinx, relative_path: Path, parent_docname: str, content: list[str]
) -> None:
    included = (Path(app.srcdir) / relative_path).resolve()
    content[0] = _relink(content[0], included.parent, _page_dir(app, app.env.docname))


# -- What autodoc reads from the source -------------------------------------------------------

# The packages set each public object's __module__ to the package (so the reference, the
# reprs and the tracebacks name `anyio_proc.Child`, not `anyio_proc._child.Child`), and
# autodoc reads the source of the module __module__ names for what is not in the objects
# themselves: attribute doc comments (`#:`), overloads, the order of definition. So the
# package's analysis is given, for each public name, what its defining module says of it.


def _analysis_of(package: ModuleType) -> None:
    merged = ModuleAnalyzer.for_module(package.__name__)
    merged.analyze()
    folder = Path(package.__file__ or "").parent
    for module in pkgutil.iter_modules([str(folder)]):
        # The public names are defined in the private modules (`_child`, not `__main__`),
        # which are read, not imported (one may need what the docs do not install).
        if module.ispkg or not re.fullmatch(r"_[a-z]\w*", module.name):
            continue
        source = ModuleAnalyzer.for_file(
            str(folder / f"{module.name}.py"), f"{package.__name__}.{module.name}"
        )
        source.analyze()
        defined = {
            name
            for name in package.__all__
            if name in source.tags or ("", name) in source.attr_docs
        }

        def ours(qualname: str, defined: set[str] = defined) -> bool:
            return qualname.split(".")[0] in defined

        merged.tags.update({k: v for k, v in source.tags.items() if ours(k)})
        merged.tagorder.update({k: v for k, v in source.tagorder.items() if ours(k)})
        merged.overloads.update({k: v for k, v in source.overloads.items() if ours(k)})
        merged.finals.extend(k for k in source.finals if ours(k))
        for table, merged_table in (
            (source.attr_docs, merged.attr_docs),
            (source.annotations, merged.annotations),
        ):
            for (scope, attr), value in table.items():
                if ours(scope) or (scope == "" and attr in defined):
                    merged_table[scope, attr] = value


_analysis_of(anyio_proc)
_analysis_of(anyio_proc.services)
_analysis_of(anyio_proc.remote)


# -- The reference's signatures and bases ----------------------------------------------------


def _signature(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    if what == "class" and name in SHOWN_WITHOUT_SIGNATURE:
        return "", None
    return None


def _bases(app: Sphinx, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show the public bases only: an internal base is replaced by its own bases, and
    ``Generic[...]`` is left out (the docstring says what the class gives)."""

    def public(base: type) -> list[type]:
        if getattr(base, "__origin__", base) is Generic:
            return []
        if getattr(base, "__module__", "").startswith("anyio_proc._"):
            return [ancestor for parent in base.__bases__ for ancestor in public(parent)]
        return [base]

    shown = list(dict.fromkeys(ancestor for base in bases for ancestor in public(base)))
    bases[:] = [base for base in shown if base is not object] or [object]


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: TextElement
) -> Element | None:
    target = node.get("reftarget", "")
    is_class = node.get("refdomain") == "py" and node.get("reftype") == "class"
    if is_class and target.rpartition(".")[2] in PUBLIC_ALIASES:
        # Annotations name a type alias as a class; it is documented as data.
        python = env.get_domain("py")
        found = python.resolve_xref(env, node["refdoc"], app.builder, "obj", target, node, contnode)
        if found is not None:
            return found
    alias = TYPE_ALIASES.get(target)
    if alias is None:
        return None
    retry = node.deepcopy()
    retry["refdomain"], retry["reftype"], retry["reftarget"] = alias
    retry["refexplicit"] = True  # the name as written, not the title of where it leads
    return intersphinx.missing_reference(app, env, retry, contnode)


def setup(app: Sphinx) -> None:
    app.connect("source-read", _source_read)
    app.connect("include-read", _include_read)
    app.connect("autodoc-process-signature", _signature)
    app.connect("autodoc-process-bases", _bases)
    app.connect("missing-reference", _missing_reference)
