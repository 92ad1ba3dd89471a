"""The one model file: every family of the registry is a `GPT` built from a `Config`.

Architecture is chosen only by explicit Config fields (norm type, MLP type, residual layout, RoPE
settings, sliding windows, softcapping, ...), never by a model's name. Parameter names follow
LitGPT 0.5.x checkpoints (`transformer.h.{i}.attn.qkv.weight`, ...), so `lit_model.pth` files load
both ways.

Shapes: B batch, T query length, S key length, C n_embd, nh n_head, ng n_query_groups, hs head_size.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.config import Config


class GPT(nn.Module):
    """A decoder-only transformer. `forward(idx)` returns logits of shape (B, T, padded_vocab_size)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        assert config.padded_vocab_size is not None
        self.config = config
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=config.lm_head_bias)
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                h=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
                ln_f=build_norm(config, config.n_embd),
            )
        )
        if config.learned_pos_embedding:
            self.transformer["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        # nn.Embedding's N(0, 1) makes huge logits through a tied head (and float32 denormals in its
        # gradients, which are very slow on CPUs): use the usual std of 0.02 instead
        nn.init.normal_(self.transformer.wte.weight, std=0.02)
        if config.tie_embeddings:
            self.lm_head.weight = self.transformer.wte.weight
        self.max_seq_length = config.block_size
        self.mask_cache: Optional[torch.Tensor] = None

    # ----------------------------------------------------------------------------------------------
    # RoPE caches and the sequence length the model is prepared for
    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        """Sets how many positions the RoPE cache (and later KV caches) cover; at most `block_size`."""
        if value > self.config.block_size:
            raise ValueError(
                f"max_seq_length={value} is larger than the model's block_size={self.config.block_size}"
            )
        self._max_seq_length = value
        if not hasattr(self, "cos") or self.cos.size(0) != value:
            self.reset_rope_cache()

    def reset_rope_cache(self, device: Optional[torch.device] = None) -> None:
        """(Re)builds the cos/sin tables: one for global layers and, if set, one for local layers."""
        if device is None:
            device = self.lm_head.weight.device
            if device.type == "meta":
                device = torch.device("cpu")
        cos, sin = build_rope_cache(self.config, self._max_seq_length, device, local=False)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        if self.config.rope_local_base_freq is not None:
            cos, sin = build_rope_cache(self.config, self._max_seq_length, device, local=True)
        self.register_buffer("cos_local", cos, persistent=False)
        self.register_buffer("sin_local", sin, persistent=False)

    def _apply(self, fn, recurse=True):
        # keep the RoPE tables in float32 whatever the model's dtype (precision of positions)
        out = super()._apply(fn, recurse)
        for name in ("cos", "sin", "cos_local", "sin_local"):
            t = getattr(self, name, None)
            if t is not None and t.is_floating_point() and t.dtype != torch.float32 and t.device.type != "meta":
                setattr(self, name, t.float())
        return out

    # ----------------------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        input_pos: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        lm_head_chunk_size: int = 0,
        logits_at: Optional[torch.Tensor] = None,
        positions: Optional[torch.Tensor] = None,
        segment_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor | list[torch.Tensor]:
        """Runs the model.

        Args:
            idx: token ids, (B, T).
            input_pos: positions of the tokens, (T,) shared by the batch or (B, T) per sequence. When
                given, keys and values are written into the KV caches (see `set_kv_cache`) at these
                positions and the queries attend to the cache. When None, positions are 0..T-1 and no
                cache is used (training).
            key_padding_mask: optional (B, S) bool, False where a cache slot holds padding that no query
                may attend to (batched generation of prompts of different lengths).
            lm_head_chunk_size: if > 0, returns the logits as a list of chunks along T (saves memory).
            logits_at: optional (B,) index into T per row: only those positions go through the final norm
                and the LM head, and the logits are (B, 1, padded_vocab_size) (prefill of long prompts).
            positions: optional (B, T) RoPE / position-embedding positions of a training forward (no cache),
                e.g. restarting at 0 for each sample of a packed sequence.
            segment_ids: optional (B, T) sample index of each token of a packed sequence: attention stays
                inside a segment (block-diagonal causal mask). Padding (-1) attends only to padding.

        Returns:
            logits (B, T, padded_vocab_size), or a list of chunks of it.
        """
        B, T = idx.shape
        cfg = self.config
        if input_pos is None:
            if T > self.max_seq_length:
                raise ValueError(f"Cannot forward sequence of length {T}, max_seq_length is {self.max_seq_length}")
            pos = torch.arange(T, device=idx.device) if positions is None else positions
        elif positions is not None or segment_ids is not None:
            raise ValueError("positions and segment_ids are for forwards without a KV cache (input_pos=None)")
        else:
            pos = input_pos
        cos, sin = self.cos[pos], self.sin[pos]  # (T, rope_n_elem) or (B, T, rope_n_elem)
        cos_l, sin_l = self.cos_local[pos], self.sin_local[pos]

        if segment_ids is None:
            mask, mask_local = self._build_masks(pos, input_pos is not None, key_padding_mask)
        else:
            mask, mask_local = self._segment_masks(segment_ids)

        x = self.transformer.wte(idx)  # (B, T, C)
        if cfg.learned_pos_embedding:
            x = x + self.transformer.wpe(pos)
        if cfg.scale_embeddings:
            x = x * torch.tensor(cfg.n_embd**0.5, dtype=x.dtype)

        for block in self.transformer.h:
            attn = block.attn
            layer_mask = mask_local if attn.sliding_window is not None else mask
            if attn.uses_local_rope:
                x = block(x, cos_l, sin_l, layer_mask, input_pos)
            else:
                x = block(x, cos, sin, layer_mask, input_pos)
        if logits_at is not None:
            x = x[torch.arange(B, device=x.device), logits_at].unsqueeze(1)  # (B, 1, C)
        x = self.transformer.ln_f(x)
        if lm_head_chunk_size > 0:
            return [self._head(chunk) for chunk in x.split(lm_head_chunk_size, dim=1)]
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        cap = self.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def _build_masks(
        self, pos: torch.Tensor, use_cache: bool, key_padding_mask: Optional[torch.Tensor]
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Boolean attention masks (True = attend) for global and sliding-window layers.

        Each is None (plain causal attention), (T, S) or (B, 1, T, S). A query at position p sees the
        key slots j <= p, and on sliding-window layers only those with j > p - sliding_window.
        """
        window = self.config.sliding_window_size if self.config.has_sliding_layers else None
        if not use_cache and key_padding_mask is None and window is None:
            return None, None
        S = self._cache_len(pos) if use_cache else pos.size(-1)
        slots = torch.arange(S, device=pos.device)
        p = pos.unsqueeze(-1)  # (T, 1) or (B, T, 1)
        mask = slots <= p  # (T, S) or (B, T, S)
        if mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, T, S)
        if key_padding_mask is not None:
            mask = mask & key_padding_mask[:, None, None, :S]
        mask_local = None
        if window is not None:
            too_old = slots <= p - window
            mask_local = mask & ~(too_old.unsqueeze(1) if too_old.dim() == 3 else too_old)
        if not use_cache and key_padding_mask is None:
            mask = None  # global layers of a training forward keep the fast causal path
        return mask, mask_local

    def _segment_masks(self, segment_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block-diagonal causal masks (B, 1, T, T) of packed sequences: token i sees token j <= i of its own
        segment (and, on sliding-window layers, only the last `sliding_window_size` of them)."""
        T = segment_ids.size(1)
        idx = torch.arange(T, device=segment_ids.device)
        causal = idx[None, :] <= idx[:, None]  # (T, T)
        mask = (causal & (segment_ids[:, :, None] == segment_ids[:, None, :])).unsqueeze(1)
        if not self.config.has_sliding_layers:
            return mask, mask
        recent = idx[None, :] > idx[:, None] - self.config.sliding_window_size
        return mask, mask & recent

    def _cache_len(self, pos: torch.Tensor) -> int:
        kv = self.transformer.h[0].attn.kv_cache
        return kv.k.size(2) if kv is not None else pos.size(-1)

    # ----------------------------------------------------------------------------------------------
    # KV cache
    def set_kv_cache(
        self,
        batch_size: int,
        max_seq_length: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """Allocates a static KV cache of `max_seq_length` slots (default: the model's) in every layer."""
        max_seq_length = max_seq_length or self.max_seq_length
        if max_seq_length > self.max_seq_length:
            raise ValueError(f"KV cache length {max_seq_length} exceeds max_seq_length={self.max_seq_length}")
        device = device or self.lm_head.weight.device
        if dtype is None:  # the compute dtype: quantized weights are integers, norms and scales are not
            floats = [t.dtype for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
            dtype = floats[0] if floats else torch.get_default_dtype()
        for block in self.transformer.h:
            block.attn.kv_cache = KVCache(
                batch_size, self.config.n_query_groups, max_seq_length, self.config.head_size, device, dtype
            )

    def clear_kv_cache(self) -> None:
        """Frees the KV caches."""
        for block in self.transformer.h:
            block.attn.kv_cache = None

    @classmethod
    def from_name(cls, name: str, **overrides) -> "GPT":
        """Builds a randomly initialised model of the registry config `name` (fields overridable)."""
        return cls(Config.from_name(name, **overrides))

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not trainable_only}
        return sum(p.numel() for p in params.values())


class Block(nn.Module):
    """One transformer layer: attention and MLP with the residual layout the config asks for."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        if not config.parallel_residual and config.shared_attention_norm:
            raise NotImplementedError("shared_attention_norm=True requires parallel_residual=True")
        self.norm_1 = build_norm(config, config.n_embd) if config.norm_1 else nn.Identity()
        self.attn = CausalSelfAttention(config, block_idx)
        self.post_attention_norm = build_norm(config, config.n_embd) if config.post_attention_norm else nn.Identity()
        self.norm_2 = (
            None if config.shared_attention_norm
            else (build_norm(config, config.n_embd) if config.norm_2 else nn.Identity())
        )
        self.mlp = build_mlp(config)
        self.post_mlp_norm = build_norm(config, config.n_embd) if config.post_mlp_norm else nn.Identity()
        self.parallel_residual = config.parallel_residual

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        x_normed = self.norm_1(x)
        attn_out = self.post_attention_norm(self.attn(x_normed, cos, sin, mask, input_pos))
        if self.parallel_residual:
            mlp_in = x_normed if self.norm_2 is None else self.norm_2(x)
            return x + attn_out + self.post_mlp_norm(self.mlp(mlp_in))
        x = x + attn_out
        return x + self.post_mlp_norm(self.mlp(self.norm_2(x)))


class CausalSelfAttention(nn.Module):
    """Multi-head, grouped-query or multi-query attention with a fused qkv projection."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        self.config = config
        hs, nh, ng = config.head_size, config.n_head, config.n_query_groups
        self.qkv = nn.Linear(config.n_embd, (nh + 2 * ng) * hs, bias=config.bias or config.attn_bias)
        self.proj = nn.Linear(nh * hs, config.n_embd, bias=config.bias)
        if config.norm_qk:
            if config.norm_qk_type == "olmo2":  # norms over all heads together
                self.norm_q = build_norm(config, nh * hs)
                self.norm_k = build_norm(config, ng * hs)
            else:  # one norm shared by the heads, over head_size
                self.norm_q = build_norm(config, hs)
                self.norm_k = build_norm(config, hs)
        self.sliding_window = config.sliding_window_size if config.is_sliding_layer(block_idx) else None
        self.uses_local_rope = config.uses_local_rope(block_idx)
        self.kv_cache: Optional[KVCache] = None
        self.block_idx = block_idx

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        cfg = self.config
        q, k, v = self.qkv_heads(x)

        n_rope = cfg.rope_n_elem
        if n_rope > 0:
            if cos.dim() == 3:  # per-sequence positions (B, T, n) -> (B, 1, T, n)
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            q, k = self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin)

        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos was given but the KV cache is not set: call model.set_kv_cache()")
            k, v = self.kv_cache.update(input_pos, k, v)  # (B, ng, S, hs)

        y = self.attend(q, k, v, mask)  # (B, T, nh, hs)... returned as (B, T, nh * hs)
        return self.proj(y)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projects x (B, T, C) to query (B, nh, T, hs), key and value (B, ng, T, hs) heads, with the qk norms
        applied and before RoPE (adapters project their prefix through it too)."""
        cfg = self.config
        B, T, _ = x.shape
        hs, nh, ng = cfg.head_size, cfg.n_head, cfg.n_query_groups
        qkv = self.qkv(x)  # (B, T, (nh + 2 ng) hs)
        q, k, v = qkv.split((nh * hs, ng * hs, ng * hs), dim=-1)
        if cfg.norm_qk and cfg.norm_qk_type == "olmo2":
            q, k = self.norm_q(q), self.norm_k(k)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, ng, hs).transpose(1, 2)  # (B, ng, T, hs)
        v = v.view(B, T, ng, hs).transpose(1, 2)  # (B, ng, T, hs)
        if cfg.norm_qk and cfg.norm_qk_type != "olmo2":
            q, k = self.norm_q(q), self.norm_k(k)
        return q, k, v

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE on the first `rope_n_elem` features of each head of x (B, heads, T, hs); kernels override it."""
        return apply_rope_partial(x, cos, sin, self.config.rope_n_elem)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Scaled dot-product attention. q (B, nh, T, hs), k/v (B, ng, S, hs) -> (B, T, nh * hs)."""
        cfg = self.config
        B, nh, T, hs = q.shape
        scale = 1.0 / math.sqrt(cfg.attention_scores_scalar or hs)
        if cfg.attention_logit_softcapping is not None:
            y = self._eager_attention(q, k, v, mask, scale, cfg.attention_logit_softcapping)
        else:
            if mask is None:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=nh != k.size(1))
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=nh != k.size(1))
        return y.transpose(1, 2).reshape(B, T, nh * hs)

    @staticmethod
    def _eager_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: Optional[torch.Tensor],
        scale: float,
        softcap: float,
    ) -> torch.Tensor:
        nh, ng = q.size(1), k.size(1)
        if nh != ng:
            k = k.repeat_interleave(nh // ng, dim=1)
            v = v.repeat_interleave(nh // ng, dim=1)
        scores = (q @ k.transpose(-2, -1)) * scale  # (B, nh, T, S)
        scores = torch.tanh(scores / softcap) * softcap
        if mask is None:
            T, S = scores.shape[-2:]
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return probs @ v  # (B, nh, T, hs)


class KVCache(nn.Module):
    """A preallocated key/value cache, written by index at `input_pos`."""

    def __init__(
        self, batch_size: int, n_groups: int, max_len: int, head_size: int, device, dtype
    ) -> None:
        super().__init__()
        shape = (batch_size, n_groups, max_len, head_size)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes k, v (B, ng, T, hs) at positions `input_pos` ((T,) or (B, T)); returns the full cache."""
        k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        B = k.size(0)
        if input_pos.dim() == 1:
            self.k[:B].index_copy_(2, input_pos, k)
            self.v[:B].index_copy_(2, input_pos, v)
        else:  # per-sequence positions: scatter each row
            idx = input_pos[:, None, :, None].expand(-1, k.size(1), -1, k.size(3))
            self.k[:B].scatter_(2, idx, k)
            self.v[:B].scatter_(2, idx, v)
        return self.k[:B], self.v[:B]


# --------------------------------------------------------------------------------------------------
# MLPs
class GptNeoxMLP(nn.Module):
    """fc -> GELU -> proj."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__()
        size = intermediate_size or config.intermediate_size
        self.fc = nn.Linear(config.n_embd, size, bias=config.bias)
        self.proj = nn.Linear(size, config.n_embd, bias=config.bias)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class LLaMAMLP(nn.Module):
    """SwiGLU: proj(silu(fc_1(x)) * fc_2(x))."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__()
        size = intermediate_size or config.intermediate_size
        self.fc_1 = nn.Linear(config.n_embd, size, bias=config.bias)
        self.fc_2 = nn.Linear(config.n_embd, size, bias=config.bias)
        self.proj = nn.Linear(size, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(self.fc_1(x)) * self.fc_2(x))


class GemmaMLP(LLaMAMLP):
    """GeGLU: proj(gelu(fc_1(x)) * fc_2(x))."""

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc_1(x), approximate=self.approximate) * self.fc_2(x))


