"""Sphinx configuration of bnfast's documentation.

Build with ``bash tools/build_docs.sh`` (warnings are errors).  autodoc
imports the *installed* bnfast, Cython extension included: install the
package (``pip install ".[docs]"``) before building.  No extension here
fetches anything over the network (no intersphinx inventories).
"""

import bnfast

project = "bnfast"
author = "The bnfast developers"
copyright = "the bnfast developers"
release = bnfast.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = []

# autodoc: members in source order.  Signatures without type annotations:
# the docstrings' numpydoc Parameters sections state the types in words,
# while the annotations (numpy.typing aliases, @overload variants) would
# expand into unreadable unions and, with -n, into cross-references that
# cannot resolve without intersphinx inventories; "none" also shows one
# signature per overloaded function instead of every variant
autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"undoc-members": False}

# numpydoc: the API page lists class members itself (autoclass
# :members:), so numpydoc's own member tables (which would duplicate them
# and point at undocumented attributes) stay off; no cross-referencing of
# parameter types (that would need intersphinx inventories)
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# MyST: the guide pages are Markdown; headings get anchors for links
# between pages
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "alabaster"
html_title = f"bnfast {release}"
html_static_path = []


# Every public name must be on the API page: a name in the __all__ of
# bnfast, bnfast.functional, bnfast.reference or bnfast.distributed
# without an auto* directive in api.rst is a warning, hence an error
# under -W.
def _check_api_page(app):
    import os
    import re

    from sphinx.util import logging

    import bnfast.distributed
    import bnfast.functional
    import bnfast.reference

    with open(os.path.join(app.srcdir, "api.rst"), encoding="utf-8") as f:
        text = f.read()
    documented = set()
    current = None
    for line in text.splitlines():
        m = re.match(r"\.\. (?:py:)?module:: (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"\.\. auto(?:function|class|data):: (\S+)", line)
        if m:
            name = m.group(1)
            documented.add(name if "." in name else f"{current}.{name}")
    # the functional names are also the package's: either spelling counts
    exported = {
        "bnfast": bnfast,
        "bnfast.functional": bnfast.functional,
        "bnfast.reference": bnfast.reference,
        "bnfast.distributed": bnfast.distributed,
    }
    logger = logging.getLogger(__name__)
    for modname, mod in exported.items():
        for name in mod.__all__:
            spellings = {f"{modname}.{name}"}
            if modname == "bnfast.functional":
                spellings.add(f"bnfast.{name}")
            if not spellings & documented:
                logger.warning(
                    "api.rst does not document %s.%s (in its __all__)",
                    modname,
                    name,
                    location="api",
                )


def setup(app):
    app.connect("builder-inited", _check_api_page)
