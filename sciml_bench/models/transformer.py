"""Transformers: encoder classifier (pre/post-norm), GPT-style causal decoder, and scientific variants."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sciml_bench.errors import unknown
from sciml_bench.models.registry import mse, register_model
from sciml_bench.data.fields import burgers_1d, lorenz63
from sciml_bench.models.layers import checkpoint_seq, get_act_layer

ATTENTIONS = ("sdpa", "manual")


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection.

    ``attention="sdpa"`` calls ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
    where available); ``"manual"`` computes softmax(QK^T / sqrt(d)) V explicitly, with the causal
    mask applied by ``masked_fill``. Parameters match ``nn.MultiheadAttention`` (in_proj + out_proj).
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = False, attention: str = "sdpa"):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        if attention not in ATTENTIONS:
            raise unknown("attention", attention, ATTENTIONS)
        self.heads, self.dropout, self.causal, self.attention = heads, dropout, causal, attention
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, heads, T, hd)
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (B, heads, T, T)
            if self.causal:
                mask = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
                att = att.masked_fill(mask, float("-inf"))
            y = F.dropout(att.softmax(-1), p, self.training) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class TransformerBlock(nn.Module):
    """Self-attention + feed-forward with residuals; ``norm_first`` picks pre-norm (GPT) or post-norm (Vaswani).

    Dropout sits where ``nn.TransformerEncoderLayer`` puts it: on attention weights, after the
    attention output, after the FFN activation, and after the FFN output.
    """

    def __init__(self, dim: int, heads: int, ff: int, act_layer, dropout: float = 0.0, causal: bool = False,
                 attention: str = "sdpa", norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal, attention)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, ff), act_layer(), nn.Dropout(dropout), nn.Linear(ff, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.drop1(self.attn(self.norm1(x)))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.drop1(self.attn(x)))
        return self.norm2(x + self.mlp(x))


def make_blocks(depth: int, dim: int, heads: int, ff: int, activation="gelu", dropout: float = 0.0,
                causal: bool = False, attention: str = "sdpa", norm_first: bool = True) -> nn.Sequential:
    """``depth`` TransformerBlocks in one Sequential (so ``checkpoint_seq`` can segment them)."""
    act_layer = get_act_layer(activation)
    return nn.Sequential(*[TransformerBlock(dim, heads, ff, act_layer, dropout, causal, attention, norm_first)
                           for _ in range(depth)])


def sinusoidal_positions(seq_len: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position encodings (T, C) from "Attention Is All You Need"."""
    pos = torch.arange(seq_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(seq_len, dim)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe


class EncoderClassifier(nn.Module):
    """Token embedding + sinusoidal positions -> encoder stack -> mean pool -> linear head.

    ``blocks`` is our TransformerBlock stack or, for the reference entry, ``nn.TransformerEncoder``;
    ``norm`` is the final LayerNorm a pre-norm stack needs (Identity for post-norm).
    """

    def __init__(self, blocks: nn.Module, norm: nn.Module, dim: int, vocab_size: int = 1000, num_classes: int = 10,
                 max_len: int = 4096):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.register_buffer("pos", sinusoidal_positions(max_len, dim), persistent=False)
        self.blocks, self.norm = blocks, norm
        self.head = nn.Linear(dim, num_classes)
        self.scale = math.sqrt(dim)
        self.checkpoint_segments = 0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int -> (B, classes)
        x = self.embed(tokens) * self.scale + self.pos[: tokens.size(1)]
        x = self.norm(checkpoint_seq(self.blocks, x, self.checkpoint_segments))
        return self.head(x.mean(1))


class GPT(nn.Module):
    """GPT-style causal decoder: token + learned positions, pre-norm causal blocks, final LayerNorm,
    bias-free LM head tied to the token embedding."""

    def __init__(self, vocab_size: int = 512, seq_len: int = 256, width: int = 256, depth: int = 6, heads: int = 8,
                 activation="gelu", attention: str = "sdpa", dropout: float = 0.0):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(seq_len, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = make_blocks(depth, width, heads, 4 * width, activation, dropout, True, attention)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.checkpoint_segments = 0
        self.reset_parameters(depth)

    def reset_parameters(self, depth: int) -> None:
        """GPT-2 init: N(0, 0.02) weights, zero biases, residual projections scaled by 1/sqrt(2 depth)."""
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("attn.proj.weight", "mlp.3.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias") and "norm" not in name:
                nn.init.zeros_(p)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) int -> (B, T, vocab)
        pos = torch.arange(tokens.size(1), device=tokens.device)
        x = self.drop(self.tok(tokens) + self.pos(pos))
        return self.head(self.norm(checkpoint_seq(self.blocks, x, self.checkpoint_segments)))


class BurgersTransformer(nn.Module):
    """Transformer solution operator: u0 sampled on a grid (B, N) -> u(T=1) on the same grid (B, N).

    Each grid point is a token (u0(x), sin x, cos x), lifted to ``width``; no positional table,
    so the operator applies at any resolution.
    """

    def __init__(self, width: int = 64, depth: int = 4, heads: int = 4, activation="gelu", attention: str = "sdpa"):
        super().__init__()
        self.lift = nn.Linear(3, width)
        self.blocks = make_blocks(depth, width, heads, 4 * width, activation, 0.0, False, attention)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, 1)
        self.checkpoint_segments = 0

    def forward(self, u0: torch.Tensor) -> torch.Tensor:  # (B, N) -> (B, N)
        x = torch.arange(u0.size(1), device=u0.device, dtype=u0.dtype) * (2 * math.pi / u0.size(1))
        feats = torch.stack((u0, torch.sin(x).expand_as(u0), torch.cos(x).expand_as(u0)), -1)  # (B, N, 3)
        h = checkpoint_seq(self.blocks, self.lift(feats), self.checkpoint_segments)
        return self.proj(self.norm(h)).squeeze(-1)


