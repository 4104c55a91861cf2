"""Gene Ontology annotations and scLong's GO gene-gene graph.

Readers turn annotations in the usual formats (GAF, NCBI gene2go, GMT, the official scLong
``.pkl``, a DataFrame) into ``{gene: set of GO ids}``; :func:`default_human_annotations` gives the
human annotations embedded in the package (NCBI gene2go 2022-09-12, GO 2022-07-01; see
``data/PROVENANCE.md`` and ``data/LICENSE.md``). :class:`GeneGraph` builds scLong's graph from them:
Jaccard index of GO term sets, pairs above 0.1, the 21 strongest incoming edges per gene.
"""

from ._data import EMBEDDED_TABLES, embedded_provenance, embedded_table
from .graph import GeneGraph
from .readers import (
    ONTOLOGIES,
    Annotations,
    annotations_from_dataframe,
    default_human_annotations,
    go_term_ontologies,
    propagate_to_ancestors,
    read_annotations,
    read_gaf,
    read_gene2go,
    read_gene2go_pickle,
    read_gmt,
    read_go_parents,
)

__all__ = [
    "EMBEDDED_TABLES",
    "ONTOLOGIES",
    "Annotations",
    "GeneGraph",
    "annotations_from_dataframe",
    "default_human_annotations",
    "embedded_provenance",
    "embedded_table",
    "go_term_ontologies",
    "propagate_to_ancestors",
    "read_annotations",
    "read_gaf",
    "read_gene2go",
    "read_gene2go_pickle",
    "read_gmt",
    "read_go_parents",
]
