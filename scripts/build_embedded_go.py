"""Build the human gene / GO tables embedded in ``sclong_scverse.go`` (``go/data/``).

Source: the Debian packages of two Bioconductor annotation packages,

- ``r-bioc-org.hs.eg.db`` (org.Hs.eg.db): NCBI Gene -> GO annotations, symbols, aliases,
  Ensembl ids;
- ``r-bioc-go.db`` (GO.db): the GO terms and their parent links (go-basic.obo as tables).

Each holds an SQLite database; this script reads it with Python's ``sqlite3`` and writes compact
gzip'd TSV tables plus ``metadata.json`` and ``PROVENANCE.md`` (versions, source release dates read
from the databases' ``metadata`` tables, sha256 of the ``.deb`` files) beside them.

Usage (Debian/Ubuntu with the packages in its apt sources; ``apt-get download`` needs no root)::

    python scripts/build_embedded_go.py                 # apt-get download into a temporary folder
    python scripts/build_embedded_go.py --debs DIR      # use .deb files already in DIR

The tables are deterministic (gzip mtime 0, sorted rows): rebuilding from the same packages gives
byte-identical ``.tsv.gz`` files (only the build date in the notes changes).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import gzip
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "src" / "sclong_scverse" / "go" / "data"
PACKAGES = {
    "org": ("r-bioc-org.hs.eg.db", "usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"),
    "go": ("r-bioc-go.db", "usr/lib/R/site-library/GO.db/extdata/GO.sqlite"),
}
RELATIONSHIPS = {
    "isa": "is_a",
    "part of": "part_of",
    "regulates": "regulates",
    "negatively regulates": "negatively_regulates",
    "positively regulates": "positively_regulates",
}


def run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    print("$", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout


def find_deb(debs: Path, package: str) -> Path:
    found = sorted(glob.glob(str(debs / f"{package}_*.deb")))
    if not found:
        raise SystemExit(f"no {package}_*.deb in {debs}")
    return Path(found[-1])


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_table(out: Path, name: str, header: Sequence[str], rows: Iterable[Sequence]) -> dict:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    n = 0
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
        n += 1
    path = out / name
    with (
        path.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f,
    ):
        f.write(buffer.getvalue().encode("utf-8"))
    size = path.stat().st_size
    print(f"{name}: {n} rows, {size / 1e6:.2f} MB", file=sys.stderr)
    return {"file": name, "rows": n, "bytes": size, "columns": list(header)}


def build(debs: Path, out: Path) -> dict:
    """Extract both packages into a temporary folder (removed afterwards) and write the tables."""
    with tempfile.TemporaryDirectory(prefix="sclong_go_") as work:
        return _build(debs, out, Path(work))


def _build(debs: Path, out: Path, work: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    sources, dbs = {}, {}
    for key, (package, sqlite_path) in PACKAGES.items():
        deb = find_deb(debs, package)
        target = work / package
        run(["dpkg-deb", "-x", str(deb), str(target)])
        dbs[key] = sqlite3.connect(target / sqlite_path)
        sources[package] = {
            "deb": deb.name,
            "version": run(["dpkg-deb", "-f", str(deb), "Version"]).strip(),
            "sha256": sha256(deb),
            "homepage": run(["dpkg-deb", "-f", str(deb), "Homepage"]).strip(),
            "sqlite": sqlite_path,
            "metadata": dict(dbs[key].execute("select name, value from metadata").fetchall()),
        }
    org, god = dbs["org"], dbs["go"]
    tables = []

    # gene -> GO direct annotations (NCBI gene2go as imported by Bioconductor), all 3 ontologies
    query = " union all ".join(
        f"select g.gene_id, i.symbol, a.go_id, a.evidence, '{o.upper()}' from go_{o} a "
        "join genes g on g._id = a._id join gene_info i on i._id = a._id"
        for o in ("bp", "mf", "cc")
    )
    tables.append(
        write_table(
            out,
            "human_gene2go.tsv.gz",
            ["entrez_id", "symbol", "go_id", "evidence", "ontology"],
            org.execute(query + " order by 2, 5, 3, 4"),
        )
    )
    # gene identifiers: one row per NCBI gene; Ensembl ids pipe-joined (sorted)
    query = """select g.gene_id, i.symbol, t.gene_type,
        (select group_concat(ensembl_id, '|') from
            (select distinct e.ensembl_id from ensembl e where e._id = g._id order by 1))
        from genes g join gene_info i on i._id = g._id left join genetype t on t._id = g._id
        order by i.symbol, g.gene_id"""
    tables.append(
        write_table(
            out,
            "human_gene_ids.tsv.gz",
            ["entrez_id", "symbol", "gene_type", "ensembl_ids"],
            org.execute(query),
        )
    )
    # aliases (previous symbols and synonyms), the official symbol itself left out
    query = """select distinct g.gene_id, a.alias_symbol from alias a join genes g on g._id = a._id
        join gene_info i on i._id = a._id where a.alias_symbol != i.symbol order by 2, 1"""
    tables.append(
        write_table(
            out, "human_gene_alias.tsv.gz", ["entrez_id", "alias_symbol"], org.execute(query)
        )
    )
    # GO terms (id, ontology) and child -> parent links of the three ontologies
    query = "select go_id, ontology from go_term where ontology in ('BP','MF','CC') order by 1"
    tables.append(write_table(out, "go_terms.tsv.gz", ["go_id", "ontology"], god.execute(query)))
    query = " union all ".join(
        f"select c.go_id, p.go_id, r.relationship_type from go_{o}_parents r "
        "join go_term c on c._id = r._id join go_term p on p._id = r._parent_id"
        for o in ("bp", "mf", "cc")
    )
    rows = [(c, p, RELATIONSHIPS.get(r, r.replace(" ", "_"))) for c, p, r in god.execute(query)]
    tables.append(
        write_table(
            out, "go_parents.tsv.gz", ["child", "parent", "relationship"], sorted(set(rows))
        )
    )

    for db in dbs.values():
        db.close()
    meta = {
        "built": dt.date.today().isoformat(),
        "builder": "scripts/build_embedded_go.py",
        "sources": sources,
        "tables": tables,
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    (out / "PROVENANCE.md").write_text(provenance(meta))
    return meta


def provenance(meta: dict) -> str:
    org = meta["sources"]["r-bioc-org.hs.eg.db"]
    go = meta["sources"]["r-bioc-go.db"]
    om, gm = org["metadata"], go["metadata"]
    lines = [
        "# Embedded human gene and Gene Ontology tables: provenance",
        "",
        f"Built {meta['built']} by `{meta['builder']}` (rerun it to rebuild; the tables come out",
        "byte-identical from the same packages).",
        "",
        "## Sources",
        "",
        f"- Debian package `r-bioc-org.hs.eg.db` {org['version']} = Bioconductor org.Hs.eg.db "
        f"({org['homepage']}), file `{org['deb']}`, sha256 `{org['sha256']}`. Its SQLite "
        f"database: NCBI Entrez Gene {om.get('EGSOURCEDATE')} ({om.get('EGSOURCEURL')}), "
        f"gene -> GO from NCBI gene2go {om.get('GOEGSOURCEDATE')}, GO {om.get('GOSOURCEDATE')} "
        f"({om.get('GOSOURCEURL')}), Ensembl ids as mapped by NCBI gene2ensembl and Ensembl "
        f"{om.get('ENSOURCEDATE')}; organism {om.get('ORGANISM')} (taxon {om.get('TAXID')}).",
        f"- Debian package `r-bioc-go.db` {go['version']} = Bioconductor GO.db "
        f"({go['homepage']}), file `{go['deb']}`, sha256 `{go['sha256']}`: GO "
        f"{gm.get('GOSOURCEDATE')} ({gm.get('GOSOURCEURL')}).",
        "",
        "## Tables (tab-separated, gzip, one header line)",
        "",
        "| file | rows | bytes | columns |",
        "|---|---|---|---|",
    ]
    for t in meta["tables"]:
        lines.append(
            f"| `{t['file']}` | {t['rows']:,} | {t['bytes']:,} | {', '.join(t['columns'])} |"
        )
    lines += [
        "",
        "- `human_gene2go`: direct (not propagated) annotations of human NCBI genes to GO",
        "  terms, one row per gene, term and evidence code; `ontology` is BP, MF or CC (the",
        "  source table has no qualifier column).",
        "- `human_gene_ids`: every NCBI human gene: official symbol, NCBI gene type, Ensembl",
        "  gene ids (pipe-joined; empty when none).",
        "- `human_gene_alias`: alias and previous symbols (the official symbol itself left out).",
        "- `go_terms`, `go_parents`: GO term -> ontology; child -> parent links with the",
        "  relationship (is_a, part_of, regulates, negatively_regulates, positively_regulates).",
        "",
        "See `LICENSE.md` beside this file for the terms of use.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--debs", type=Path, help="folder with the two .deb files (else download)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    args = parser.parse_args(argv)
    if args.debs is not None:
        meta = build(args.debs, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="sclong_debs_") as folder:
            debs = Path(folder)
            os.chmod(debs, 0o777)  # apt's sandbox user (_apt) writes there
            run(["apt-get", "download", *(p for p, _ in PACKAGES.values())], cwd=debs)
            meta = build(debs, args.out)
    print(json.dumps({t["file"]: t["rows"] for t in meta["tables"]}, indent=1))


if __name__ == "__main__":
    main()