class LLaMAMoE(nn.Module):
    """Mixture of experts: a linear router picks `n_expert_per_token` SwiGLU experts per token."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.n_expert, bias=False)
        size = config.moe_intermediate_size or config.intermediate_size
        self.experts = nn.ModuleList(LLaMAMLP(config, size) for _ in range(config.n_expert))
        self.n_expert_per_token = config.n_expert_per_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.view(-1, C)  # (B*T, C)
        router = self.gate(x)  # (B*T, n_expert)
        probs, indices = torch.topk(router.float().softmax(dim=-1), self.n_expert_per_token)  # (B*T, k)
        probs = (probs / probs.sum(dim=-1, keepdim=True)).to(x.dtype)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            token_idx, slot = torch.where(indices == e)
            if token_idx.numel() == 0:
                continue
            y.index_add_(0, token_idx, expert(x[token_idx]) * probs[token_idx, slot, None])
        return y.view(B, T, C)


MLP_CLASSES = {"GptNeoxMLP": GptNeoxMLP, "LLaMAMLP": LLaMAMLP, "GemmaMLP": GemmaMLP, "LLaMAMoE": LLaMAMoE}


def build_mlp(config: Config) -> nn.Module:
    """The MLP named by `config.mlp_class_name`."""
    return MLP_CLASSES[config.mlp_class_name](config)


# --------------------------------------------------------------------------------------------------
# Norms
class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32. `add_unit_offset` scales by (1 + weight) (Gemma)."""

    def __init__(self, size: int, eps: float = 1e-6, add_unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.add_unit_offset = add_unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        weight = (1 + self.weight.float()) if self.add_unit_offset else self.weight.float()
        return (x * weight).to(dtype)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)


