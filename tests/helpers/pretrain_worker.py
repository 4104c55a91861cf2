"""Pretrain the tiny preset on a corpus: one process, one of several (torchrun), or resumed.

Run by ``tests/test_pretrain.py`` in subprocesses (``python -m torch.distributed.run`` for the
two-process DDP runs, plain ``python`` otherwise). Writes the masked MSE of every step, as seen
by rank 0, to ``--out`` (JSON). ``--kill-at-step N`` kills the process (SIGKILL, as a crash or a
pre-empted job would) once step N has run, after the checkpoints due by then were written.
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
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--max-epochs", type=int, default=1)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", default="auto")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--every", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--accumulate", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import lightning.pytorch as pl

    import sclong_scverse as scl
    from sclong_scverse.model import SCLONG

    corpus = scl.data.ScLongCorpus(args.stores, block_size=16, shuffle_window=4, seed=3)
    genes = Path(args.genes).read_text().split()
    torch.manual_seed(0)
    model = SCLONG.from_corpus(corpus, config="tiny", vocabulary=genes, gene_graph=False)
    callbacks = []
    if args.kill_at_step is not None:

        class Kill(pl.Callback):
            def on_train_batch_end(self, trainer, *_):
                if trainer.global_step >= args.kill_at_step:
                    os.kill(os.getpid(), signal.SIGKILL)

        callbacks.append(Kill())
    losses = model.pretrain(
        corpus,
        max_epochs=args.max_epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=2e-3,
        accelerator="cpu",
        devices=args.devices,
        strategy=args.strategy,
        accumulate_grad_batches=args.accumulate,
        checkpoint_dir=args.checkpoint_dir,
        checkpoint_every_n_steps=args.every,
        resume=args.resume,
        num_workers=args.num_workers,
        redraw_interval=5,
        enable_progress_bar=False,
        callbacks=callbacks,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        Path(args.out).write_text(json.dumps(losses.to_dict(orient="list")))


if __name__ == "__main__":
    main()
