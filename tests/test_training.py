"""The training loop end to end on a tiny random pair (CPU, seconds per run)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import kdlite.module as module_mod
import kdlite.training as training_mod
from kdlite.config import ConfigError, register_configs
from kdlite.models import ModelLoadError

CONF = Path(__file__).resolve().parents[1] / "conf"
register_configs()

# The shipped tiny pair (reasoning teacher, base student) and a small slice of the synthetic corpus
# keep each run to a few seconds; 8 examples per step as 2 micro-batches of 4 exercises gradient accumulation.
FAST = [
    "pair.teacher.bootstrap=false",
    "data.synthetic_size=60",
    "data.train_size=48",
    "data.val_size=8",
    "optim.epochs=1",
    "batch.examples_per_step=8",
    "batch.micro_examples=4",
    "trainer.progress_bar=false",
    "trainer.checkpoint_every=1",
]


def make_cfg(run_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"run_dir={run_dir}", *overrides])


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def curve(run_dir: Path, key: str) -> dict[int, float]:
    return {int(r["step"]): float(r[key]) for r in read_metrics(run_dir) if r.get(key)}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "r"
    training_mod.train(make_cfg(run_dir, "optim.max_steps=4", "trainer.val_check_interval=2"))
    return run_dir


def test_run_directory_describes_itself(finished_run):
    r = finished_run
    for name in ("config.yaml", "overrides.yaml", "git.txt", "manifest.json", "metrics.csv"):
        assert (r / name).is_file(), name
    manifest = json.loads((r / "manifest.json").read_text())
    assert len(manifest["train_ids"]) == 48 and len(manifest["val_ids"]) == 8
    rows = read_metrics(r)
    keys = set().union(*rows)
    for key in (
        "train/loss",
        "train/soft",
        "train/hard",
        "train/soft_ce",
        "val/soft_ce",
        "val_full/soft_ce",
        "train/tokens_per_s",
        "train/tokens_seen",
        "lr",
        "val/loss",
        "val_full/loss",
    ):
        assert key in keys, key
    steps = sorted(curve(r, "train/loss"))
    assert steps == [0, 1, 2, 3]  # one row per optimizer step, not per micro-batch
    for step, loss in curve(r, "train/loss").items():
        soft, hard = curve(r, "train/soft")[step], curve(r, "train/hard")[step]
        assert loss == pytest.approx(0.5 * soft + 0.5 * hard, rel=1e-5)
        assert soft > 0 and hard > 0
        assert curve(r, "train/soft_ce")[step] > soft  # KL + a positive teacher entropy
    assert (r / "checkpoints" / "last.ckpt").is_file() and (
        r / "checkpoints" / "best.ckpt"
    ).is_file()
    ckpt = torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"] and not any(k.startswith("teacher.") for k in ckpt["state_dict"])


def test_export_reloads_and_generates(finished_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    export = finished_run / "export"
    from safetensors import safe_open

    with safe_open(str(export / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118 - safe_open is not iterable
    model = AutoModelForCausalLM.from_pretrained(export, dtype="auto")
    tok = AutoTokenizer.from_pretrained(export)
    gen = GenerationConfig.from_pretrained(export)
    assert model.dtype == torch.bfloat16
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    # The export is the best checkpoint's student, bit for bit (bf16).
    ckpt = torch.load(
        finished_run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True
    )
    w = ckpt["state_dict"]["student.lm.model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, w.to(torch.bfloat16))


def test_teacher_frozen_student_learns(tmp_path):
    cfg = make_cfg(tmp_path / "r", "optim.max_steps=3", "export=false")
    snapshots = {}

    class Snap(L.Callback):
        def on_train_start(self, trainer, pl_module):
            snapshots["module"] = pl_module
            snapshots["teacher"] = {k: v.clone() for k, v in pl_module.teacher.state_dict().items()}
            snapshots["student"] = {k: v.clone() for k, v in pl_module.student.state_dict().items()}
            opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
            assert not any(id(p) in opt_params for p in pl_module.teacher.parameters())
            assert not any(p.requires_grad for p in pl_module.teacher.parameters())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots["teacher_training"] = pl_module.teacher.training
            snapshots["student_training"] = pl_module.student.training

    training_mod.train(cfg, callbacks=[Snap()])
    module = snapshots["module"]
    assert snapshots["teacher_training"] is False and snapshots["student_training"] is True
    for k, v in module.teacher.state_dict().items():
        assert torch.equal(v, snapshots["teacher"][k]), k
    changed = [
        k
        for k, v in module.student.state_dict().items()
        if not torch.equal(v, snapshots["student"][k])
    ]
    assert len(changed) == len(snapshots["student"])


class Stop(Exception):
    pass


def test_the_trainer_takes_its_arguments_from_the_config(tmp_path):
    """`make_trainer` receives what `lightning.Trainer` would; nothing is written before it."""
    seen: dict = {}

    def recording(**kwargs):
        seen.update(kwargs)
        raise Stop

    run = tmp_path / "r"
    cfg = make_cfg(run, "optim.max_steps=5", "optim.grad_clip=0", "trainer.val_check_interval=2")
    with pytest.raises(Stop):
        training_mod.train(cfg, make_trainer=recording, callbacks=[probe := L.Callback()])
    assert seen["accumulate_grad_batches"] == 2  # 8 examples per step as micro-batches of 4
    assert seen["val_check_interval"] == 4  # 2 optimizer steps, counted in micro-batches
    assert seen["max_steps"] == 5 and seen["max_epochs"] == 1
    assert seen["gradient_clip_val"] is None  # grad_clip=0: no clipping
    assert seen["use_distributed_sampler"] is False and seen["num_sanity_val_steps"] == 0
    names = [type(c).__name__ for c in seen["callbacks"]]
    assert names[:2] == ["ModelCheckpoint", "ModelCheckpoint"] and seen["callbacks"][-1] is probe
    assert [type(x).__name__ for x in seen["logger"]] == ["CSVLogger"]
    assert not (run / "config.yaml").exists() and not (run / "status.json").exists()


def test_lam_zero_never_loads_the_teacher(tmp_path, monkeypatch):
    loaded = []
    real = module_mod.load_model

    def spy(spec, **kw):
        loaded.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr(module_mod, "load_model", spy)
    run = tmp_path / "r"
    training_mod.train(make_cfg(run, "lam=0", "optim.max_steps=2", "export=false"))
    assert [s.shape for s in loaded] == ["tiny-student"]
    assert all(v == 0.0 for v in curve(run, "train/soft").values())
    assert all(v > 0 for v in curve(run, "train/hard").values())


def test_lam_one_is_pure_kl(tmp_path):
    run = tmp_path / "r"
    training_mod.train(make_cfg(run, "lam=1", "optim.max_steps=2", "export=false"))
    soft, hard, loss = curve(run, "train/soft"), curve(run, "train/hard"), curve(run, "train/loss")
    assert all(hard[s] == 0.0 and loss[s] == pytest.approx(soft[s]) and soft[s] > 0 for s in loss)


def _first_step_grads(run_dir: Path, *overrides: str) -> dict[str, torch.Tensor]:
    grads: dict[str, torch.Tensor] = {}

    class Grab(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            if not grads:
                for name, p in pl_module.student.named_parameters():
                    grads[name] = p.grad.detach().clone()

    # optim.grad_clip=0: compare raw gradients
    cfg = make_cfg(run_dir, "optim.max_steps=1", "export=false", "optim.grad_clip=0", *overrides)
    training_mod.train(cfg, callbacks=[Grab()])
    return grads


@pytest.mark.parametrize("loss_norm", ["sequence", "token"])
def test_step_gradient_does_not_depend_on_the_micro_batch_split(tmp_path, loss_norm):
    # lsp=0.5 + supervise=a leaves some examples without supervised tokens: the split must still agree.
    common = [f"loss_norm={loss_norm}", "lsp=0.5", "supervise=cot_a"]
    whole = _first_step_grads(tmp_path / "a", *common, "batch.micro_examples=8")
    split = _first_step_grads(tmp_path / "b", *common, "batch.micro_examples=2")
    packed = _first_step_grads(tmp_path / "c", *common, "batch.micro_examples=4", "batch.pack=true")
    assert whole.keys() == split.keys() == packed.keys()
    for name in whole:
        torch.testing.assert_close(split[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(packed[name], whole[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(g.abs().sum() > 0 for g in whole.values())


class Crash(RuntimeError):
    pass


def test_kill_and_resume_reproduces_the_uninterrupted_curve(tmp_path):
    steps = ["optim.max_steps=6", "export=false", "trainer.val_check_interval=3"]
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    training_mod.train(make_cfg(ref_dir, *steps))

    class CrashAt(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 4:  # after step 3's checkpoint, mid-epoch, mid-schedule
                raise Crash("simulated kill")

    with pytest.raises(Crash):
        training_mod.train(make_cfg(run_dir, *steps), callbacks=[CrashAt()])
    training_mod.train(make_cfg(run_dir, *steps))  # the same command again resumes

    ref, got = curve(ref_dir, "train/loss"), curve(run_dir, "train/loss")
    assert sorted(got) == sorted(ref) == list(range(6))
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-5, abs=1e-6), step
    assert curve(run_dir, "lr") == pytest.approx(curve(ref_dir, "lr"))


def test_bad_values_fail_before_anything_loads(tmp_path, monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("loaded something before validating")

    monkeypatch.setattr("kdlite.data.tokenizer.load_tokenizer", boom)
    monkeypatch.setattr(module_mod, "load_model", boom)
    for bad in ("lsp=1.5", "lam=2", "batch.micro_examples=3"):
        with pytest.raises(ConfigError):
            training_mod.train(make_cfg(tmp_path / "r", bad))


def test_unresolvable_model_fails_early_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(
        "kdlite.data.sources.load_examples", lambda *a, **k: pytest.fail("data loaded")
    )
    cfg = make_cfg(
        tmp_path / "r", "pair.student.shape=null", "+pair.student.name=Qwen/Qwen3-does-not-exist"
    )
    with pytest.raises(ModelLoadError, match="local folder"):
        training_mod.train(cfg)


def test_pair_with_different_tokenizers_is_refused(tmp_path, embedded_tokenizer, monkeypatch):
    from kdlite.models import random_model

    other = tmp_path / "other"
    tok = copy.deepcopy(embedded_tokenizer)  # never mutate the session's shared tokenizer
    tok.add_tokens(["<|something_else|>"])
    random_model("tiny-student", vocab_size=len(tok)).save_pretrained(other)
    tok.save_pretrained(other)
    monkeypatch.setattr(
        "kdlite.data.sources.load_examples", lambda *a, **k: pytest.fail("data loaded")
    )
    cfg = make_cfg(tmp_path / "r", "pair.student.shape=null", f"+pair.student.name={other}")
    with pytest.raises(ConfigError, match="different tokenizer"):
        training_mod.train(cfg)


def row_batch(ids, labels, *, step_examples: int, step_tokens: int) -> dict:
    """A hand-made batch with one example per row (no packing, no padding)."""
    B, T = ids.shape
    return {
        "input_ids_BT": ids,
        "labels_BT": labels,
        "position_ids_BT": torch.arange(T).expand(B, T),
        "segment_ids_BT": torch.zeros_like(ids),
        "step_examples": step_examples,
        "step_tokens": step_tokens,
    }


def test_fully_masked_batch_gives_zero_loss_not_nan(tmp_path):
    from kdlite.data.tokenizer import embedded_tokenizer
    from kdlite.models import ModelSpec
    from kdlite.module import DistillModule, LossSettings, ModelSettings, OptimSettings

    tok = embedded_tokenizer()
    m = DistillModule(
        ModelSettings(
            student=ModelSpec(shape="tiny-student"), teacher=ModelSpec(shape="tiny-teacher")
        ),
        LossSettings(lam=0.5, temperature=1.0, loss_norm="sequence", vocab_size=len(tok)),
        OptimSettings(),
    )
    m.configure_model()
    ids = torch.randint(0, len(tok), (2, 12))
    batch = row_batch(ids, torch.full_like(ids, -100), step_examples=0, step_tokens=0)
    parts, _ = m._forward_loss(batch, "sequence")
    parts.loss.backward()
    assert parts.loss.item() == 0.0 and not torch.isnan(parts.loss)
    grads = [p.grad for p in m.student.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() and g.abs().sum() == 0 for g in grads)


def test_multirun_with_several_devices_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("kdlite.parallel._is_basic_multirun", lambda: True)
    cfg = make_cfg(tmp_path / "r", "trainer.devices=2", "batch.micro_examples=4")
    with pytest.raises(ConfigError, match="basic launcher"):
        training_mod.train(cfg)


BOOT = [
    "pair.teacher.init=base",
    "pair.teacher.bootstrap=true",
    "pair.bootstrap.epochs=1",
    "optim.max_steps=2",
    "export=false",
]


def test_training_from_the_teacher_cache_matches_online(tmp_path, monkeypatch):
    from kdlite.cli.cache_teacher import main as build_cache
    from kdlite.teacher_cache import CacheError

    vocab = 746  # the embedded tokenizer: k = vocab makes the cache exact up to fp16 storage
    build_cache([*FAST, *BOOT, f"k={vocab}"])
    online, cached = tmp_path / "online", tmp_path / "cached"
    training_mod.train(make_cfg(online, *BOOT))

    loaded = []
    real = module_mod.load_model
    monkeypatch.setattr(
        module_mod, "load_model", lambda spec, **kw: loaded.append(spec) or real(spec, **kw)
    )
    training_mod.train(make_cfg(cached, *BOOT, "teacher=cache", f"teacher_cache_k={vocab}"))
    assert [s.shape for s in loaded] == ["tiny-student"]  # the teacher never loads
    ref, got = curve(online, "train/soft"), curve(cached, "train/soft")
    assert sorted(got) == sorted(ref) == [0, 1]
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=2e-3)

    with pytest.raises(CacheError, match="right"):
        training_mod.train(
            make_cfg(
                tmp_path / "r",
                *BOOT,
                "teacher=cache",
                f"teacher_cache_k={vocab}",
                "crop=right",
                "lsp=0.5",
            )
        )


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients():
    """trainer.compile=true must not change the numbers (CPU inductor; ~1 min of compile)."""
    from kdlite.data.tokenizer import embedded_tokenizer
    from kdlite.models import ModelSpec
    from kdlite.module import DistillModule, LossSettings, ModelSettings, OptimSettings

    tok = embedded_tokenizer()
    losses, grads = [], []
    for compile_layers in (False, True):
        m = DistillModule(
            ModelSettings(
                student=ModelSpec(shape="tiny-student"),
                teacher=ModelSpec(shape="tiny-teacher"),
                compile=compile_layers,
                seed=0,
            ),
            LossSettings(lam=0.5, temperature=1.0, loss_norm="token", vocab_size=len(tok)),
            OptimSettings(),
        )
        torch.manual_seed(0)
        m.configure_model()
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, len(tok), (2, 40), generator=g)
        labels = torch.cat([ids[:, 1:], torch.full((2, 1), -100)], 1)
        batch = row_batch(ids, labels, step_examples=2, step_tokens=78)
        parts, _ = m._forward_loss(batch, "token")
        parts.loss.backward()
        losses.append(parts.loss.detach())
        grads.append(m.student.head_weight.grad.clone())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_wandb_logger_works_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "r"
    training_mod.train(make_cfg(run, "logger=wandb", "optim.max_steps=1", "export=false"))
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))
    assert (run / "metrics.csv").is_file()  # CSV is always written too


def test_training_is_the_top_of_the_library_import_graph():
    """No library module imports kdlite.training; only programs (a module with `main()`) do."""
    import ast

    from test_structure import PKG, import_graph

    importers = sorted(m for m, deps in import_graph().items() if "kdlite.training" in deps)
    for name in importers:
        tree = ast.parse((PKG.parent / (name.replace(".", "/") + ".py")).read_text())
        mains = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains, f"{name} imports kdlite.training but is not a program (no main())"
