"""``sclong convert-official``: read an official scLong release, write it back, check both agree."""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings

from ._common import CliError, _input_at, _input_file, _output_folder, _say, _warn
from ._staging import _staged

NAME = "convert-official"
HELP = "load an official scLong release, write it back, check the round trip"
DESCRIPTION = (
    "Read an official release (.pth, .pkl, genes .txt) into this package's "
    "network, print its configuration and size, and write it back in the official layout "
    "(readable by the original scripts and by SCLONG.from_official) plus a config JSON, "
    "checking that the written files read back to identical tensors. The checkpoint's sha256 "
    "is always computed and printed; without --sha256 a warning says that nothing verified it."
)


def run(args: argparse.Namespace) -> None:
    """Run ``sclong convert-official``."""
    inputs = [
        _input_file(args.checkpoint, "checkpoint file"),
        _input_file(args.hparams, "hparams file"),
        _input_file(args.genes, "genes file"),
    ]
    stem = args.name
    if not stem or stem in (".", "..") or "/" in stem or os.sep in stem:
        raise CliError(f"--name {stem!r} must be a plain file stem (no folder), e.g. sclong")
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        raise CliError(f"--sha256 {args.sha256!r} is not a sha256 (64 hexadecimal digits)")
    out = _output_folder(args.out)
    names = (f"{stem}.pth", f"{stem}.pkl", f"{stem}_genes.txt", f"{stem}_config.json")
    targets = [out / name for name in names]
    for target in targets:
        if target.is_dir():
            raise CliError(f"{target} is a folder; choose another --name or --out")
        source = _input_at(target, inputs)
        if source is not None and not args.overwrite:
            raise CliError(
                f"writing {target} would replace the input {source}; choose another --out "
                "or --name, or pass --overwrite"
            )
    import torch

    from ..io import load_official, save_official
    from ..io.official import unverified_message

    with warnings.catch_warnings():  # said below as one line, with the option to pin it
        warnings.filterwarnings("ignore", message=".*loaded unverified", category=UserWarning)
        release = load_official(*inputs, expected_sha256=args.sha256)
    checkpoint_sha256 = release.sha256["checkpoint"]
    if "checkpoint" not in release.verified:
        _warn(unverified_message(inputs[0], checkpoint_sha256, pin=f"--sha256 {checkpoint_sha256}"))
    network, config = release.network, release.network.config
    n_parameters = sum(p.numel() for p in network.parameters())
    n_buffers = sum(b.numel() for b in network.buffers())
    with _staged() as staging:
        files = [staging.path(target) for target in targets]
        save_official(network, files[0], files[1], genes=release.genes, genes_path=files[2])
        files[3].write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        # round trip: read what was written and compare every tensor
        with warnings.catch_warnings():  # the files just written: compared tensor by tensor
            warnings.filterwarnings("ignore", message=".*loaded unverified", category=UserWarning)
            again = load_official(*files[:3]).network
        before, after = network.state_dict(), again.state_dict()
        identical = before.keys() == after.keys() and all(
            torch.equal(before[k], after[k].to(before[k].dtype)) for k in before
        )
        if not identical:
            raise CliError("the written release does not read back identically; nothing written")
    _say("official scLong release")
    for key, value in config.to_dict().items():
        _say(f"  {key}: {value}")
    _say(f"  genes: {len(release.genes)}")
    checked = "verified against --sha256" if "checkpoint" in release.verified else "not verified"
    _say(f"  checkpoint sha256: {checkpoint_sha256} ({checked})")
    _say(f"  parameters: {n_parameters:,}; buffer elements: {n_buffers:,}")
    _say(f"wrote {', '.join(str(t) for t in targets[:3])} and {names[3]}")
    _say("round trip (write, read back): identical tensors")


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``sclong convert-official``."""
    parser.add_argument("--checkpoint", required=True, metavar="X.pth", help="weights")
    parser.add_argument("--hparams", required=True, metavar="X.pkl", help="hyper-parameters")
    parser.add_argument("--genes", required=True, metavar="genes.txt", help="gene list")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--name", default="sclong", help="file stem in DIR")
    parser.add_argument(
        "--sha256", metavar="HEX", help="expected sha256 of X.pth (refused when different)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="allow the written files to replace the inputs"
    )
