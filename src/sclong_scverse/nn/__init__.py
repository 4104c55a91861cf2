"""Pure-torch scLong network: Performer blocks, embeddings with the GO-GCN, ScLongNetwork."""

from .config import ScLongConfig
from .embeddings import GeneEmbedding, ValueEmbedding
from .lora import LoRALinear, add_lora, lora_parameters
from .network import ScLongNetwork
from .performer import FavorSelfAttention, FeedForward, Performer, PerformerLayer

__all__ = [
    "FavorSelfAttention",
    "FeedForward",
    "GeneEmbedding",
    "Performer",
    "PerformerLayer",
    "ScLongConfig",
    "ScLongNetwork",
    "ValueEmbedding",
    "LoRALinear",
    "add_lora",
    "lora_parameters",
]
