"""Batches of `Supervised` examples: k examples packed in one row, or a right-padded collate.

Packing is what makes short-`lsp` runs as cheap per token as long ones: on an H200 (4B→1.7B shape)
one 1024-token row runs at 0.45× the tokens/s of a 4096-token row (docs/design.md §4b). Packing is only
correct if the examples in a row cannot see each other, and `position_ids` alone do not do that:
with transformers 5.24 a tiny random Qwen3's logits (of order 0.5) for a packed row differ from
separate runs by 0.55-0.66 (max abs) on CPU, and by 7.6 on an H200 (4B→1.7B shape). What isolates them is the attention mask:
- `sdpa` / `eager`: a dense 4D float block-diagonal causal mask [B, 1, T, T] (0 allowed,
  finfo(dtype).min blocked) plus restarting `position_ids`: packed == separate to 2e-7 (sdpa and eager alike). It costs
  T² entries per row (4096 tokens: 64 MiB in fp32) and ran at 11.6k tok/s on the H200. A bool 4D
  mask under `eager` is not isolated; the float one is.
- `flex_attention`: a `BlockMask` (block-sparse, a few KiB) passed as `attention_mask`: isolated
  and the fastest measured path, 14.2k tok/s on the H200 versus 13.7k for one causal 4096 row and
  6.0k for four separate 1024 rows. On CPU it runs forward only (backward raises
  NotImplementedError), hence `resolve_attention("auto", ...)` picks it on CUDA only.
transformers passes any 4D tensor or BlockMask `attention_mask` through unchanged, so the model must
be loaded with the same `attn_implementation` the mask was built for.

Each item's last label is already -100 (supervision.py), so concatenating labels never asks one
example to predict the first token of the next.

Shapes: B = rows in the batch, T = tokens per row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from kdlite.chat import ENDOFTEXT
from kdlite.data.supervision import IGNORE_INDEX, Supervised

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask

ATTN_IMPLS = ("sdpa", "eager", "flex_attention")
PAD_SEGMENT = -1


def _check_items(items: Sequence[Supervised]) -> None:
    if not items:
        raise ValueError("cannot batch zero examples")
    for item in items:
        if len(item.input_ids) != len(item.labels):
            raise ValueError(
                f"{item.source_id}: {len(item.input_ids)} input_ids but {len(item.labels)} labels"
            )
        if not item.input_ids:
            raise ValueError(f"{item.source_id}: empty example")


def pack(items: Sequence[Supervised]) -> dict[str, Tensor]:
    """Concatenate `items` into one row (B = 1); position_ids restart at 0 for each item."""
    _check_items(items)
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    segment_ids: list[int] = []
    for index, item in enumerate(items):
        n = len(item.input_ids)
        input_ids += item.input_ids
        labels += item.labels
        position_ids += range(n)
        segment_ids += [index] * n
    return {
        "input_ids_BT": torch.tensor([input_ids], dtype=torch.long),
        "labels_BT": torch.tensor([labels], dtype=torch.long),
        "position_ids_BT": torch.tensor([position_ids], dtype=torch.long),
        "segment_ids_BT": torch.tensor([segment_ids], dtype=torch.long),
    }


def pad_collate(items: Sequence[Supervised], pad_id: int) -> dict[str, Tensor]:
    """One item per row (B = len(items)), right-padded to the longest.

    Pads: input_ids `pad_id`, labels -100, segment_ids -1, position_ids continuing the row's count
    (so rotary angles stay in range and the row is plain `arange(T)`).
    """
    _check_items(items)
    batch, width = len(items), max(len(item.input_ids) for item in items)
    input_ids_BT = torch.full((batch, width), pad_id, dtype=torch.long)
    labels_BT = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
    segment_ids_BT = torch.full((batch, width), PAD_SEGMENT, dtype=torch.long)
    position_ids_BT = torch.arange(width, dtype=torch.long).expand(batch, width).clone()
    for row, item in enumerate(items):
        n = len(item.input_ids)
        input_ids_BT[row, :n] = torch.tensor(item.input_ids, dtype=torch.long)
        labels_BT[row, :n] = torch.tensor(item.labels, dtype=torch.long)
        segment_ids_BT[row, :n] = row
    return {
        "input_ids_BT": input_ids_BT,
        "labels_BT": labels_BT,
        "position_ids_BT": position_ids_BT,
        "segment_ids_BT": segment_ids_BT,
    }


def resolve_attention(impl: str, device_type: str) -> str:
    """`auto` -> `flex_attention` on CUDA (fastest isolated path), `sdpa` elsewhere."""
    if impl == "auto":
        return "flex_attention" if device_type == "cuda" else "sdpa"
    if impl not in ATTN_IMPLS:
        raise ValueError(f"unknown attention {impl!r}; expected 'auto' or one of {ATTN_IMPLS}")
    return impl


def attention_mask_for(
    segment_ids_BT: Tensor, impl: str, dtype: torch.dtype = torch.float32
) -> Tensor | BlockMask:
    """The attention mask that isolates the segments of each row, for the model's `impl`.

    Query i may attend key j iff both are in the same segment (>= 0) and j <= i. A padding query
    (segment -1) attends to itself only, so its row of the softmax is never empty (no NaN); its
    output is ignored by the loss (label -100).
    `sdpa`/`eager`: float tensor mask_B1TT (0 allowed, finfo(dtype).min blocked), dtype = the
    model's compute dtype. `flex_attention`: a BlockMask on segment_ids' device (dtype unused).
    """
    if segment_ids_BT.dim() != 2:
        raise ValueError(f"segment_ids must be [B, T], got shape {tuple(segment_ids_BT.shape)}")
    if impl in ("sdpa", "eager"):
        return _dense_mask(segment_ids_BT, dtype)
    if impl == "flex_attention":
        _flex_recompile_headroom()
        return _block_mask(segment_ids_BT)
    raise ValueError(f"no packed-attention mask for {impl!r}; expected one of {ATTN_IMPLS}")


def _dense_mask(segment_ids_BT: Tensor, dtype: torch.dtype) -> Tensor:
    T = segment_ids_BT.shape[1]
    device = segment_ids_BT.device
    q_T1 = torch.arange(T, device=device)[:, None]
    k_1T = torch.arange(T, device=device)[None, :]
    same_BTT = segment_ids_BT[:, :, None] == segment_ids_BT[:, None, :]
    real_key_B1T = (segment_ids_BT >= 0)[:, None, :]
    allowed_BTT = (same_BTT & real_key_B1T & (k_1T <= q_T1)) | (k_1T == q_T1)
    mask_BTT = torch.zeros(allowed_BTT.shape, dtype=dtype, device=device)
    mask_BTT.masked_fill_(~allowed_BTT, torch.finfo(dtype).min)
    return mask_BTT[:, None]


FLEX_RECOMPILE_LIMIT = 64


def _flex_recompile_headroom() -> None:
    """Let the compiled flex_attention recompile as often as a distillation run needs.

    transformers compiles one flex_attention per process, and torch recompiles it for each new
    combination of head shape (teacher and student differ), grad mode (the teacher runs without
    grad), autocast state and sequence length. Past dynamo's default limit of 8 torch runs the
    unfused implementation, which materialises the full [T, T] score matrix: on an H200 (4B -> 1.7B,
    4 x 1024 packed, BENCHMARKS.md 2026-12-04) the limit was hit and the step ran at 2,107 tok/s.
    """
    config, name = torch._dynamo.config, recompile_limit_key()
    if getattr(config, name) < FLEX_RECOMPILE_LIMIT:
        setattr(config, name, FLEX_RECOMPILE_LIMIT)


def recompile_limit_key() -> str:
    """The name of dynamo's recompile limit in this torch (`cache_size_limit` before 2.6)."""
    config = torch._dynamo.config
    return "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"


