"""Sphinx configuration of the sclong-scverse documentation.

Build: ``make docs`` (offline). Cross-links to other projects' documentation (intersphinx) need
the network; they are enabled only with ``SCLONG_DOCS_INTERSPHINX=1`` and on Read the Docs.
Tutorial notebooks are rendered with their stored outputs: the test suite executes them, the
documentation build never does.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # a source checkout works without installing

import sclong_scverse  # noqa: E402

# -- project -------------------------------------------------------------------------------
project = "sclong-scverse"
author = "sclong-scverse developers"
copyright = f"{date.today().year}, {author}"
release = sclong_scverse.__version__
version = ".".join(release.split(".")[:2])

# -- extensions ----------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "sphinx_copybutton",
]

templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "generated/*.tmp",
    "**.ipynb_checkpoints",
    # only the numbered notebooks of tutorials/ are pages (see tutorials.md)
    "tutorials/*.md",
    "tutorials/**/*.md",
    "tutorials/**/*.rst",
]

# -- autodoc / autosummary / napoleon ------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
python_maximum_signature_line_length = 88  # one parameter a line in long signatures
autodoc_default_options = {"members": True, "show-inheritance": True}
autoclass_content = "class"


# -- members from the package's own mixins -------------------------------------------------
# A class page documents the class's own members, not those it inherits from scvi-tools or
# torch. SCLONG is composed from this package's mixins (model/_queries.py, _hub.py, ...), as
# scvi-tools composes its models: the template (_templates/autosummary/class.rst) documents
# what a class takes from such undocumented package bases as well, after its own members.
def _mixin_members() -> dict[str, dict]:
    """``{class full name: {"other_bases": ..., "methods": [...]}}`` of classes with mixins.

    ``other_bases``: the ``:inherited-members:`` argument (the bases whose members are not
    documented: other packages' and documented ones); ``methods``: the mixins' public methods.
    """
    import importlib
    import inspect

    found = {}
    packages = {"": sclong_scverse}
    for package in ("chem", "data", "datasets", "genes", "go", "io", "model", "module", "nn"):
        packages[f"{package}."] = importlib.import_module(f"sclong_scverse.{package}")
    public = {
        id(getattr(package, name)) for package in packages.values() for name in package.__all__
    }
    for prefix, package in packages.items():
        for name in package.__all__:
            cls = getattr(package, name)
            if not inspect.isclass(cls):
                continue
            mixins, others = [], []
            for base in cls.__mro__[1:]:
                if id(base) in public or not base.__module__.startswith("sclong_scverse."):
                    others.append(base.__name__)
                else:
                    mixins.append(base)
            methods = [
                member
                for base in mixins
                for member, value in vars(base).items()
                if not member.startswith("_")
                and next(b for b in cls.__mro__ if member in vars(b)) is base
                and (inspect.isroutine(value) or isinstance(value, classmethod | staticmethod))
            ]
            if mixins:
                found[f"sclong_scverse.{prefix}{name}"] = {
                    "other_bases": ", ".join(others),
                    "methods": methods,
                }
    return found


autosummary_context = {"mixin_members": _mixin_members()}

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = False
# The package's Returns sections are prose (what is returned and which AnnData fields are
# written, scanpy style): render them as written instead of parsing them as "type" fields.
napoleon_custom_sections = [("Returns", "prose_section"), ("Yields", "prose_section")]

# -- cross-links to other projects (network only on request) -------------------------------
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
_online = os.environ.get("SCLONG_DOCS_INTERSPHINX", "") not in ("", "0")
if _online or os.environ.get("READTHEDOCS") == "True":  # Read the Docs sets READTHEDOCS=True
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable/", None),
        "scipy": ("https://docs.scipy.org/doc/scipy/", None),
        "pandas": ("https://pandas.pydata.org/docs/", None),
        "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
        "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
        "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
        "torch": ("https://docs.pytorch.org/docs/stable/", None),
        "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    }

# -- MyST / notebooks ----------------------------------------------------------------------
nb_execution_mode = "off"  # notebooks are executed by the test suite, not here
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------------
html_theme = "sphinx_book_theme"
html_title = "sclong-scverse"
html_theme_options = {
    "repository_url": "https://github.com/sclong-scverse/sclong-scverse",
    "use_repository_button": True,
    "path_to_docs": "docs",
    "show_toc_level": 2,
}
html_static_path = ["_static"]
html_css_files = ["custom.css"]
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


# -- module-level constants ----------------------------------------------------------------
# Constants such as ``scl.genes.MATCH_KINDS`` are documented by a ``#:`` comment where they are
# defined (a submodule). Sphinx looks for the comment in the module they are documented under
# (the subpackage) and otherwise falls back to the docstring of their type (``dict``, ``tuple``).
# Use the comment from the defining module instead.
def _constant_comment(obj: object, name: str) -> list[str] | None:
    import importlib
    import pkgutil

    from sphinx.pycode import ModuleAnalyzer

    for info in pkgutil.walk_packages(sclong_scverse.__path__, "sclong_scverse."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # pragma: no cover - optional imports
            continue
        if getattr(module, name, None) is not obj:
            continue
        analyzer = ModuleAnalyzer.for_module(info.name)
        analyzer.analyze()
        comment = analyzer.attr_docs.get(("", name))
        if comment:
            return list(comment)
    return None


def _document_constants(app, what, name, obj, options, lines):
    if what != "data" or not name.startswith("sclong_scverse."):
        return
    comment = _constant_comment(obj, name.rsplit(".", 1)[-1])
    lines[:] = comment if comment is not None else []


# -- every public name is on the API page --------------------------------------------------
def _check_api_page(app):
    import importlib
    import re

    from sphinx.util import logging

    logger = logging.getLogger("sclong_scverse.docs")
    text = (HERE / "api.md").read_text()
    listed = set(re.findall(r"^\s+~?([A-Za-z_][\w.]*)\s*$", text, flags=re.MULTILINE))
    expected = {name for name in sclong_scverse.__all__ if name[0].isupper()}
    packages = ("chem", "datasets", "errors", "genes", "go", "io", "module", "nn", "pl", "pp", "tl")
    for package in packages:
        module = importlib.import_module(f"sclong_scverse.{package}")
        expected.update(f"{package}.{name}" for name in module.__all__)
    # exported twice, documented once (see api.md)
    aliases = {"nn.ScLongConfig": "ScLongConfig"}
    aliases.update({name: f"errors.{name.split('.')[1]}" for name in _ERROR_ALIASES})
    missing = sorted(n for n in expected if aliases.get(n, n) not in listed)
    if missing:
        logger.warning(
            "api.md does not list these public names (add them to an autosummary table): %s",
            ", ".join(missing),
        )


# -- tutorials -----------------------------------------------------------------------------
# tutorials.md lists tutorials/[0-9]*.ipynb with a glob toctree (docs/tutorials is a symlink to
# the repository's tutorials/). In a checkout without notebooks the glob would match nothing,
# which Sphinx reports as a warning that suppress_warnings cannot silence: say so on the page.
def _tutorials_without_notebooks(app, docname, source):
    if docname != "tutorials" or any((HERE / "tutorials").glob("[0-9]*.ipynb")):
        return
    import re

    source[0] = re.sub(
        r"```\{toctree\}.*?```",
        "*The notebooks are not in this checkout (folder `tutorials/`).*",
        source[0],
        flags=re.DOTALL,
    )


# -- names exported twice ------------------------------------------------------------------
# SCLONG and ScLongConfig are documented once, under the names users type (scl.SCLONG,
# scl.ScLongConfig); docstrings may refer to them by their subpackage names.
_ALIASES = {
    "sclong_scverse.model.SCLONG": "sclong_scverse.SCLONG",
    "sclong_scverse.nn.ScLongConfig": "sclong_scverse.ScLongConfig",
}
# the package's errors are documented once, in sclong_scverse.errors; subpackages re-export them
_ERROR_ALIASES = (
    "pp.ScLongInputError",
    "io.UnsafeFileError",
    "io.OfficialFormatError",
    "model.ModelIntegrityError",
    "datasets.DatasetDownloadError",
)
_ALIASES.update(
    {
        f"sclong_scverse.{name}": f"sclong_scverse.errors.{name.split('.')[1]}"
        for name in _ERROR_ALIASES
    }
)


def _resolve_aliases(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    for alias, documented in _ALIASES.items():
        if target == alias or target.startswith(alias + "."):
            node["reftarget"] = documented + target[len(alias) :]
            domain = env.domains["py"]
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], node["reftarget"], node, contnode
            )
    return None


def setup(app):
    """Connect the alias resolver and the tutorial-source filter to Sphinx."""
    app.connect("missing-reference", _resolve_aliases)
    app.connect("source-read", _tutorials_without_notebooks)
    app.connect("autodoc-process-docstring", _document_constants)
    app.connect("builder-inited", _check_api_page)
