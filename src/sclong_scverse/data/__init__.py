"""Data for pretraining at scale: a corpus of many AnnData stores streamed from disk.

:class:`ScLongCorpus` lists ``.h5ad`` files and zarr stores (different genes and identifier
types allowed), aligns each to the model's genes on the fly and yields shuffled, normalised
mini-batches with their masked-expression masks; :class:`CorpusDataModule` serves it to
Lightning (one process or many, with exact resume). Used by
:meth:`sclong_scverse.model.SCLONG.pretrain` and ``sclong pretrain``. :class:`ExampleDataModule`
serves the downstream heads' tables of examples (drug x cell-line pairs, combinations,
signatures, perturbed cells) to their Lightning training.
"""

from ._corpus import CorpusBatches, CorpusStore, ScLongCorpus, expand_corpus_paths
from ._datamodule import CorpusDataModule
from ._examples import ExampleDataModule

__all__ = [
    "CorpusBatches",
    "CorpusDataModule",
    "CorpusStore",
    "ExampleDataModule",
    "ScLongCorpus",
    "expand_corpus_paths",
]