class LorenzGPT(nn.Module):
    """GPT-style forecaster for Lorenz-63: a window of states (B, T, 3) -> next states (B, T, 3), causal.

    States are standardized with fixed attractor statistics, and the head predicts the increment.
    """

    def __init__(self, seq_len: int = 50, width: int = 128, depth: int = 4, heads: int = 4, activation="gelu",
                 attention: str = "sdpa"):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.0, 0.0, 23.5]), persistent=False)
        self.register_buffer("std", torch.tensor([7.9, 9.0, 8.5]), persistent=False)
        self.inp = nn.Linear(3, width)
        self.pos = nn.Embedding(seq_len, width)
        self.blocks = make_blocks(depth, width, heads, 4 * width, activation, 0.0, True, attention)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 3)
        self.checkpoint_segments = 0

    def forward(self, states: torch.Tensor) -> torch.Tensor:  # (B, T, 3) -> (B, T, 3)
        z = (states - self.mean) / self.std
        h = self.inp(z) + self.pos(torch.arange(states.size(1), device=states.device))
        h = self.norm(checkpoint_seq(self.blocks, h, self.checkpoint_segments))
        return states + self.head(h) * self.std


def _create_encoder(reference: bool = False, norm_first: bool = True, seq_len: int = 128, width: int = 256,
                    depth: int = 4, heads: int = 8, activation="gelu", attention: str = "sdpa",
                    dropout: float = 0.1, **kwargs) -> EncoderClassifier:
    ff = 4 * width
    if reference:
        layer = nn.TransformerEncoderLayer(width, heads, ff, dropout, activation=get_act_layer(activation)(),
                                           batch_first=True, norm_first=norm_first)
        blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
    else:
        blocks = make_blocks(depth, width, heads, ff, activation, dropout, False, attention, norm_first)
    norm = nn.LayerNorm(width) if norm_first else nn.Identity()
    return EncoderClassifier(blocks, norm, width, max_len=max(seq_len, 512), **kwargs)


def _create_gpt(**kwargs) -> GPT:
    return GPT(**kwargs)


