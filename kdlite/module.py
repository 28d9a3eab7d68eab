"""`DistillModule`: the Lightning adapter around kdlite's math.

One training step = teacher forward (frozen, eval, no grad; skipped when lam = 0) + student
forward + `distill_loss_chunked` on the last hidden states, with the divergence of `LossSettings`.
Nothing here computes a loss itself.

Normalisation is exact across micro-batches and devices: every batch carries the global counts of
its optimizer step (`step_examples`, `step_tokens`, computed by the data module, which decides what
shares a step), so each micro-batch's loss is its share of the step's sum. Lightning divides a
micro-batch loss by the accumulation count and DDP/FSDP average gradients over ranks; the module
multiplies by both so the optimizer sees the sum, i.e. the same gradient however the step is split.

The tiny pair's rehearsal (`pair.rehearsal`, kdlite/rehearsal.py) adds, once per step on its last
micro-batch, `weight` x the mean cross-entropy of the student on the step's rows of its base
corpus (averaged over ranks), logged as `train/rehearsal_ce` apart from `train/loss`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn

from kdlite.data.packing import attention_mask_for
from kdlite.losses import (
    LossParts,
    distill_loss_chunked,
    distill_loss_chunked_cached,
    token_weights,
)
from kdlite.models import HiddenLM, ModelSpec, decoder_layer_class, load_model
from kdlite.rehearsal import Rehearsal, rehearsal_ce


@dataclass(frozen=True)
class LossSettings:
    lam: float
    temperature: float
    loss_norm: str
    vocab_size: int  # the tokenizer's length: both models' logits are cut to it
    chunk_size: int = 1024
    divergence: str = "forward_kl"  # kdlite.losses.DIVERGENCES (docs/divergences.md)
    jsd_beta: float = 0.5  # divergence=jsd only


@dataclass(frozen=True)
class OptimSettings:
    lr: float = 4e-6
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_ratio: float = 0.1
    fused: bool = False


@dataclass(frozen=True)
class ModelSettings:
    student: ModelSpec
    teacher: ModelSpec | None  # None when lam = 0: the teacher is never loaded
    teacher_dtype: torch.dtype = torch.float32
    attention: str = "sdpa"  # resolved attention implementation (packing.resolve_attention)
    activation_checkpointing: bool = False
    compile: bool = False
    teacher_sharding: str = "shard"
    seed: int = 0
    teacher_cache: Any = None  # a kdlite.teacher_cache.TeacherCache: KD targets read, not computed


class DistillModule(L.LightningModule):
    def __init__(
        self,
        models: ModelSettings,
        loss: LossSettings,
        optim: OptimSettings,
        rehearsal: Rehearsal | None = None,
    ) -> None:
        super().__init__()
        self.models = models
        self.loss_settings = loss
        self.optim_settings = optim
        self.rehearsal = rehearsal  # tiny pair only: base documents trained beside (rehearsal.py)
        self.student: HiddenLM | None = None
        self.__dict__["_frozen_teacher"] = None  # see `teacher`
        self._step_sums = torch.zeros(4)  # loss, soft (KL), hard, soft_ce
        self._tokens_seen = 0
        self._global_tokens = 0.0
        self._step_started = time.perf_counter()
        self._val_sums: dict[int, torch.Tensor] = {}
        self._step_row: dict[str, float] = {}  # the last optimizer step's logged metrics
        self.restored_row: dict[str, float] = {}  # the row a resumed checkpoint carried

    @property
    def teacher(self) -> HiddenLM | None:
        """The frozen teacher. Deliberately *not* a registered submodule: checkpoints, DDP's
        start-up broadcast, Lightning's precision conversion and `.train()` never touch it, and a
        save under FSDP never gathers it (a 32B teacher is ~65 GB in bf16). It is placed on the
        device by `configure_model` (sharded) or `on_fit_start` (whole)."""
        return self.__dict__["_frozen_teacher"]

    def set_teacher(self, teacher: HiddenLM | None) -> None:
        """Attach a frozen teacher without registering it (`self.teacher = m` would register)."""
        self.__dict__["_frozen_teacher"] = teacher

    # ---- models ---------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.student is not None:
            return
        s = self.models
        vocab = self.loss_settings.vocab_size
        self.student = HiddenLM(
            load_model(s.student, vocab_size=vocab, attn_implementation=s.attention, seed=s.seed)
        )
        if s.teacher is not None:
            teacher = load_model(
                s.teacher, vocab_size=vocab, dtype=s.teacher_dtype, attn_implementation=s.attention
            )
            self.set_teacher(HiddenLM(teacher).eval().requires_grad_(False))
        self._check_vocab()
        if s.compile:
            self._compile_layers()
        if s.activation_checkpointing:
            lm: Any = self.student.lm
            lm.gradient_checkpointing_enable({"use_reentrant": False})
        if self.device_mesh is not None:  # ModelParallelStrategy (FSDP2): shard each model
            self._shard(self.device_mesh)

    def _compile_layers(self) -> None:
        """Compile each decoder block in place (same parameters, same state_dict keys)."""
        assert self.student is not None
        layer_cls = decoder_layer_class(self.student.lm)
        for model in (self.student, self.teacher):
            if model is None:
                continue
            for module in model.modules():
                if isinstance(module, layer_cls):
                    module.compile()

    def _check_vocab(self) -> None:
        vocab = self.loss_settings.vocab_size
        for role, model in (("student", self.student), ("teacher", self.teacher)):
            if model is not None and model.head_weight.shape[0] < vocab:
                raise ValueError(
                    f"{role} has {model.head_weight.shape[0]} output rows but the tokenizer has "
                    f"{vocab} ids: this model was not trained with this tokenizer"
                )

    def _shard(self, mesh: Any) -> None:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        assert self.student is not None
        dp_mesh = mesh["data_parallel"]
        # Compute dtype follows trainer.precision: bf16-mixed gathers bf16 copies of the fp32
        # master shards; 32-true computes in fp32. Gradients are reduced in fp32 either way.
        mp = MixedPrecisionPolicy(param_dtype=self._mixed_dtype(), reduce_dtype=torch.float32)
        layer_cls = decoder_layer_class(self.student.lm)
        for module in self.student.modules():
            if isinstance(module, layer_cls):
                fully_shard(module, mesh=dp_mesh, mp_policy=mp)
        fully_shard(self.student, mesh=dp_mesh, mp_policy=mp)
        if self.teacher is not None and self.models.teacher_sharding == "shard":
            # The teacher is stored in its own dtype (no master copy) and never runs a backward:
            # each layer is gathered for its forward and freed right after. Its root group
            # (embeddings, final norm, head) is freed by `_reshard` once the loss has used it.
            for module in self.teacher.modules():
                if isinstance(module, layer_cls):
                    fully_shard(module, mesh=dp_mesh)
            fully_shard(self.teacher, mesh=dp_mesh)
        elif self.teacher is not None:
            self.teacher.to(self.device)

    def _mixed_dtype(self) -> torch.dtype | None:
        precision = str(getattr(self.trainer, "precision", "32-true")) if self._trainer else "32"
        if precision.startswith("bf16-mixed"):
            return torch.bfloat16
        if precision.startswith("16-mixed"):
            return torch.float16
        return None

    def on_fit_start(self) -> None:
        teacher = self.teacher
        if teacher is not None and not _is_fsdp(teacher):
            teacher.to(self.device)

    # ---- loss -----------------------------------------------------------------------------
    def _forward_loss(self, batch: dict[str, Any], loss_norm: str) -> tuple[LossParts, int]:
        ls = self.loss_settings
        segments = batch["segment_ids_BT"]
        mask = None
        if _needs_mask(batch):
            mask = attention_mask_for(segments, self.models.attention, dtype=self._compute_dtype())
        weights = token_weights(
            batch["labels_BT"],
            segments,
            loss_norm,
            step_examples=batch["step_examples"],
            step_tokens=batch["step_tokens"],
        )
        assert self.student is not None, "configure_model() builds the student first"
        inputs = (batch["input_ids_BT"], batch["position_ids_BT"], mask)
        settings: dict[str, Any] = {
            "lam": ls.lam,
            "temperature": ls.temperature,
            "vocab_size": ls.vocab_size,
            "chunk_size": ls.chunk_size,
            "divergence": ls.divergence,
            "jsd_beta": ls.jsd_beta,
        }
        cache = self.models.teacher_cache
        if ls.lam > 0 and cache is not None:  # teacher targets read from disk
            hidden = self.student(*inputs)
            ids, logprobs, rest = cache.lookup(batch, device=hidden.device)
            parts = distill_loss_chunked_cached(
                hidden, self.student.head_weight, ids, logprobs, rest,
                batch["labels_BT"], weights, **settings,
            )  # fmt: skip
        else:  # teacher run online (never when lam = 0)
            teacher_hidden = teacher_head = None
            if ls.lam > 0:
                assert self.teacher is not None, "lam > 0 needs a teacher or a teacher cache"
                with torch.no_grad():
                    teacher_hidden = self.teacher(*inputs)
                    teacher_head = self.teacher.head_weight
            parts = distill_loss_chunked(
                self.student(*inputs), self.student.head_weight, teacher_hidden, teacher_head,
                batch["labels_BT"], weights, **settings,
            )  # fmt: skip
            # The loss has its gradients already (computed in its forward): free the teacher's
            # gathered root group now instead of holding it until the next step.
            _reshard(self.teacher)
        n_tokens = int((segments >= 0).sum())
        return parts, n_tokens

    def _compute_dtype(self) -> torch.dtype:
        precision = str(getattr(self.trainer, "precision", "32-true")) if self._trainer else "32"
        return torch.bfloat16 if "bf16" in precision else torch.float32

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        parts, n_tokens = self._forward_loss(batch, self.loss_settings.loss_norm)
        terms = [parts.loss, parts.soft, parts.hard, parts.soft_ce]
        self._step_sums += torch.stack(terms).detach().float().cpu()
        self._tokens_seen += n_tokens
        loss = parts.loss
        world = self.trainer.world_size
        last_micro = (batch_idx + 1) % self.trainer.accumulate_grad_batches == 0
        ce = None
        if self.rehearsal is not None and last_micro:
            # once per step, on its last micro-batch: weight x this rank's mean CE / world, which
            # the scale below turns into weight x the mean over ranks in the gradient
            assert self.student is not None
            rows = self.rehearsal.rows(self.trainer.global_step, self.global_rank, world)
            ce = rehearsal_ce(self.student, rows.to(self.device), self.loss_settings.vocab_size)
            loss = loss + self.rehearsal.settings.weight * ce / world
        if last_micro:
            self._close_step(None if ce is None else ce.detach().float())
        # Undo Lightning's 1/accumulate and the ranks' gradient averaging: the optimizer must see
        # the step's sum of weighted token losses (see the module docstring).
        scale = self.trainer.accumulate_grad_batches * world
        return loss * scale

    def _close_step(self, rehearsal: torch.Tensor | None = None) -> None:
        """The step's metrics, summed over its micro-batches and ranks, on its last micro-batch.

        Computed here, before the optimizer step, rather than in `on_train_batch_end`: Lightning
        writes `last.ckpt` in the callbacks' `on_train_batch_end`, before the module's hook and
        before the logger, so the checkpoint carries this row and the token count including this
        step, and a kill between the save and the log line loses nothing (training.py merges it).
        """
        sums = self._step_sums.to(self.device)
        tokens = torch.tensor(float(self._tokens_seen), device=self.device)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        elapsed = time.perf_counter() - self._step_started
        self._global_tokens += float(tokens)
        row = {
            "train/loss": float(sums[0]),
            "train/soft": float(sums[1]),
            "train/hard": float(sums[2]),
            # the teacher cross-entropy, the study's logged soft loss (= KL + teacher entropy for
            # the forward KL; the same yardstick whatever loss.divergence trains)
            "train/soft_ce": float(sums[3]),
            "train/tokens_per_s": float(tokens) / max(elapsed, 1e-9),
            "train/tokens_seen": self._global_tokens,
            "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"]),
        }
        if rehearsal is not None:  # this rank's rehearsal CE -> the mean over ranks
            if self.trainer.world_size > 1:
                rehearsal = self.trainer.strategy.reduce(rehearsal, reduce_op="sum")
                rehearsal = rehearsal / self.trainer.world_size
            row["train/rehearsal_ce"] = float(rehearsal)
        if torch.cuda.is_available():
            row["train/peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        self._step_row = {"step": float(self.trainer.global_step), **row}
        self._step_sums.zero_()
        self._tokens_seen = 0

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if (batch_idx + 1) % self.trainer.accumulate_grad_batches or not self._step_row:
            return
        metrics = {k: torch.tensor(v) for k, v in self._step_row.items() if k != "step"}
        self.log_dict(metrics, on_step=True, on_epoch=False, prog_bar=False, rank_zero_only=True)
        self.log(
            "loss",
            metrics["train/loss"],
            prog_bar=True,
            on_step=True,
            logger=False,
            rank_zero_only=True,
        )
        self._step_started = time.perf_counter()

    # ---- validation -----------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(
        self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        # Validation reports the mean over examples of each example's mean token loss, whatever
        # `loss_norm` training uses: batches carry step_examples = 1, so sums are per-example means.
        parts, _ = self._forward_loss(batch, "sequence")
        n = torch.tensor(float(batch["n_weighted_examples"]), device=self.device)
        terms = [parts.loss, parts.soft, parts.hard, parts.soft_ce]
        row = torch.stack([*(t.detach() for t in terms), n]).float()
        self._val_sums[dataloader_idx] = self._val_sums.get(dataloader_idx, 0) + row

    def on_validation_epoch_end(self) -> None:
        # Loader 0 is the validation set cropped like training (as the study did); loader 1, when
        # present, is the same examples un-cropped, comparable across runs with different lsp.
        n_loaders = len(self.trainer.num_val_batches)
        for idx, prefix in ((0, "val"), (1, "val_full")):
            if idx >= n_loaders:
                continue
            sums = self._val_sums.get(idx, torch.zeros(5, device=self.device))
            if self.trainer.world_size > 1:
                sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            count = sums[4].clamp_min(1.0)
            metrics = {
                f"{prefix}/loss": sums[0] / count,
                f"{prefix}/soft": sums[1] / count,
                f"{prefix}/hard": sums[2] / count,
                f"{prefix}/soft_ce": sums[3] / count,
            }
            if n_loaders == 1:  # lsp = 1, left crop: the full set is the cropped set
                metrics.update({k.replace("val/", "val_full/"): v for k, v in metrics.items()})
            self.log_dict(metrics, add_dataloader_idx=False, prog_bar=idx == 0)
        # Forward-only: FSDP2 keeps each root group gathered after a forward (it expects the
        # backward); free them until the next training step.
        _reshard(self.student)
        _reshard(self.teacher)

    # ---- optimizer ------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        o = self.optim_settings
        assert self.student is not None
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": o.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=o.betas, fused=o.fused or None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(o.warmup_ratio * total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(warmup, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ---- checkpoints: the student only ----------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self._global_tokens
        checkpoint["kdlite_step_row"] = dict(self._step_row)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._global_tokens = float(checkpoint.get("tokens_seen", 0.0))
        self.restored_row = dict(checkpoint.get("kdlite_step_row", {}))


def _is_fsdp(module: nn.Module | None) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _reshard(module: nn.Module | None) -> None:
    """Free the gathered parameters of an FSDP2 root group (no-op when not sharded)."""
    if _is_fsdp(module):
        fsdp_module: Any = module
        fsdp_module.reshard()


def _needs_mask(batch: dict[str, Any]) -> bool:
    """A single unpadded example per row needs no mask: plain causal attention is exact."""
    segments = batch["segment_ids_BT"]
    return bool((segments != 0).any())


def warmup_cosine(warmup: int, total: int):
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
