"""The one model file: every family of the registry is a `GPT` built from a `Config`.

Architecture is chosen only by explicit Config fields (norm type, MLP type, residual layout, RoPE
settings, sliding windows, softcapping, latent attention, ...), never by a model's name. Parameter names
follow LitGPT 0.5.x checkpoints (`transformer.h.{i}.attn.qkv.weight`, ...), so `lit_model.pth` files load
both ways, and the public names of LitGPT's `litgpt.model` (`GPT`, `Block`, `CausalSelfAttention`,
`MultiheadLatentAttention`, the MLPs, `KVCache`, `build_rope_cache`, `build_mask_cache`, `apply_rope`,
`do_softcapping`, `batched_index_select`, `batched_index_copy_`) take LitGPT's arguments.

Shapes: B batch, T query length, S key length, C n_embd, nh n_head, ng n_query_groups, hs head_size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from litgpt.config import Config
from litgpt.utils import CompiledKernel

_HEAD, _WTE = "lm_head.weight", "transformer.wte.weight"


class GPT(nn.Module):
    """A decoder-only transformer. `forward(idx)` returns logits of shape (B, T, padded_vocab_size).

    With `config.tie_embeddings` the LM head shares the token embedding matrix. Loading a state dict whose
    `lm_head.weight` and `transformer.wte.weight` differ (a checkpoint trained untied, as LitGPT always trains)
    unties them first, so the logits are the checkpoint's; `model.config.tie_embeddings` then reads False.
    """

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

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
        self.register_load_state_dict_post_hook(_retie_after_load)
        self.max_seq_length = config.block_size
        self.mask_cache: Optional[torch.Tensor] = None  # LitGPT's attribute; masks are built per forward here

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

    def rope_cache(self, device: Optional[torch.device] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables for `max_seq_length` positions, as `build_rope_cache` returns them: (T, n) each,
        or (T, n, 2) with the local (sliding-window) layers' tables in [..., 1] when `rope_local_base_freq` is set."""
        cfg = self.config
        return build_rope_cache(
            seq_len=self._max_seq_length,
            n_elem=cfg.rope_n_elem,
            device=device,
            base=cfg.rope_base,
            condense_ratio=cfg.rope_condense_ratio,
            extra_config=cfg.rope_adjustments,
            rope_local_base_freq=cfg.rope_local_base_freq,
        )

    def rope_cache_length(self) -> int:
        """Width of the RoPE tables (LitGPT's name): the features of each head RoPE rotates."""
        return self.cos.size(-1)

    def reset_rope_cache(self, device: Optional[torch.device] = None) -> None:
        """(Re)builds the cos/sin buffers: `cos`/`sin` for global layers, `cos_local`/`sin_local` for local ones."""
        if device is None:
            device = self.lm_head.weight.device
            if device.type == "meta":
                device = torch.device("cpu")
        cos, sin = self.rope_cache(device)
        if cos.dim() == 3:  # (T, n, 2): global and local tables
            cos, cos_local = cos.unbind(-1)
            sin, sin_local = sin.unbind(-1)
        else:
            cos_local, sin_local = cos, sin
        self.register_buffer("cos", cos.contiguous(), persistent=False)
        self.register_buffer("sin", sin.contiguous(), persistent=False)
        self.register_buffer("cos_local", cos_local.contiguous(), persistent=False)
        self.register_buffer("sin_local", sin_local.contiguous(), persistent=False)

    def reset_parameters(self) -> None:
        """Rebuilds the RoPE tables (after the model was materialised from the meta device); weights are kept."""
        self.reset_rope_cache()

    def _init_weights(self, module: nn.Module) -> None:
        """LitGPT's initialisation of one module (use with `model.apply(model._init_weights)`): linear and
        embedding weights N(0, 0.02), linear biases zero; other modules are left alone."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def _apply(self, fn, recurse=True):
        # keep the RoPE tables in float32 whatever the model's dtype (precision of positions)
        out = super()._apply(fn, recurse)
        for name in ("cos", "sin", "cos_local", "sin_local"):
            t = getattr(self, name, None)
            if t is not None and t.is_floating_point() and t.dtype != torch.float32 and t.device.type != "meta":
                setattr(self, name, t.float())
        return out

    # ----------------------------------------------------------------------------------------------
    # Tied embeddings and checkpoints
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # Runs before the children load: decide here whether the LM head stays tied to the embedding.
        head_key, wte_key = prefix + _HEAD, prefix + _WTE
        self._tied_while_loading = getattr(self.lm_head, "weight", None) is self.transformer.wte.weight
        if self._tied_while_loading:
            head, wte = state_dict.get(head_key), state_dict.get(wte_key)
            if head is not None and wte is not None and not _same_values(head, wte):
                self.untie_embeddings()
                self._tied_while_loading = False
            elif head is None and wte is not None:  # a tied checkpoint may hold one matrix only
                state_dict[head_key] = wte
            elif wte is None and head is not None:
                state_dict[wte_key] = head
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def untie_embeddings(self) -> None:
        """Gives the LM head its own weight (a copy of the embedding) and sets `config.tie_embeddings=False`."""
        if self.lm_head.weight is self.transformer.wte.weight:
            weight = self.transformer.wte.weight
            self.lm_head.weight = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
        if self.config.tie_embeddings:
            self.config = dataclasses.replace(self.config, tie_embeddings=False)

    # ----------------------------------------------------------------------------------------------
    def forward(
        self,
        idx: torch.Tensor,
        input_pos: Optional[torch.Tensor] = None,
        input_pos_maxp1: Optional[int] = None,
        lm_head_chunk_size: int = 0,
        *,
        key_padding_mask: Optional[torch.Tensor] = None,
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
                cache is read or written (training; a cache that is set stays untouched).
            input_pos_maxp1: optional int, max(input_pos) + 1: only the first that many cache slots are
                attended to (less work early in generation). Ignored without `input_pos`.
            lm_head_chunk_size: if > 0, returns the logits as a list of chunks along T (saves memory).
            key_padding_mask: optional (B, S) bool, False where a cache slot holds padding that no query
                may attend to (batched generation of prompts of different lengths).
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
            input_pos_maxp1 = None
        elif positions is not None or segment_ids is not None:
            raise ValueError("positions and segment_ids are for forwards without a KV cache (input_pos=None)")
        else:
            pos = input_pos
        cos, sin = batched_index_select(self.cos, 0, pos), batched_index_select(self.sin, 0, pos)  # (T, n) / (B, T, n)
        cos_l, sin_l = batched_index_select(self.cos_local, 0, pos), batched_index_select(self.sin_local, 0, pos)

        if segment_ids is None:
            mask, mask_local = self._build_masks(pos, input_pos is not None, key_padding_mask, input_pos_maxp1)
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
                x = block(x, cos_l, sin_l, layer_mask, input_pos, input_pos_maxp1)
            else:
                x = block(x, cos, sin, layer_mask, input_pos, input_pos_maxp1)
        if logits_at is not None:
            x = x[torch.arange(B, device=x.device), logits_at].unsqueeze(1)  # (B, 1, C)
        x = self.transformer.ln_f(x)
        if lm_head_chunk_size > 0:
            return [self._head(chunk) for chunk in x.split(lm_head_chunk_size, dim=1)]
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        if self.config.final_logit_softcapping is not None:
            logits = do_softcapping(logits, self.config.final_logit_softcapping)
        return logits

    def _build_masks(
        self,
        pos: torch.Tensor,
        use_cache: bool,
        key_padding_mask: Optional[torch.Tensor],
        input_pos_maxp1: Optional[int] = None,
    ) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Boolean attention masks (True = attend) for global and sliding-window layers.

        Each is None (plain causal attention), (T, S) or (B, 1, T, S). A query at position p sees the
        key slots j <= p, and on sliding-window layers only those with j > p - sliding_window.
        """
        window = self.config.sliding_window_size if self.config.has_sliding_layers else None
        if not use_cache and key_padding_mask is None and window is None:
            return None, None
        S = self._cache_len(pos) if use_cache else pos.size(-1)
        if input_pos_maxp1 is not None:
            S = min(S, input_pos_maxp1)
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
        rope_cache_length: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """Allocates a static KV cache of `max_seq_length` slots (default: the model's) in every layer.

        A cache longer than the model's `max_seq_length` (at most `block_size`) raises `max_seq_length` to
        match, so the RoPE tables cover every slot. `rope_cache_length` is LitGPT's argument of the keys' RoPE
        width (default: the heads' own layout).
        """
        max_seq_length = max_seq_length or self.max_seq_length
        if max_seq_length > self.config.block_size:
            raise ValueError(
                f"KV cache length {max_seq_length} exceeds the model's block_size={self.config.block_size}"
            )
        if max_seq_length > self.max_seq_length:
            self.max_seq_length = max_seq_length
        device = device or self.lm_head.weight.device
        if dtype is None:  # the compute dtype: quantized weights are integers, norms and scales are not
            floats = [t.dtype for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
            dtype = floats[0] if floats else torch.get_default_dtype()
        for block in self.transformer.h:
            attn = block.attn
            attn.kv_cache = attn.build_kv_cache(batch_size, max_seq_length, rope_cache_length, device, dtype)

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


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two checkpoint tensors hold the same matrix (meta tensors count as the same)."""
    if a is b or a.is_meta or b.is_meta:
        return a.shape == b.shape
    if a.shape != b.shape or a.device != b.device:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.dtype == b.dtype:
        return True  # one tensor saved under both names (a tied model's checkpoint): nothing to read
    return torch.equal(a, b)


def _retie_after_load(model: GPT, incompatible_keys: Any) -> None:
    # load_state_dict(assign=True) replaces both parameters of a tied pair: share them again
    if getattr(model, "_tied_while_loading", False) and model.lm_head.weight is not model.transformer.wte.weight:
        model.lm_head.weight = model.transformer.wte.weight
    model._tied_while_loading = False


class Block(nn.Module):
    """One transformer layer: attention and MLP with the residual layout the config asks for."""

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        if not config.parallel_residual and config.shared_attention_norm:
            raise NotImplementedError("shared_attention_norm=True requires parallel_residual=True")
        self.norm_1 = build_norm(config, config.n_embd) if config.norm_1 else nn.Identity()
        attention_class = MultiheadLatentAttention if config.latent_attention else CausalSelfAttention
        self.attn = attention_class(config, block_idx)
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
        input_pos_maxp1: Optional[int] = None,
    ) -> torch.Tensor:
        x_normed = self.norm_1(x)
        attn_out = self.post_attention_norm(self.attn(x_normed, cos, sin, mask, input_pos, input_pos_maxp1))
        if self.parallel_residual:
            mlp_in = x_normed if self.norm_2 is None else self.norm_2(x)
            return x + attn_out + self.post_mlp_norm(self.mlp(mlp_in))
        x = x + attn_out
        return x + self.post_mlp_norm(self.mlp(self.norm_2(x)))


class _Attention(nn.Module):
    """What every attention layer shares: RoPE, the KV cache, masking, softcapping and the output projection.
    Subclasses define the projections (`qkv_heads`) and which features RoPE rotates (`apply_rope`)."""

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__()
        self.config = config
        self.block_idx = block_idx
        self.sliding_window = config.sliding_window_size if config.is_sliding_layer(block_idx) else None
        self.uses_local_rope = config.uses_local_rope(block_idx)
        self.kv_cache: Optional[KVCache] = None

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        input_pos: Optional[torch.Tensor] = None,
        input_pos_maxp1: Optional[int] = None,
    ) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)
        if self.config.rope_n_elem > 0:
            if cos.dim() == 3:  # per-sequence positions (B, T, n) -> (B, 1, T, n)
                cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            q, k = self.apply_rope(q, cos, sin), self.apply_rope(k, cos, sin)

        if input_pos is not None:
            if self.kv_cache is None:
                raise RuntimeError("input_pos was given but the KV cache is not set: call model.set_kv_cache()")
            k, v = self.kv_cache(input_pos, k, v)  # (B, heads, S, hs)
            if input_pos_maxp1 is not None:
                k, v = k[:, :, :input_pos_maxp1], v[:, :, :input_pos_maxp1]

        y = self.attend(q, k, v, mask)  # (B, T, nh * v_size)
        return self.proj(y)

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Attention of q (B, nh, T, hs) over k, v (B, ng, S, hs) -> (B, T, nh * v's hs)."""
        B, nh, T, _ = q.shape
        return self.scaled_dot_product_attention(q, k, v, mask).reshape(B, T, nh * v.size(-1))

    def scaled_dot_product_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """LitGPT's method: q (B, nh, T, hs), k/v (B, nh or ng, S, hs), `mask` bool (True = attend) or None
        (causal) -> (B, T, nh, hs). Scores are scaled by 1/sqrt(attention_scores_scalar or head size) and
        softcapped when the config says so."""
        cfg = self.config
        nh = q.size(1)
        scale = 1.0 / math.sqrt(cfg.attention_scores_scalar or q.size(-1))
        if cfg.attention_logit_softcapping is not None:
            y = self._eager_attention(q, k, v, mask, scale, cfg.attention_logit_softcapping)
        elif mask is None and short_attention_applies(q, k, v):
            y = short_causal_attention(q, k, v, scale)
        elif mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=nh != k.size(1))
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=nh != k.size(1))
        return y.transpose(1, 2)

    @staticmethod
    def _eager_attention(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: Optional[torch.Tensor],
        scale: float,
        softcap: float,
    ) -> torch.Tensor:
        """Softmax attention with softcapped scores, (B, nh, T, hs) out."""
        nh, ng = q.size(1), k.size(1)
        if nh != ng:
            k = k.repeat_interleave(nh // ng, dim=1)
            v = v.repeat_interleave(nh // ng, dim=1)
        scores = do_softcapping((q @ k.transpose(-2, -1)) * scale, softcap)  # (B, nh, T, S)
        if mask is None:
            T, S = scores.shape[-2:]
            mask = build_mask_cache(S, q.device)[0, 0, S - T :]  # the last T queries of a causal square
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        return probs @ v  # (B, nh, T, hs)

    def _kv_shapes(
        self, batch_size: int, max_seq_length: int, rope_cache_length: Optional[int]
    ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
        raise NotImplementedError

    def build_kv_cache(
        self,
        batch_size: int,
        max_seq_length: int,
        rope_cache_length: Optional[int] = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> "KVCache":
        """A zeroed KV cache of `max_seq_length` slots for this layer (LitGPT's method)."""
        k_shape, v_shape = self._kv_shapes(batch_size, max_seq_length, rope_cache_length)
        return KVCache(k_shape, v_shape, device=device, dtype=dtype,
                       is_sliding_window=self.sliding_window is not None, sliding_window_size=self.sliding_window)


class CausalSelfAttention(_Attention):
    """Multi-head, grouped-query or multi-query attention with a fused qkv projection."""

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
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

    def _kv_shapes(self, batch_size, max_seq_length, rope_cache_length):
        cfg = self.config
        k_size = cfg.head_size if rope_cache_length is None else rope_cache_length + cfg.head_size - cfg.rope_n_elem
        return ((batch_size, cfg.n_query_groups, max_seq_length, k_size),
                (batch_size, cfg.n_query_groups, max_seq_length, cfg.head_size))


class MultiheadLatentAttention(_Attention):
    """DeepSeek's multi-head latent attention (`config.latent_attention`): queries through an optional low-rank
    bottleneck (`q_lora_rank`), keys and values decompressed from a shared `kv_lora_rank` latent, and RoPE on a
    separate `qk_rope_head_dim` slice of each head whose key part is shared by all heads.

    Each head's query and key are [nope (qk_nope_head_dim) | rope (qk_rope_head_dim)]; values have v_head_dim.
    The KV cache holds the decompressed keys and values, like LitGPT's.
    """

    def __init__(self, config: Config, block_idx: int) -> None:
        super().__init__(config, block_idx)
        la = config.latent_attention
        nh = config.n_head
        self.q_lora_rank = la.get("q_lora_rank")
        self.kv_lora_rank = la["kv_lora_rank"]
        self.qk_rope_head_dim = la["qk_rope_head_dim"]
        self.qk_nope_head_dim = la["qk_nope_head_dim"]
        self.v_head_dim = la["v_head_dim"]
        self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        a_bias = config.bias or config.attn_bias
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(config.n_embd, nh * self.qk_head_dim, bias=config.bias)
        else:
            self.q_a_proj = nn.Linear(config.n_embd, self.q_lora_rank, bias=a_bias)
            self.q_a_norm = RMSNorm(self.q_lora_rank, eps=config.norm_eps)
            self.q_b_proj = nn.Linear(self.q_lora_rank, nh * self.qk_head_dim, bias=config.bias)
        self.kv_a_proj_with_mqa = nn.Linear(config.n_embd, self.kv_lora_rank + self.qk_rope_head_dim, bias=a_bias)
        self.kv_a_norm = RMSNorm(self.kv_lora_rank, eps=config.norm_eps)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, nh * (self.qk_nope_head_dim + self.v_head_dim), bias=config.bias)
        self.proj = nn.Linear(nh * self.v_head_dim, config.n_embd, bias=config.bias)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, C) -> q, k (B, nh, T, qk_head_dim) and v (B, nh, T, v_head_dim), before RoPE."""
        B, T, _ = x.shape
        nh, nope, rope = self.config.n_head, self.qk_nope_head_dim, self.qk_rope_head_dim
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_norm(self.q_a_proj(x)))
        q = q.view(B, T, nh, self.qk_head_dim).transpose(1, 2)  # (B, nh, T, nope + rope)
        latent, k_rope = self.kv_a_proj_with_mqa(x).split((self.kv_lora_rank, rope), dim=-1)
        kv = self.kv_b_proj(self.kv_a_norm(latent)).view(B, T, nh, nope + self.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split((nope, self.v_head_dim), dim=-1)  # (B, nh, T, nope), (B, nh, T, v_head_dim)
        k_rope = k_rope.view(B, 1, T, rope).expand(B, nh, T, rope)  # one RoPE key shared by the heads
        return q, torch.cat((k_nope, k_rope), dim=-1), v

    def apply_rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """RoPE on the last `qk_rope_head_dim` features of each head (de-interleaved first with `rope_interleave`)."""
        nope, rope = x.split((self.qk_nope_head_dim, self.qk_rope_head_dim), dim=-1)
        if self.config.rope_interleave:  # pairs (x0, x1), (x2, x3), ... -> halves (x0, x2, ...), (x1, x3, ...)
            rope = torch.cat((rope[..., 0::2], rope[..., 1::2]), dim=-1)
        return torch.cat((nope, apply_rope(rope, cos, sin)), dim=-1)

    def _kv_shapes(self, batch_size, max_seq_length, rope_cache_length):
        nh = self.config.n_head
        return ((batch_size, nh, max_seq_length, self.qk_head_dim), (batch_size, nh, max_seq_length, self.v_head_dim))


class KVCache(nn.Module):
    """A preallocated key/value cache, written by index at `input_pos` (LitGPT's constructor and call).

    Every position keeps its slot, sliding-window layers included (the model masks keys by age), so
    `is_sliding_window` and `sliding_window_size` are recorded but do not shrink the cache.
    """

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

    def __init__(
        self,
        k_shape: tuple[int, int, int, int],
        v_shape: tuple[int, int, int, int],
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
        is_sliding_window: bool = False,
        sliding_window_size: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.register_buffer("k", torch.zeros(k_shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(v_shape, device=device, dtype=dtype), persistent=False)
        self.is_sliding_window = is_sliding_window
        self.sliding_window_size = sliding_window_size
        self.max_cache_len = k_shape[2]

    def forward(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Writes k, v (B, heads, T, hs) at positions `input_pos` ((T,) or (B, T)) in the cache's dtype;
        returns the cache's first B rows, (B, heads, S, hs) each."""
        B = k.size(0)
        k_cache, v_cache = self.k[:B], self.v[:B]
        batched_index_copy_(k_cache, 2, input_pos, k.to(k_cache.dtype))
        batched_index_copy_(v_cache, 2, input_pos, v.to(v_cache.dtype))
        return k_cache, v_cache

    def reset_parameters(self) -> None:
        """Zeroes the cache."""
        self.k.zero_()
        self.v.zero_()


# --------------------------------------------------------------------------------------------------
# MLPs
class GptNeoxMLP(nn.Module):
    """fc -> GELU -> proj."""

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

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

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

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

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

    def __init__(self, config: Config, intermediate_size: Optional[int] = None) -> None:
        super().__init__(config, intermediate_size)
        self.approximate = config.gelu_approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc_1(x), approximate=self.approximate) * self.fc_2(x))


class LLaMAMoE(nn.Module):
    """Mixture of experts: a linear router picks `n_expert_per_token` SwiGLU experts per token.

    The chosen experts' softmax weights are renormalised to sum to 1 (Mixtral, Qwen3-MoE; LitGPT does the same
    whatever `norm_topk_prob` says) and scaled by `routed_scaling_factor`.
    """

    native_decode = False  # routing runs through the PyTorch modules

    def __init__(self, config: Config) -> None:
        super().__init__()
        # checked here, when the MoE is built, so that a registry config can be shrunk field by field
        if config.n_expert < 1 or not 1 <= config.n_expert_per_token <= config.n_expert:
            raise ValueError(
                f"LLaMAMoE needs n_expert >= 1 and 1 <= n_expert_per_token <= n_expert, "
                f"got n_expert={config.n_expert}, n_expert_per_token={config.n_expert_per_token}"
            )
        self.gate = nn.Linear(config.n_embd, config.n_expert, bias=False)
        size = config.moe_intermediate_size or config.intermediate_size
        self.experts = nn.ModuleList(LLaMAMLP(config, size) for _ in range(config.n_expert))
        self.n_expert_per_token = config.n_expert_per_token
        self.routed_scaling_factor = config.routed_scaling_factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        x = x.view(-1, C)  # (B*T, C)
        router = self.gate(x)  # (B*T, n_expert)
        probs, indices = torch.topk(router.float().softmax(dim=-1), self.n_expert_per_token)  # (B*T, k)
        probs = probs * (self.routed_scaling_factor / probs.sum(dim=-1, keepdim=True))
        probs = probs.to(x.dtype)
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
    """Root-mean-square norm over dimension `dim`, computed in float32. `add_unit_offset` scales by (1 + weight)
    (Gemma)."""

    native_decode = True  # litgpt.generate.cpu's native decode step computes this class

    def __init__(self, size: int, dim: int = -1, eps: float = 1e-6, add_unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps
        self.dim = dim
        self.add_unit_offset = add_unit_offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        weight = (1 + self.weight.float()) if self.add_unit_offset else self.weight.float()
        if self.dim in (-1, x.dim() - 1):  # torch's fused kernel (forward and backward ~1.6x faster on CPU)
            return F.rms_norm(x.float(), (x.size(-1),), weight, self.eps).to(dtype)
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + self.eps)
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
# Causal attention of short training sequences on the CPU

SHORT_ATTENTION_MAX_SCORES = 1 << 23
"""The largest B * nh * T * T `short_causal_attention` takes; above it torch's CPU flash kernel is faster
(measured: 2.5-3.5x slower flash at 0.3-1M scores, even at 8M, 1.6x faster flash at 19M), and the saved
probabilities would cost more memory than the speed is worth."""


def short_attention_applies(q: torch.Tensor, k: torch.Tensor, v: Optional[torch.Tensor] = None) -> bool:
    """Whether a causal attention call is a CPU bfloat16 training one (an input needs gradients) short enough for
    `short_causal_attention` (queries and keys the same length; otherwise, and on other devices,
    F.scaled_dot_product_attention)."""
    if q.device.type != "cpu" or not torch.is_grad_enabled() or q.size(2) != k.size(2):
        return False
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    B, nh, T, _ = q.shape
    needs_grad = q.requires_grad or k.requires_grad or (v is not None and v.requires_grad)
    return dtype == torch.bfloat16 and B * nh * T * T <= SHORT_ATTENTION_MAX_SCORES and needs_grad


def short_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal softmax attention of q (B, nh, T, hs) over k, v (B, ng, T, hs) -> (B, nh, T, v's hs), for short
    sequences on the CPU: the scores and the softmax in float32 (the output as accurate as the flash kernel's), the
    products with V and the whole backward pass as batched bfloat16 matrix products (gradients within ~1% mean
    relative error, bfloat16 training accuracy), the queries of a KV group in one product. 2-3x faster than the
    CPU flash kernel at a few hundred tokens (forward + backward); keeps the (bfloat16) probabilities for the
    backward pass."""
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    return _ShortCausalAttention.apply(q, k, v, scale)


def _short_attention_forward(qg: torch.Tensor, kg: torch.Tensor, vg: torch.Tensor, scale: float):
    """qg (G, r*T, hs): the r query heads of each of G = B * ng groups stacked along T; kg, vg (G, T, hs).
    Returns the probabilities (G, r*T, T) in q's dtype and the output (G, r*T, hs)."""
    T, wide = kg.size(1), torch.promote_types(qg.dtype, torch.float32)
    scores = torch.bmm(qg.to(wide), kg.to(wide).transpose(1, 2)) * scale
    query_pos = torch.arange(qg.size(1), device=qg.device) % T
    future = torch.arange(T, device=qg.device)[None, :] > query_pos[:, None]
    probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1).to(qg.dtype)
    return probs, torch.bmm(probs, vg)


def _short_attention_backward(qg, kg, vg, probs, out, grad_out, scale: float):
    """The gradients of `_short_attention_forward`'s output for q, k and v (grouped layouts)."""
    grad_v = torch.bmm(probs.transpose(1, 2), grad_out)
    grad_probs = torch.bmm(grad_out, vg.transpose(1, 2))
    wide = torch.promote_types(qg.dtype, torch.float32)
    row_dot = (grad_out.to(wide) * out.to(wide)).sum(-1, keepdim=True)
    grad_scores = ((grad_probs.to(wide) - row_dot) * probs.to(wide)).to(qg.dtype)
    grad_q = torch.bmm(grad_scores, kg) * scale
    grad_k = torch.bmm(grad_scores.transpose(1, 2), qg) * scale
    return grad_q, grad_k, grad_v


_short_forward_kernel = CompiledKernel(_short_attention_forward, env_var="LITGPT_COMPILE_ATTENTION")
_short_backward_kernel = CompiledKernel(_short_attention_backward, env_var="LITGPT_COMPILE_ATTENTION")


class _ShortCausalAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale: float):
        B, nh, T, hs = q.shape
        ng = k.size(1)
        qg = q.reshape(B * ng, nh // ng * T, hs)
        kg, vg = k.reshape(B * ng, T, hs), v.reshape(B * ng, T, v.size(-1))
        with torch.autocast("cpu", enabled=False):
            probs, out = _short_forward_kernel(qg, kg, vg, scale)
        ctx.save_for_backward(qg, kg, vg, probs, out)
        ctx.scale, ctx.shapes = scale, (q.shape, k.shape, v.shape)
        return out.view(B, nh, T, vg.size(-1))

    @staticmethod
    def backward(ctx, grad):
        qg, kg, vg, probs, out = ctx.saved_tensors
        with torch.autocast("cpu", enabled=False):
            grad_q, grad_k, grad_v = _short_backward_kernel(qg, kg, vg, probs, out, grad.reshape(out.shape), ctx.scale)
        q_shape, k_shape, v_shape = ctx.shapes
        return grad_q.view(q_shape), grad_k.view(k_shape), grad_v.view(v_shape), None


# --------------------------------------------------------------------------------------------------
# Functions of LitGPT's `litgpt.model`, used by the modules above
def do_softcapping(x: torch.Tensor, thresh: float) -> torch.Tensor:
    """thresh * tanh(x / thresh): squashes x smoothly into (-thresh, thresh); same dtype as x."""
    return torch.tanh(x / thresh) * thresh


def build_mask_cache(max_seq_length: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """The causal mask, (1, 1, max_seq_length, max_seq_length) bool, True where a query may attend to a key."""
    ones = torch.ones((max_seq_length, max_seq_length), device=device, dtype=torch.bool)
    return torch.tril(ones).unsqueeze(0).unsqueeze(0)


def batched_index_select(t: torch.Tensor, dim: int, idx: torch.Tensor) -> torch.Tensor:
    """`t.index_select(dim, i)` for every row `i` of `idx` (..., k): returns idx.shape[:-1] + t.shape with
    t.shape[dim] replaced by k. A 1-D idx is a plain `index_select`; `batched_index_select(cos, 0, pos)` with
    positions pos (B, T) gives (B, T, n)."""
    if idx.dim() == 1:
        return t.index_select(dim, idx)
    dim = dim % t.dim()
    out = t.index_select(dim, idx.reshape(-1)).unflatten(dim, idx.shape)  # t[:dim], *idx.shape, t[dim+1:]
    n_batch = idx.dim() - 1
    order = [*range(dim, dim + n_batch), *range(dim), *range(dim + n_batch, out.dim())]
    return out.permute(order)


def batched_index_copy_(t: torch.Tensor, dim: int, idx: torch.Tensor, val: torch.Tensor) -> torch.Tensor:
    """In place, `t.index_copy_(dim, idx, val)`; with idx (*B, k) batched over t's leading dims *B (one row of
    indices per batch entry: `t[b].index_copy_(dim - 1, idx[b], val[b])`). Returns t."""
    if idx.dim() == 1:
        return t.index_copy_(dim, idx, val)
    dim = dim % t.dim()
    n_batch = idx.dim() - 1
    if dim < n_batch or t.shape[:n_batch] != idx.shape[:n_batch]:
        raise ValueError(f"idx {tuple(idx.shape)} must be batched over the leading dims of t {tuple(t.shape)} "
                         f"before dim={dim}")
    shape = [*idx.shape[:n_batch], *([1] * (dim - n_batch)), idx.size(-1), *([1] * (t.dim() - dim - 1))]
    return t.scatter_(dim, idx.reshape(shape).expand(val.shape), val)


# --------------------------------------------------------------------------------------------------
# RoPE
def _rope_inv_freq(n_elem: int, base: float, adjustments: Optional[dict]) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (n_elem // 2,) for RoPE and the attention factor that scales cos/sin.

    `adjustments` (`Config.rope_adjustments`): None, {'factor'} (linear), Llama 3's {'factor',
    'low_freq_factor', 'high_freq_factor', 'original_max_seq_len'}, or {'rope_type': 'yarn', ...}.
    """
    inv_freq = 1.0 / (base ** (torch.arange(0, n_elem, 2, dtype=torch.float64) / n_elem))
    attention_factor = 1.0
    if not adjustments:
        return inv_freq.float(), attention_factor
    adj = adjustments
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
    seq_len: int,
    n_elem: int,
    device: Optional[torch.device] = None,
    base: int = 10000,
    condense_ratio: int = 1,
    extra_config: Optional[dict] = None,
    rope_local_base_freq: Optional[float] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE cos and sin tables (LitGPT's function), float32.

    Args:
        seq_len: number of positions.
        n_elem: features of a head that RoPE rotates (`Config.rope_n_elem`).
        device: where the tables go (computed on the CPU, also under a meta-device context).
        base: RoPE base (`Config.rope_base`).
        condense_ratio: positions are divided by it (`Config.rope_condense_ratio`).
        extra_config: frequency scaling (`Config.rope_adjustments`): linear, Llama 3 or YaRN.
        rope_local_base_freq: when set, a second, unscaled table with this base for local layers (Gemma 3).

    Returns:
        cos, sin: (seq_len, n_elem) each, or (seq_len, n_elem, 2) with the global table in [..., 0] and the
        local one in [..., 1] when `rope_local_base_freq` is set.
    """
    with torch.device("cpu"):  # computed on the CPU even under a `torch.device("meta")` context
        positions = torch.arange(seq_len, dtype=torch.float32) / condense_ratio
        tables = []
        for inv_freq, factor in [_rope_inv_freq(n_elem, base, extra_config)] + (
            [] if rope_local_base_freq is None else [_rope_inv_freq(n_elem, rope_local_base_freq, None)]
        ):
            freqs = torch.outer(positions, inv_freq)  # (seq_len, n_elem // 2)
            emb = torch.cat((freqs, freqs), dim=-1)  # (seq_len, n_elem)
            tables.append((emb.cos() * factor, emb.sin() * factor))
        if len(tables) == 1:
            cos, sin = tables[0]
        else:
            cos, sin = torch.stack([c for c, _ in tables], dim=-1), torch.stack([s for _, s in tables], dim=-1)
    return cos.to(device), sin.to(device)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates all features of x (B, heads, T, n) by the angles in cos/sin, the rotate-half (GPT-NeoX) layout;
    float32 arithmetic, x's dtype out.

    cos/sin: (T, n) shared by the batch, (B, T, n) per sequence (LitGPT's layout) or (B, 1, T, n).
    """
    if cos.dim() == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    rotated = torch.cat((-x2, x1), dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


def apply_rope_partial(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_elem: int) -> torch.Tensor:
    """RoPE on the first `n_elem` features of each head, the rest passed through."""
    if n_elem == x.size(-1):
        return apply_rope(x, cos, sin)
    return torch.cat((apply_rope(x[..., :n_elem], cos, sin), x[..., n_elem:]), dim=-1)