def token_batch(batch_size: int, g: torch.Generator, seq_len: int = 128, vocab_size: int = 1000,
                num_classes: int = 10, **_):
    """Token ids (B, T) int64 and integer sequence labels (B,)."""
    x = torch.randint(0, vocab_size, (batch_size, seq_len), generator=g)
    return x, torch.randint(0, num_classes, (batch_size,), generator=g)


def lm_batch(batch_size: int, g: torch.Generator, seq_len: int = 256, vocab_size: int = 512, **_):
    """Next-token language modelling: tokens (B, T) int64 and the same stream shifted by one (B, T)."""
    x = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=g)
    return x[:, :-1].contiguous(), x[:, 1:].contiguous()


def lm_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Token-level cross entropy of logits (B, T, V) against targets (B, T)."""
    logits = model(inputs)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def burgers_batch(batch_size: int, g: torch.Generator, resolution: int = 64, **_):
    """Burgers u0 and u(T=1) on the periodic grid x_j = 2πj/N of [0, 2π): (B, N) each, nu = 0.1."""
    return burgers_1d(batch_size, resolution, g)


def lorenz_batch(batch_size: int, g: torch.Generator, seq_len: int = 50, **_):
    """Lorenz-63 windows (B, T, 3) on the attractor (dt = 0.01) and the next states (B, T, 3)."""
    traj = lorenz63(batch_size, seq_len + 1, g)
    return traj[:, :-1].contiguous(), traj[:, 1:].contiguous()


_ENC = dict(family="transformer", task="classification", batch=token_batch, defaults=dict(seq_len=128))
_ENC_KNOBS = ("seq_len", "width", "depth", "activation", "attention", "checkpoint")


@register_model(knobs=_ENC_KNOBS, **_ENC)
def transformer_encoder(**kwargs) -> EncoderClassifier:
    """Pre-norm Transformer encoder classifier: d 256, 8 heads, 4 layers, ff 1024, dropout 0.1."""
    return _create_encoder(norm_first=True, **kwargs)


@register_model(knobs=_ENC_KNOBS, **_ENC)
def transformer_encoder_postnorm(**kwargs) -> EncoderClassifier:
    """Post-norm (original Vaswani) Transformer encoder classifier: d 256, 8 heads, 4 layers, ff 1024."""
    return _create_encoder(norm_first=False, **kwargs)


@register_model(knobs=("seq_len", "width", "depth", "activation"), **dict(_ENC, family="reference"))
def torch_transformer_encoder(**kwargs) -> EncoderClassifier:
    """Reference: ``transformer_encoder`` with its stack replaced by ``nn.TransformerEncoder`` (pre-norm)."""
    return _create_encoder(reference=True, norm_first=True, **kwargs)


@register_model(family="transformer", task="sequence", batch=lm_batch, loss=lm_loss, defaults=dict(seq_len=256),
                knobs=("seq_len", "width", "depth", "activation", "attention", "checkpoint"))
def gpt(**kwargs) -> GPT:
    """GPT-style causal decoder: d 256, 8 heads, 6 layers, fused QKV, SDPA (or manual) attention, vocab 512."""
    return _create_gpt(**kwargs)


@register_model(family="scientific", task="operator", batch=burgers_batch, loss=mse, defaults=dict(resolution=64),
                knobs=("resolution", "width", "depth", "activation", "attention", "checkpoint"))
def burgers_transformer(resolution: int = 64, **kwargs) -> BurgersTransformer:
    """Transformer solution operator for 1D Burgers: u0 at 64 points -> u(T=1); d 64, 4 blocks."""
    return BurgersTransformer(**kwargs)


@register_model(family="scientific", task="sequence", batch=lorenz_batch, loss=mse, defaults=dict(seq_len=50),
                knobs=("seq_len", "width", "depth", "activation", "attention", "checkpoint"))
def lorenz_gpt(**kwargs) -> LorenzGPT:
    """GPT-style forecaster for Lorenz-63 on windows of 50 steps: d 128, 4 heads, 4 causal layers."""
    return LorenzGPT(**kwargs)
