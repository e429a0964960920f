"""A compact decoder-only GPT in the Llama style, in one readable file (nanoGPT spirit).

Pre-norm blocks: ``x + Attn(RMSNorm(x))`` then ``x + SwiGLU(RMSNorm(x))``; rotary position
embeddings (no learned positions, so nothing to resize); optional grouped-query attention
(``n_kv_head < n_head``: fewer K/V heads, each shared by ``n_head // n_kv_head`` query heads);
optional tied input/output embeddings. Attention is ``F.scaled_dot_product_attention`` with
``is_causal=True`` (and ``enable_gqa`` for grouped K/V heads: no copy of K/V): PyTorch picks the
flash kernel on GPU (bf16) and its CPU flash kernel on CPU; ``sdpa_backend`` says which one it
picks for the model's shapes, ``forced_flash_check`` runs it under ``sdpa_kernel(FLASH)``.

Two memory options (no effect on the numbers): ``loss_chunk`` computes the LM head + loss over
chunks of tokens, each recomputed in backward, so the [tokens, vocab] fp32 logits never exist
at once; ``train/parallel.py``'s ``apply_activation_checkpointing`` recomputes each block in
backward.

The model is kept free of parallelism and compilation: ``train/parallel.py`` applies FSDP2 and
``torch.compile`` from the outside (as torchtitan does), so this file stays a plain nn.Module.
The LM head and the loss live in one submodule (``head``) so they can be compiled together:
left eager, the [tokens, vocab] logits in fp32 cost a lot of time and memory.

FLOPs convention (``flops_per_token``): ``6·N + 12·L·H·Q·T`` per trained token (forward +
backward), with N the non-embedding parameters *plus* the LM-head matrix (a real d×V matmul
for every token; the input embedding is a lookup and costs nothing), L layers, H query heads,
Q head dim, T sequence length. With tied embeddings this is exactly nanoGPT's / PaLM's count
for the same shape, so MFU figures are comparable to the baselines in ARCHITECTURE.md.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as activation_ckpt
from pydantic import BaseModel, ConfigDict, model_validator
from torch import nn


class GPTConfig(BaseModel):
    """Model shape. ``vocab_size=0`` / ``seq_len=0`` mean "take it from the shard manifest"."""

    model_config = ConfigDict(extra="forbid")
    vocab_size: int = 0
    seq_len: int = 0
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int | None = None  # None: = n_head (plain multi-head attention)
    d_model: int = 768
    ffn_hidden: int | None = None  # None: 8/3·d rounded up to ``multiple_of`` (Llama)
    multiple_of: int = 64
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    init_std: float = 0.02

    @model_validator(mode="after")
    def _check(self) -> GPTConfig:
        if self.d_model % self.n_head:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_head {self.n_head}")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for rotary embeddings")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head {self.n_head} is not a multiple of n_kv_head {self.kv_heads}")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def hidden(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        h = int(8 * self.d_model / 3)
        return self.multiple_of * math.ceil(h / self.multiple_of)


# Model shapes by name (vocab_size/seq_len left to the shards); configs/train/*.yaml use these.
SIZES: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=2, n_head=4, n_kv_head=2, d_model=64),  # CPU tests: seconds
    "gpt2-124m": GPTConfig(n_layer=12, n_head=12, d_model=768, ffn_hidden=2048),
    "350m": GPTConfig(n_layer=24, n_head=16, d_model=1024, ffn_hidden=2816),
    "1b": GPTConfig(n_layer=16, n_head=32, n_kv_head=8, d_model=2048, ffn_hidden=8192),
}


class RMSNorm(nn.Module):
    """x / rms(x) · g: LayerNorm without the mean and the bias (cheaper, as good for LMs)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32: under bf16 the mean of squares loses too many bits
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(
            x
        ) * self.weight


def rope_tables(head_dim: int, seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of the rotation angles, [seq_len, head_dim // 2] each (fp32)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x [B, heads, T, Q] by position-dependent angles."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv, self.q = cfg.n_head, cfg.kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.n_head * cfg.head_dim, bias=False)
        self.wk = nn.Linear(cfg.d_model, self.n_kv * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, self.n_kv * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.n_head * cfg.head_dim, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_head, self.q).transpose(1, 2)
        k = self.wk(x).view(B, T, self.n_kv, self.q).transpose(1, 2)
        v = self.wv(x).view(B, T, self.n_kv, self.q).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # GQA: every K/V head serves n_head // n_kv query heads; SDPA broadcasts (no copy)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.n_kv != self.n_head
        )
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_head * self.q))


