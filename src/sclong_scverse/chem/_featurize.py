"""Drug graph features from SMILES with RDKit, as DeepCDR and DeepCE computed them.

RDKit is an optional dependency (``pip install "sclong-scverse[chem]"``); it is imported inside
the functions, so that the rest of the package works without it.

- DeepCDR (Liu et al., Bioinformatics 2020) featurised each drug with deepchem's
  ``ConvMolFeaturizer`` (deepchem 2.x): 75 features per atom (element, degree, implicit valence,
  formal charge, radical electrons, hybridisation, aromaticity, total hydrogens), atoms re-ordered
  by degree (a stable sort, as deepchem's ``ConvMol`` does), an adjacency list, and, for the
  network, the features zero-padded to 100 atoms and the adjacency ``D^-1/2 (A + I) D^-1/2`` of
  the molecule (the padding block: the identity). :func:`deepcdr_graph` reproduces the features
  DeepCDR shipped (``drug_graph_feat.zip``) from RDKit alone, atom order included.
- DeepCE (Pham et al., Nat Mach Intell 2021) used the neural-fingerprint features of Duvenaud et
  al. (HIPS/neural-fingerprint ``features.py``): 62 per atom (element, degree, total hydrogens,
  implicit valence, aromaticity) and 6 per bond (single, double, triple, aromatic, conjugated, in
  a ring), atoms in RDKit's order. :func:`deepce_graph` computes them.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import import_optional
from ..validation import ScLongInputError

#: Elements one-hot encoded by deepchem's and the neural fingerprint's atom features (last: other).
ELEMENTS = (
    "C", "N", "O", "S", "F", "Si", "P", "Cl", "Br", "Mg", "Na", "Ca", "Fe", "As", "Al", "I", "B",
    "V", "K", "Tl", "Yb", "Sb", "Sn", "Ag", "Pd", "Co", "Se", "Ti", "Zn", "H", "Li", "Ge", "Cu",
    "Au", "Ni", "Cd", "In", "Mn", "Zr", "Cr", "Pt", "Hg", "Pb", "Unknown",
)  # fmt: skip
#: Atoms of the padded DeepCDR graphs.
DEEPCDR_MAX_ATOMS = 100
#: Feature sizes.
DEEPCDR_ATOM_DIM = 75
DEEPCE_ATOM_DIM = 62
DEEPCE_BOND_DIM = 6


class DrugFeatureError(ScLongInputError):
    """A drug's SMILES cannot be featurised (unparsable, too many atoms, an atom out of range)."""


def _rdkit():
    import_optional(
        "rdkit.Chem",
        "rdkit.RDLogger",
        message="Drug features need RDKit, an optional dependency of sclong-scverse: "
        'pip install "sclong-scverse[chem]" (or pip install rdkit).',
    )
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # parse errors are raised with the drug's name instead
    return Chem


def _molecule(smiles: str, name: str | None):
    Chem = _rdkit()
    label = f"drug {name!r}" if name is not None else "a drug"
    if not isinstance(smiles, str) or not smiles.strip():
        raise DrugFeatureError(f"The SMILES of {label} is empty or missing ({smiles!r}).")
    molecule = Chem.MolFromSmiles(smiles)
    if molecule is None or molecule.GetNumAtoms() == 0:
        raise DrugFeatureError(
            f"RDKit cannot parse the SMILES of {label}: {smiles!r}. Check it (e.g. on PubChem) "
            "or drop the drug."
        )
    return molecule


def _one_hot(value: Any, allowed: tuple | list, unknown_last: bool, what: str, name) -> list[float]:
    if value not in allowed:
        if not unknown_last:
            raise DrugFeatureError(
                f"Drug {name!r}: an atom's {what} is {value}, outside the featuriser's range "
                f"{list(allowed)}."
            )
        value = allowed[-1]
    return [float(value == a) for a in allowed]


def _implicit_valence(atom) -> int:
    from rdkit import Chem

    kind = getattr(Chem, "ValenceType", None)
    if kind is not None:  # RDKit >= 2024.09 deprecates GetImplicitValence()
        return int(atom.GetValence(kind.IMPLICIT))
    return int(atom.GetImplicitValence())  # pragma: no cover - older RDKit


