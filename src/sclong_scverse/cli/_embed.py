"""``sclong embed``: cell embeddings of a saved model -> ``obsm['X_sclong']``."""

from __future__ import annotations

import argparse
import ast
from functools import cache
from pathlib import Path

from ._common import (
    _add_query_options,
    _load_for_query,
    _query_paths,
    _say,
    _write_h5ad,
)

NAME = "embed"
HELP = "cell embeddings -> obsm['X_sclong']"
DESCRIPTION = "Embed cells with a saved model; writes the input with obsm[KEY] added."


# where the poolings are defined; read as text, since importing it imports torch and scvi-tools
_MODULE_SOURCE = Path(__file__).resolve().parents[1] / "module" / "_module.py"


@cache
def _poolings() -> tuple[tuple[str, ...], str]:
    """``POOLINGS`` and ``DEFAULT_POOLING`` of :mod:`sclong_scverse.module._module`.

    Read from the module's source (literal assignments), so that ``sclong embed --help`` needs
    no torch; imported when the source cannot be read that way.
    """
    names = ("POOLINGS", "DEFAULT_POOLING")
    found: dict[str, object] = {}
    try:
        for node in ast.parse(_MODULE_SOURCE.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id in names:
                found[target.id] = ast.literal_eval(value)
    except (OSError, SyntaxError, ValueError, TypeError):
        found = {}
    if len(found) < len(names):
        from ..module._module import DEFAULT_POOLING, POOLINGS

        return tuple(POOLINGS), DEFAULT_POOLING
    return tuple(found["POOLINGS"]), str(found["DEFAULT_POOLING"])


def run(args: argparse.Namespace) -> None:
    """Run ``sclong embed``."""
    source, model_dir, out = _query_paths(args)
    from .. import tl

    adata, model, restore = _load_for_query(args, source, model_dir)
    tl.embed(
        adata,
        model,
        pooling=args.pooling,
        batch_size=args.batch_size,
        key_added=args.key,
        progress_bar=args.progress,
    )
    restore()
    _say(f"obsm[{args.key!r}]: {adata.obsm[args.key].shape} ({args.pooling} pooling)")
    _write_h5ad(adata, out)


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong embed``."""
    _add_query_options(parser)
    choices, default = _poolings()
    parser.add_argument("--pooling", default=default, choices=choices, help="over genes")
    parser.add_argument("--key", default="X_sclong", help="obsm key")
