"""Parameter texts that several docstrings share, written once (as scvi-tools' ``devices_dsp``).

A docstring line that holds only ``{name}`` (a key of :data:`PARAMETERS`) is replaced by that
text, indented as the line was, by :func:`fill_doc`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: name -> numpydoc parameter entries (unindented; descriptions indented by 4 spaces)
PARAMETERS: dict[str, str] = {
    "query_progress_precision": """\
progress_bar
    Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the call
    reads at least 10 million cell x gene values (e.g. 400 cells of the whole 27,874-gene
    vocabulary).
precision
    Of the forward passes: ``"32"`` (default: float32), ``"bf16"`` (bfloat16 autocast: on GPUs
    and CPUs with bfloat16 instructions about twice as fast, outputs within ~1e-2 of float32;
    on other CPUs emulated and slower), ``"16"`` (float16 autocast, GPUs only) or ``"auto"``
    (``"bf16"`` where the device has bfloat16 instructions, else ``"32"``). A model held in
    bfloat16 defaults to ``"auto"``; at ``"32"`` it runs in float32 with its weights widened
    block by block (half the memory, nearly float32 speed).""",
    "verb_copy_progress_precision": """\
copy
    Return a new AnnData instead of writing into ``adata`` (in memory, also for a backed
    ``adata``).
progress_bar
    Show a progress bar (cells done, cells/s, time left); ``None`` (default): when the call
    reads at least 10 million cell x gene values.
precision
    Of scLong's forward passes: ``"32"`` (default, float32), ``"bf16"`` (bfloat16 autocast,
    for GPUs and CPUs with bfloat16 instructions), ``"auto"`` or ``"16"`` (float16, GPUs
    only); see :meth:`~sclong_scverse.model.SCLONG.get_latent_representation`.""",
    "plot_show_save": """\
show
    Show the figure; ``None`` (default): scanpy's ``settings.autoshow``, unless ``save`` is
    given.
save
    Write the figure to this file (e.g. ``"figure.png"``).""",
    # the end of the Returns section of tl.embed and tl.grn (written through tl._embed._target)
    "verb_replaced": """\
Nothing else in ``adata`` changes. An existing result under ``key_added`` and
``adata.uns[key_added]`` are replaced, as scanpy does; the replacement is logged as a
warning.""",
    "save_folder": """\
dir_path
    Folder to write (created).
prefix
    Prefix of the file names (several models in one folder).
overwrite
    Replace the files of a model already saved there.""",
}


def fill_doc(obj: F) -> F:
    """Replace each docstring line that is only ``{name}`` by ``PARAMETERS[name]``, indented."""
    if not obj.__doc__:
        return obj
    lines = []
    for line in obj.__doc__.split("\n"):
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in PARAMETERS:
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(textwrap.indent(PARAMETERS[name[1:-1]], indent))
        else:
            lines.append(line)
    obj.__doc__ = "\n".join(lines)
    return obj
