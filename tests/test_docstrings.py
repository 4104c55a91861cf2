"""Shared parameter texts (``sclong_scverse._docs``) are filled into every public docstring."""

from __future__ import annotations

import inspect

import sclong_scverse as scl
from sclong_scverse._docs import PARAMETERS


def _public_docstrings():
    for owner in (
        scl.SCLONG,
        scl.SCLONGClassifier,
        scl.SCLONGDrugResponse,
        scl.SCLONGDrugCombination,
        scl.SCLONGChemPerturbation,
    ):
        for name, member in inspect.getmembers(owner):
            if not name.startswith("_") and callable(member) and member.__doc__:
                yield f"{owner.__name__}.{name}", member.__doc__
    for module in (scl.tl, scl.pp, scl.pl):
        for name in module.__all__:
            doc = getattr(module, name).__doc__
            if doc:
                yield f"{module.__name__}.{name}", doc


def test_no_placeholder_is_left_and_the_texts_are_indented_as_their_section():
    seen = 0
    for where, doc in _public_docstrings():
        for key in PARAMETERS:
            assert "{" + key + "}" not in doc, where
        seen += 1
    assert seen > 100
    doc = scl.SCLONG.get_latent_representation.__doc__
    assert "\n        precision\n            Of the forward passes:" in doc
    assert "\n    copy\n        Return a new AnnData" in scl.tl.embed.__doc__
    assert (
        "\n        dir_path\n            Folder to write (created)."
        in scl.SCLONGDrugResponse.save.__doc__
    )
