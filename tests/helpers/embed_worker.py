"""Embed a corpus with the tiny preset: one process, one of several (torchrun), or resumed.

Run by ``tests/test_embed_corpus.py`` in subprocesses (``python -m torch.distributed.run`` for
two processes, plain ``python`` otherwise). The model is the tiny preset initialised from seed 0
on the genes of ``--genes`` (the same weights in every process). Each process writes, to
``--report`` with ``.rank<r>.json`` appended, the cells its network forwarded (counted at the
module's ``inference``) and the summary ``embed_corpus`` returned. ``--kill-after-blocks N``
kills the process (SIGKILL, as a crash or a pre-empted job would) once it has written N blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import warnings
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stores", nargs="+")
    parser.add_argument("--genes", required=True, help="file with the model's genes, one a line")
    parser.add_argument("--out", required=True, help="embed_corpus output folder")
    parser.add_argument("--report", required=True, help="JSON report path prefix")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--kill-after-blocks", type=int)
    args = parser.parse_args()

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl

    import sclong_scverse as scl
    from sclong_scverse.model import SCLONG

    corpus = scl.data.ScLongCorpus(args.stores)
    genes = Path(args.genes).read_text().split()
    torch.manual_seed(0)
    model = SCLONG.from_corpus(corpus, config="tiny", vocabulary=genes, gene_graph=False)
    forwarded = []
    inference = model.module.inference

    def counted(x, *rest, **kwargs):
        forwarded.append(int(x.shape[0]))
        return inference(x, *rest, **kwargs)

    model.module.inference = counted
    callbacks = []
    if args.kill_after_blocks is not None:

        class Kill(pl.Callback):
            blocks = 0

            def on_predict_batch_end(self, trainer, module, outputs, batch, *_):
                self.blocks += int(batch["block"][4])  # 1 at a block's last batch (written)
                if self.blocks >= args.kill_after_blocks:
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(Kill())
    summary = model.embed_corpus(
        corpus,
        args.out,
        batch_size=args.batch_size,
        block_size=args.block_size,
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        num_workers=args.num_workers,
        enable_progress_bar=False,
        callbacks=callbacks,
    )
    rank = int(os.environ.get("RANK", "0"))
    report = {"forwarded": sum(forwarded), "summary": summary.to_dict(orient="list")}
    Path(f"{args.report}.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
