"""The GPT model: shapes, causality, GQA, parameter and FLOP counts against hand formulas."""

from __future__ import annotations

import pytest
import torch

from train.model import GPT, GPTConfig, apply_rope, rope_tables

TINY = GPTConfig(vocab_size=96, seq_len=32, n_layer=2, n_head=4, d_model=32, ffn_hidden=48)


def model(cfg: GPTConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def test_shapes_and_loss():
    m = model()
    idx = torch.randint(0, 96, (3, 20))
    assert m(idx).shape == (3, 20, 96)
    loss = m(idx, torch.randint(0, 96, (3, 20)))
    assert loss.ndim == 0
    # a fresh model predicts ~uniformly: loss near ln(V)
    assert abs(loss.item() - torch.log(torch.tensor(96.0)).item()) < 0.5
    with pytest.raises(ValueError, match="seq_len"):
        m(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize("n_kv_head", [None, 2, 1])
def test_causal_future_tokens_do_not_change_past_logits(n_kv_head):
    m = model(TINY.model_copy(update={"n_kv_head": n_kv_head}))
    a = torch.randint(0, 96, (2, 24))
    b = a.clone()
    b[:, 12:] = torch.randint(0, 96, (2, 12))  # change only the future
    with torch.no_grad():
        la, lb = m(a), m(b)
    assert torch.equal(la[:, :12], lb[:, :12])
    assert not torch.allclose(la[:, 12:], lb[:, 12:])


def test_gqa_has_fewer_kv_parameters_and_matches_repeated_heads():
    full, gqa = TINY, TINY.model_copy(update={"n_kv_head": 2})
    m_full, m_gqa = model(full), model(gqa)
    kv = 2 * full.n_layer * full.d_model * full.head_dim  # K and V, per dropped head
    assert m_full.num_params() - m_gqa.num_params() == kv * (full.n_head - gqa.kv_heads)
    # GQA == MHA whose K/V heads are copies of the shared ones
    with torch.no_grad():
        sd = m_gqa.state_dict()
        for i in range(full.n_layer):
            for w in ("wk", "wv"):
                k = sd[f"layers.{i}.attn.{w}.weight"].view(2, full.head_dim, full.d_model)
                sd[f"layers.{i}.attn.{w}.weight"] = k.repeat_interleave(2, 0).reshape(
                    -1, full.d_model
                )
        m_full.load_state_dict(sd)
        idx = torch.randint(0, 96, (2, 16))
        torch.testing.assert_close(m_full(idx), m_gqa(idx))
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        GPTConfig(vocab_size=8, seq_len=8, n_head=4, d_model=32, n_kv_head=3)


def hand_count(c: GPTConfig) -> tuple[int, int]:
    d, q, L = c.d_model, c.head_dim, c.n_layer
    attn = d * c.n_head * q * 2 + d * c.kv_heads * q * 2
    ffn = 3 * d * c.hidden
    norms = 2 * d
    non_emb = L * (attn + ffn + norms) + d  # + final norm
    emb = c.vocab_size * d * (1 if c.tie_embeddings else 2)
    return non_emb, non_emb + emb


@pytest.mark.parametrize("tie", [True, False])
def test_param_and_flop_counts_match_hand_formula(tie):
    c = TINY.model_copy(update={"tie_embeddings": tie, "n_kv_head": 2})
    m = model(c)
    non_emb, total = hand_count(c)
    assert m.num_params(non_embedding=True) == non_emb
    assert m.num_params(non_embedding=False) == total
    attn = 12 * c.n_layer * c.n_head * c.head_dim * 32
    assert m.flops_per_token(32) == 6 * (non_emb + c.d_model * c.vocab_size) + attn
    assert m.flops_per_token(32, include_head=False) == 6 * non_emb + attn


def test_gpt2_124m_shape_counts():
    # Llama-style GPT-2-small shape of ARCHITECTURE.md: SwiGLU 2048, tied, V=50304
    c = GPTConfig(vocab_size=50304, seq_len=1024, ffn_hidden=2048)
    m = GPT(c)
    blocks = 12 * (4 * 768 * 768 + 3 * 768 * 2048 + 2 * 768) + 768
    assert m.num_params(non_embedding=True) == blocks == 84_953_856
    assert m.num_params(non_embedding=False) == blocks + 50304 * 768 == 123_587_328
    # ≈ 855 MFLOP/token: the convention under ARCHITECTURE.md's 37 % MFU at 431k tok/s
    assert m.flops_per_token() == 6 * 123_587_328 + 12 * 12 * 12 * 64 * 1024
    assert round(m.flops_per_token() / 1e6) == 855


def test_init_scales_residual_projections_by_depth():
    c = GPTConfig(vocab_size=64, seq_len=16, n_layer=8, n_head=4, d_model=256)
    m = model(c)
    std_in = m.layers[0].attn.wq.weight.std().item()
    std_out = m.layers[0].attn.wo.weight.std().item()
    assert abs(std_in - 0.02) < 0.002
    assert abs(std_out - 0.02 / 4) < 0.001  # 1/sqrt(2·8)


def test_rope_rotation_preserves_norm_and_encodes_relative_position():
    cos, sin = rope_tables(8, 16, 10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rq = apply_rope(q.expand(1, 1, 16, 8), cos, sin)
    rk = apply_rope(k.expand(1, 1, 16, 8), cos, sin)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 16))
    # <R_m q, R_n k> depends only on m - n
    dots = (rq[0, 0, 3] @ rk[0, 0, 1], rq[0, 0, 9] @ rk[0, 0, 7])
    torch.testing.assert_close(dots[0], dots[1])


@pytest.mark.parametrize("size", ["tiny", "gpt2-124m", "350m", "1b"])
def test_train_configs_use_the_named_sizes(size):
    from pathlib import Path

    from train.model import SIZES
    from train.trainer import TrainConfig

    cfg = TrainConfig.from_yaml(Path(__file__).parent.parent / "configs/train" / f"{size}.yaml")
    shape = cfg.model.model_dump(exclude={"vocab_size", "seq_len"})
    assert shape == SIZES[size].model_dump(exclude={"vocab_size", "seq_len"})
    with torch.device("meta"):  # count without allocating
        m = GPT(cfg.model.model_copy(update={"vocab_size": 32000, "seq_len": 2048}))
    expect = {"tiny": 0.1e6, "gpt2-124m": 85e6, "350m": 308e6, "1b": 973e6}[size]
    assert abs(m.num_params(non_embedding=True) - expect) / expect < 0.02


# --------------------------------------------------------------------------- GPU-path options


def _grads(m: GPT, idx: torch.Tensor) -> tuple[float, dict[str, torch.Tensor]]:
    m.zero_grad(set_to_none=True)
    loss = m(idx[:, :-1], idx[:, 1:])
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters()}


