"""Gene vocabularies and gene identifiers (symbols, Ensembl ids, aliases) for scLong.

:class:`GeneVocabulary` is the model's ordered gene list plus a trailing pad token;
``vocab.align(adata)`` maps an AnnData's genes (symbols or Ensembl ids, with version suffixes,
other case, aliases) onto it and reports coverage (:class:`GeneAlignment`). The human maps
between symbols, aliases, Ensembl and NCBI ids come from tables embedded in the package
(NCBI Gene 2022-09-12 via Bioconductor org.Hs.eg.db 3.16; see ``sclong_scverse/go/data``).
"""

from .ids import (
    HumanGeneIndex,
    detect_id_type,
    human_gene_ids,
    human_gene_index,
    human_gene_table,
    is_ensembl_id,
    map_gene_ids,
    strip_version,
)
from .vocabulary import MATCH_KINDS, GeneAlignment, GeneVocabulary

__all__ = [
    "MATCH_KINDS",
    "GeneAlignment",
    "GeneVocabulary",
    "HumanGeneIndex",
    "detect_id_type",
    "human_gene_ids",
    "human_gene_index",
    "human_gene_table",
    "is_ensembl_id",
    "map_gene_ids",
    "strip_version",
]