class SwiGLU(nn.Module):
    """w2(silu(w1 x) · w3 x): the gated MLP of PaLM/Llama (better per FLOP than GELU)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.w3 = nn.Linear(cfg.d_model, cfg.hidden, bias=False)
        self.w2 = nn.Linear(cfg.hidden, cfg.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


class Head(nn.Module):
    """Final norm + LM head + cross-entropy: one unit, so compile can fuse it (see module doc).

    ``loss_chunk > 0``: the loss is summed over chunks of that many tokens, each chunk's logits
    recomputed in backward (activation checkpointing), so peak memory holds one chunk's logits.
    """

    def __init__(self, cfg: GPTConfig, loss_chunk: int = 0):
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.loss_chunk = loss_chunk

    def _loss_sum(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self.out(self.norm(h))
        # the loss in fp32 whatever the compute dtype
        return F.cross_entropy(logits.float(), targets, reduction="sum")

    def forward(self, h: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if targets is None:
            return self.out(self.norm(h))
        h, targets = h.flatten(0, 1), targets.flatten()
        n = targets.numel()
        if self.loss_chunk <= 0 or self.loss_chunk >= n:
            return self._loss_sum(h, targets) / n  # mean over all tokens
        total = h.new_zeros((), dtype=torch.float32)
        for a in range(0, n, self.loss_chunk):
            total = total + activation_ckpt.checkpoint(
                self._loss_sum, h[a : a + self.loss_chunk], targets[a : a + self.loss_chunk],
                use_reentrant=False,
            )  # fmt: skip
        return total / n


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, loss_chunk: int = 0):
        super().__init__()
        if cfg.vocab_size <= 0 or cfg.seq_len <= 0:
            raise ValueError("GPTConfig needs vocab_size and seq_len (resolve them first)")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.head = Head(cfg, loss_chunk)
        if cfg.tie_embeddings:
            self.head.out.weight = self.tok_emb.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.seq_len, cfg.rope_theta)
        # not persistent: recomputed from the config, so checkpoints hold only learned weights
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """N(0, std) everywhere; residual output projections scaled by 1/sqrt(2·L) (GPT-2):
        each block adds two terms to the residual stream, so its variance stays O(1) with depth."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)  # RMSNorm gains
            elif name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.cfg.n_layer))
            else:
                nn.init.normal_(p, 0.0, std)
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.seq_len, self.cfg.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """idx [B, T] token ids → logits [B, T, V], or the mean loss when targets are given."""
        T = idx.shape[1]
        if self.cfg.seq_len < T:
            raise ValueError(f"sequence of {T} tokens > seq_len {self.cfg.seq_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        h = self.tok_emb(idx)
        for block in self.layers:
            h = block(h, cos, sin)
        return self.head(h, targets)

    def num_params(self, non_embedding: bool = True) -> int:
        """Unique parameters; ``non_embedding`` leaves out the token embedding and the LM-head
        matrix (Kaplan et al.'s N, the one scaling laws are fitted on)."""
        total = sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())
        if non_embedding:
            total -= self.tok_emb.weight.numel()
            if not self.cfg.tie_embeddings:
                total -= self.head.out.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None, include_head: bool = True) -> float:
        """Training FLOPs per token, ``6·N + 12·L·H·Q·T`` (see the module docstring for N)."""
        c = self.cfg
        T = seq_len or c.seq_len
        n = self.num_params(non_embedding=True)
        if include_head:
            n += c.d_model * c.vocab_size
        return 6 * n + 12 * c.n_layer * c.n_head * c.head_dim * T


def _sdpa_probe(
    cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    shape = (batch, cfg.n_head, cfg.seq_len, cfg.head_dim)
    kv = (batch, cfg.kv_heads, cfg.seq_len, cfg.head_dim)
    g = torch.Generator(device=device).manual_seed(0)
    q = torch.randn(shape, device=device, dtype=dtype, generator=g)
    k = torch.randn(kv, device=device, dtype=dtype, generator=g)
    v = torch.randn(kv, device=device, dtype=dtype, generator=g)
    return q, k, v


def sdpa_backend(
    cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> str:
    """The SDPA kernel PyTorch dispatches to for this model's attention (shapes, dtype, GQA):
    ``FLASH_ATTENTION``, ``EFFICIENT_ATTENTION``, ``CUDNN_ATTENTION`` or ``MATH`` (the slow
    fall-back). Asked of the dispatcher itself (``torch._fused_sdp_choice``)."""
    from torch.nn.attention import SDPBackend

    q, k, v = _sdpa_probe(cfg, batch, device, dtype)
    try:
        choice = torch._fused_sdp_choice(
            q, k, v, None, 0.0, True, enable_gqa=cfg.kv_heads != cfg.n_head
        )
        return SDPBackend(choice).name
    except Exception as e:  # a private API: say so rather than guess
        return f"unknown ({type(e).__name__}: {e})"


def forced_flash_check(
    cfg: GPTConfig, batch: int, device: torch.device, dtype: torch.dtype = torch.bfloat16
) -> str | None:
    """Run the model's attention forward + backward under ``sdpa_kernel(FLASH_ATTENTION)``:
    None if the flash kernel takes it, else the error (PyTorch raises rather than falls back)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (t.requires_grad_() for t in _sdpa_probe(cfg, batch, device, dtype))
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, enable_gqa=cfg.kv_heads != cfg.n_head
            )
            y.float().sum().backward()
        return None
    except RuntimeError as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