def _deepcdr_atom(atom, name) -> list[float]:
    from rdkit import Chem

    hybrid = Chem.rdchem.HybridizationType
    hybridizations = (hybrid.SP, hybrid.SP2, hybrid.SP3, hybrid.SP3D, hybrid.SP3D2)
    return (
        _one_hot(atom.GetSymbol(), ELEMENTS, True, "element", name)
        + _one_hot(atom.GetDegree(), tuple(range(11)), False, "degree", name)
        + _one_hot(_implicit_valence(atom), tuple(range(7)), True, "implicit valence", name)
        + [float(atom.GetFormalCharge()), float(atom.GetNumRadicalElectrons())]
        + _one_hot(atom.GetHybridization(), hybridizations, True, "hybridisation", name)
        + [float(atom.GetIsAromatic())]
        + _one_hot(atom.GetTotalNumHs(), tuple(range(5)), True, "hydrogen count", name)
    )


@dataclass(frozen=True)
class DeepCDRGraph:
    """DeepCDR's graph of one drug (atoms sorted by degree, as deepchem's ``ConvMol``).

    Parameters
    ----------
    atom_features
        ``(n_atoms, 75)`` float.
    adjacency_list
        Neighbours of each atom (positions in the sorted order).
    degrees
        ``(n_atoms,)`` number of neighbours.
    """

    atom_features: np.ndarray
    adjacency_list: list[list[int]]
    degrees: np.ndarray

    @property
    def n_atoms(self) -> int:
        """Number of heavy atoms."""
        return int(self.atom_features.shape[0])

    def adjacency(self) -> np.ndarray:
        """``(n_atoms, n_atoms)`` 0/1 adjacency matrix (no self loops)."""
        out = np.zeros((self.n_atoms, self.n_atoms), dtype=np.float32)
        for i, neighbours in enumerate(self.adjacency_list):
            out[i, neighbours] = 1.0
        return out

    def padded(
        self, max_atoms: int = DEEPCDR_MAX_ATOMS, normalize: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features and adjacency padded to ``max_atoms`` (DeepCDR's ``CalculateGraphFeat``).

        Parameters
        ----------
        max_atoms
            Rows of the padded matrices (DeepCDR: 100).
        normalize
            Return ``D^-1/2 (A + I) D^-1/2`` of the molecule block and the identity on the padding
            block, as DeepCDR feeds its network; ``False``: the 0/1 adjacency, zero-padded.

        Returns
        -------
        ``(max_atoms, 75)`` features (zero rows after the molecule's atoms) and
        ``(max_atoms, max_atoms)`` adjacency, both float32.
        """
        if self.n_atoms > max_atoms:
            raise DrugFeatureError(
                f"A drug has {self.n_atoms} heavy atoms, more than max_atoms={max_atoms}."
            )
        features = np.zeros((max_atoms, self.atom_features.shape[1]), dtype=np.float32)
        features[: self.n_atoms] = self.atom_features
        adjacency = np.zeros((max_atoms, max_atoms), dtype=np.float32)
        block = self.adjacency()
        if normalize:
            block = block + np.eye(self.n_atoms, dtype=np.float32)
            scale = block.sum(axis=1) ** -0.5
            block = block * scale[:, None] * scale[None, :]
            adjacency[self.n_atoms :, self.n_atoms :] = np.eye(max_atoms - self.n_atoms)
        adjacency[: self.n_atoms, : self.n_atoms] = block
        return features, adjacency


def deepcdr_graph(
    smiles: str, name: str | None = None, max_atoms: int | None = DEEPCDR_MAX_ATOMS
) -> DeepCDRGraph:
    """DeepCDR's 75-d atom features and adjacency of one drug, from its SMILES.

    Parameters
    ----------
    smiles
        The drug's SMILES (DeepCDR used PubChem's isomeric SMILES).
    name
        The drug's name or id, for error messages.
    max_atoms
        Refuse molecules with more heavy atoms (DeepCDR: 100); ``None``: no limit.

    Returns
    -------
    The graph; :meth:`DeepCDRGraph.padded` gives the network's input.

    Raises
    ------
    DrugFeatureError
        The SMILES does not parse, or the molecule has more than ``max_atoms`` atoms, or an atom
        with more than 10 neighbours.
    ImportError
        RDKit is not installed (the ``[chem]`` extra).
    """
    molecule = _molecule(smiles, name)
    n_atoms = molecule.GetNumAtoms()
    if max_atoms is not None and n_atoms > max_atoms:
        raise DrugFeatureError(
            f"Drug {name!r} has {n_atoms} heavy atoms, more than max_atoms={max_atoms} (DeepCDR's "
            "graphs hold 100); raise max_atoms for the whole data set or drop the drug."
        )
    features = np.array([_deepcdr_atom(a, name) for a in molecule.GetAtoms()], dtype=np.float64)
    neighbours: list[list[int]] = [[] for _ in range(n_atoms)]
    for bond in molecule.GetBonds():
        begin, end = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        neighbours[begin].append(end)
        neighbours[end].append(begin)
    degrees = np.array([len(n) for n in neighbours], dtype=np.int32)
    # deepchem's ConvMol._deg_sort: a stable sort of the atoms by degree
    order = np.lexsort((np.arange(n_atoms), degrees))
    new_position = np.empty(n_atoms, dtype=np.int64)
    new_position[order] = np.arange(n_atoms)
    adjacency_list = [[int(new_position[j]) for j in neighbours[i]] for i in order]
    return DeepCDRGraph(features[order], adjacency_list, degrees[order])


def deepce_graph(smiles: str, name: str | None = None) -> dict[str, np.ndarray]:
    """DeepCE's (neural fingerprint) 62-d atom and 6-d bond features of one drug.

    Parameters
    ----------
    smiles
        The drug's SMILES.
    name
        The drug's name or id, for error messages.

    Returns
    -------
    ``{"atom_features": (n_atoms, 62), "bond_features": (n_bonds, 6), "edge_index":
    (2, n_bonds)}`` (begin, end atom of each bond; RDKit's atom order), float32 / int64.

    Raises
    ------
    DrugFeatureError
        The SMILES does not parse, or an atom's degree (> 5), hydrogen count (> 4) or implicit
        valence (> 5) is outside the neural fingerprint's one-hot ranges (it raised there too).
    ImportError
        RDKit is not installed (the ``[chem]`` extra).
    """
    from rdkit import Chem

    molecule = _molecule(smiles, name)
    atoms = []
    for atom in molecule.GetAtoms():
        atoms.append(
            _one_hot(atom.GetSymbol(), ELEMENTS, True, "element", name)
            + _one_hot(atom.GetDegree(), tuple(range(6)), False, "degree", name)
            + _one_hot(atom.GetTotalNumHs(), tuple(range(5)), False, "hydrogen count", name)
            + _one_hot(_implicit_valence(atom), tuple(range(6)), False, "implicit valence", name)
            + [float(atom.GetIsAromatic())]
        )
    bond_type = Chem.rdchem.BondType
    bonds, index = [], []
    for bond in molecule.GetBonds():
        kind = bond.GetBondType()
        bonds.append(
            [
                float(kind == bond_type.SINGLE),
                float(kind == bond_type.DOUBLE),
                float(kind == bond_type.TRIPLE),
                float(kind == bond_type.AROMATIC),
                float(bond.GetIsConjugated()),
                float(bond.IsInRing()),
            ]
        )
        index.append([bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()])
    return {
        "atom_features": np.asarray(atoms, dtype=np.float32).reshape(-1, DEEPCE_ATOM_DIM),
        "bond_features": np.asarray(bonds, dtype=np.float32).reshape(-1, DEEPCE_BOND_DIM),
        "edge_index": np.asarray(index, dtype=np.int64).reshape(-1, 2).T.copy(),
    }


def featurize_drugs(
    smiles: Mapping[str, str],
    kind: str = "deepcdr",
    max_atoms: int = DEEPCDR_MAX_ATOMS,
) -> dict[str, Any]:
    """Featurise many drugs; every failure is reported at once, naming the drugs.

    Parameters
    ----------
    smiles
        Drug name or id -> SMILES (a dict or a :class:`pandas.Series`).
    kind
        ``"deepcdr"`` (:func:`deepcdr_graph`, padded and normalised: arrays
        ``features (n_drugs, max_atoms, 75)``, ``adjacency (n_drugs, max_atoms, max_atoms)``,
        ``n_atoms``) or ``"deepce"`` (a dict of :func:`deepce_graph` results per drug).
    max_atoms
        Atom limit of ``"deepcdr"``.

    Returns
    -------
    ``{"drugs": [...], ...}`` as described for ``kind``.

    Raises
    ------
    DrugFeatureError
        One or more drugs cannot be featurised (all of them listed).
    """
    items = {str(k): v for k, v in dict(smiles.items()).items()}
    names, values = list(items), list(items.values())
    if kind not in ("deepcdr", "deepce"):
        raise ValueError(f"kind must be 'deepcdr' or 'deepce', not {kind!r}.")
    errors, graphs = [], {}
    for name, value in zip(names, values, strict=True):
        try:
            if kind == "deepcdr":
                graphs[name] = deepcdr_graph(value, name, max_atoms=max_atoms)
            else:
                graphs[name] = deepce_graph(value, name)
        except DrugFeatureError as error:
            errors.append(str(error))
    if errors:
        raise DrugFeatureError(
            f"{len(errors)} of {len(names)} drugs cannot be featurised:\n- " + "\n- ".join(errors)
        )
    if kind == "deepce":
        return {"drugs": names, "graphs": graphs}
    padded = [graphs[n].padded(max_atoms) for n in names]
    return {
        "drugs": names,
        "features": np.stack([p[0] for p in padded]).reshape(len(names), max_atoms, -1),
        "adjacency": np.stack([p[1] for p in padded]).reshape(len(names), max_atoms, max_atoms),
        "n_atoms": np.array([graphs[n].n_atoms for n in names], dtype=np.int64),
    }


_GRAPH_HINT = (
    "give DeepCDR's drug_graph_feat.zip or its unpacked folder of <pubchem id>.hkl files "
    "(GitHub kimmo1019/DeepCDR data/)"
)


def _parse_hkl(handle: Any) -> DeepCDRGraph:
    """One DeepCDR ``.hkl`` (hickle: HDF5 of ``[features, adjacency list, degrees]``)."""
    import h5py

    with h5py.File(handle, "r") as f:
        root = f["data_0"]

        def items(group) -> list:
            keys = sorted(group.keys(), key=lambda k: int(k.split("_")[1]))
            return [
                np.asarray([], dtype=np.int64)
                if isinstance(group[k], h5py.Group)  # an empty list (an isolated atom)
                else group[k][()]
                for k in keys
            ]

        features = np.asarray(root["data_0"][()], dtype=np.float64)
        adjacency = [[int(v) for v in np.atleast_1d(a)] for a in items(root["data_1"])]
        degrees = np.asarray(items(root["data_2"]), dtype=np.int32)
    return DeepCDRGraph(features, adjacency, degrees)


def read_deepcdr_graph_features(path: str | Path) -> dict[str, DeepCDRGraph]:
    """Read DeepCDR's shipped drug features (``drug_graph_feat.zip`` or its folder of ``.hkl``).

    Each ``<pubchem id>.hkl`` is a hickle (HDF5) file of ``[features, adjacency list, degrees]``;
    it is read with h5py (plain arrays, no pickled objects).

    Parameters
    ----------
    path
        The zip file or the unpacked folder.

    Returns
    -------
    PubChem id -> :class:`DeepCDRGraph`.

    Raises
    ------
    ScLongFileNotFound
        Nothing at ``path``.
    ScLongFileError
        Not a zip file, or a ``.hkl`` that is not DeepCDR's (damaged, truncated, another
        layout); the message names it.
    """
    import io

    from .._files import as_path, existing_file, reading
    from ..errors import ScLongFileError

    path = as_path(path, "DeepCDR drug feature file")
    out: dict[str, DeepCDRGraph] = {}
    if path.is_dir():
        files = sorted(path.rglob("*.hkl"))
        if not files:
            raise ScLongFileError(f"{path} holds no .hkl file; {_GRAPH_HINT}.")
        for file in files:
            with reading(file, "DeepCDR drug feature file", _GRAPH_HINT):
                out[file.stem] = _parse_hkl(file)
        return out
    path = existing_file(path, "DeepCDR drug feature archive", _GRAPH_HINT)
    with reading(path, "DeepCDR drug feature archive", _GRAPH_HINT):
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.endswith(".hkl"):
                    data = archive.read(member)
                    # a member is named as a path inside the archive: .../drug_graph_feat.zip/x.hkl
                    with reading(path / member, "DeepCDR drug feature file", _GRAPH_HINT):
                        out[Path(member).stem] = _parse_hkl(io.BytesIO(data))
    return out