def _block_mask(segment_ids_BT: Tensor) -> BlockMask:
    from torch.nn.attention.flex_attention import create_block_mask

    B, T = segment_ids_BT.shape

    def mask_mod(b, h, q_idx, kv_idx):
        seg_q = segment_ids_BT[b, q_idx]
        seg_kv = segment_ids_BT[b, kv_idx]
        return ((seg_q == seg_kv) & (seg_kv >= 0) & (kv_idx <= q_idx)) | (kv_idx == q_idx)

    return create_block_mask(mask_mod, B=B, H=None, Q_LEN=T, KV_LEN=T, device=segment_ids_BT.device)


def packed_rows(
    documents: Iterator[str], tokenizer: Any, seq_len: int, batch: int
) -> Iterator[Tensor]:
    """[batch, seq_len] token ids of plain documents for pre-training-style language modelling:
    back to back, each followed by `<|endoftext|>`, a document cut where a row ends and continued in
    the next. Unlike the distillation batches above, attention crosses document boundaries here
    (the tiny bases' pre-training, `kdlite/cli/pretrain.py`, and the rehearsal of their corpus,
    `kdlite/rehearsal.py`)."""
    eos = tokenizer.convert_tokens_to_ids(ENDOFTEXT)
    need = seq_len * batch
    buffer: list[int] = []
    while True:
        while len(buffer) < need:
            buffer.extend(tokenizer(next(documents), add_special_tokens=False)["input_ids"])
            buffer.append(eos)
        rows, buffer = buffer[:need], buffer[need:]
        yield torch.tensor(rows, dtype=torch.long).view(batch, seq_len)