def test_chunked_loss_and_activation_checkpointing_give_the_same_loss_and_gradients():
    from train.parallel import apply_activation_checkpointing

    cfg = TINY.model_copy(update={"n_kv_head": 2})
    idx = torch.randint(0, 96, (3, 21), generator=torch.Generator().manual_seed(1))
    ref_loss, ref = _grads(model(cfg).train(), idx)
    torch.manual_seed(0)
    chunked = GPT(cfg, loss_chunk=7).train()  # 60 tokens: 8 full chunks + one of 4
    loss, got = _grads(chunked, idx)
    assert abs(loss - ref_loss) < 1e-5
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6)
    recomputed = apply_activation_checkpointing(model(cfg).train())
    loss, got = _grads(recomputed, idx)
    assert abs(loss - ref_loss) < 1e-6
    for n, g in got.items():
        torch.testing.assert_close(g, ref[n.replace("_checkpoint_wrapped_module.", "")])


def test_sdpa_backend_reports_the_kernel_the_dispatcher_picks():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from train.model import forced_flash_check, sdpa_backend

    cfg = TINY.model_copy(update={"n_kv_head": 2})
    picked = sdpa_backend(cfg, 2, torch.device("cpu"), torch.float32)
    assert picked in {"FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"}
    if picked == "FLASH_ATTENTION":  # torch's CPU flash kernel takes fp32 + GQA
        assert forced_flash_check(cfg, 2, torch.device("cpu"), torch.float32) is None
    # a fall-back to the math kernel is reported as such, not as flash
    with sdpa_kernel(SDPBackend.MATH):
        assert sdpa_backend(cfg, 2, torch.device("cpu"), torch.float32) == "MATH"
    with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION):  # no such CPU kernel: not called flash
        assert sdpa_backend(cfg, 2, torch.device("cpu"), torch.float32) != "FLASH_ATTENTION"


@pytest.fixture
def gloo_group(monkeypatch):
    """A single-rank gloo process group (FSDP2 at world size 1 on CPU), torn down after."""
    import socket

    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_fsdp2_keeps_rope_fp32_in_blocks_and_the_root_unsharded(gloo_group, monkeypatch):
    from torch.distributed.tensor import DTensor

    import train.model as tm
    from train.parallel import DistInfo, apply_fsdp, make_mesh

    cfg = TINY.model_copy(update={"n_layer": 3, "n_kv_head": 2})
    m = model(cfg).train()
    seen: list[tuple[torch.dtype, torch.dtype, torch.dtype]] = []
    real = tm.apply_rope

    def spy(x, cos, sin):
        seen.append((x.dtype, cos.dtype, sin.dtype))
        return real(x, cos, sin)

    monkeypatch.setattr(tm, "apply_rope", spy)
    apply_fsdp(m, make_mesh(DistInfo()), param_dtype=torch.bfloat16, reshard_after_forward=True)
    idx = torch.randint(0, 96, (2, 17))
    loss = m(idx[:, :-1], idx[:, 1:])
    # inside every block: bf16 activations, fp32 rotation tables (cast, they are off by 2e-3)
    assert len(seen) == 2 * cfg.n_layer
    assert all(s == (torch.bfloat16, torch.float32, torch.float32) for s in seen), seen
    # after forward: the root (embedding + tied head) stays unsharded for backward, the
    # blocks but the last are resharded (their parameters are DTensor shards again)
    assert not isinstance(m.tok_emb.weight, DTensor)
    assert [isinstance(b.attn.wq.weight, DTensor) for b in m.layers] == [True, True, False]
    loss.backward()
    assert torch.isfinite(m.tok_emb.weight.grad.full_tensor()).all()