def build_norm(config: Config, size: int) -> nn.Module:
    """The norm named by `config.norm_class_name` over the last `size` features."""
    if config.norm_class_name == "RMSNorm":
        return RMSNorm(size, eps=config.norm_eps, add_unit_offset=config.rmsnorm_add_unit_offset)
    if config.norm_class_name == "LayerNorm":
        return nn.LayerNorm(size, eps=config.norm_eps, elementwise_affine=config.norm_affine)
    raise ValueError(f"Unknown norm_class_name {config.norm_class_name!r}; expected 'LayerNorm' or 'RMSNorm'")


# --------------------------------------------------------------------------------------------------
# RoPE
def rope_inv_freq(config: Config, local: bool = False) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (n_elem // 2,) for RoPE and the attention factor that scales cos/sin.

    Global layers use `rope_base` with `rope_adjustments` (linear, llama3 or yarn scaling); local
    (sliding-window) layers use `rope_local_base_freq` without scaling when it is set.
    """
    n_elem = config.rope_n_elem
    base = config.rope_local_base_freq if local else config.rope_base
    inv_freq = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float64) / n_elem))
    adj = None if local else config.rope_adjustments
    attention_factor = 1.0
    if not adj:
        return inv_freq.float(), attention_factor
    rope_type = adj.get("rope_type", "llama3" if "low_freq_factor" in adj else "linear")
    factor = float(adj["factor"])
    if rope_type == "linear":
        inv_freq = inv_freq / factor
    elif rope_type == "llama3":
        old_len = adj["original_max_seq_len"]
        low_wavelen = old_len / adj["low_freq_factor"]
        high_wavelen = old_len / adj["high_freq_factor"]
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
        smooth = (old_len / wavelen - adj["low_freq_factor"]) / (adj["high_freq_factor"] - adj["low_freq_factor"])
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv_freq = torch.where(is_medium, smoothed, scaled)
    elif rope_type == "yarn":
        old_len = adj["original_max_seq_len"]
        beta_fast, beta_slow = adj.get("beta_fast", 32.0), adj.get("beta_slow", 1.0)

        def correction_dim(n_rot: float) -> float:
            return (n_elem * math.log(old_len / (n_rot * 2 * math.pi))) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if adj.get("truncate", True):  # round the ramp's ends to whole dimensions (YaRN's default)
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, n_elem - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(n_elem // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
        extrapolation = 1 - ramp
        inv_freq = (inv_freq / factor) * (1 - extrapolation) + inv_freq * extrapolation
        attention_factor = adj.get("attention_factor") or (0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0)
    else:
        raise ValueError(f"Unknown rope_adjustments rope_type {rope_type!r}; expected linear, llama3 or yarn")
    return inv_freq.float(), attention_factor


def build_rope_cache(
    config: Config, seq_len: int, device: Optional[torch.device] = None, local: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (seq_len, rope_n_elem), float32."""
    with torch.device("cpu"):  # computed on the CPU even under a `torch.device("meta")` context
        inv_freq, attention_factor = rope_inv_freq(config, local)
        positions = torch.arange(seq_len, dtype=torch.float32) / config.rope_condense_ratio
        freqs = torch.outer(positions, inv_freq)  # (seq_len, n_elem // 2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, n_elem)
        cos, sin = emb.cos() * attention_factor, emb.sin() * attention_factor
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates x (..., T, n) by the angles in cos/sin (T, n), the rotate-half (GPT-NeoX) layout."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def apply_rope_partial(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int) -> torch.Tensor:
    """RoPE on the first `n_elem` features of each head, the rest passed through."""
    if n_elem == x.size(-1):
        return apply_rope(x, cos, sin)
    return torch.cat((apply_rope(x[..., :n_elem], cos, sin), x[..., n_elem:]), dim=-1)
