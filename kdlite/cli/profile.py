"""`python -m kdlite.profile pair=tiny lsp=0.25,0.5,1.0 seq_len=512 [key=value ...]`

Profiles one distillation step per LSP with random weights (see `kdlite.analysis.compute`) and
writes `<out>/profile.md` and `<out>/profile.png`. Options, as key=value (Hydra-style, parsed with
OmegaConf's dotlist so values are typed the same way):
  pair=tiny          tiny | <teacher>_<student> of kdlite.models.QWEN3_SHAPES (8b_4b, 32b_8b, ...)
  lsp=0.25,0.5,1.0   LSP values          seq_len=512   uncropped tokens per row
  batch=1 steps=3 warmup=1 lam=0.5 seed=0
  vocab=null         vocabulary (null: 512 for tiny, the shapes' 151,936 otherwise)
  device=auto        auto | cpu | cuda   dtype=auto (float32 on CPU, bfloat16 on CUDA)
  loss=chunked       chunked | full      count_flops=false  (also run FlopCounterMode)
  out=profile        output folder
On CUDA with real shapes, e.g. `pair=8b_4b seq_len=4096 lsp=0.5,1.0`, weights alone are 24 GB in
bf16: use one large GPU.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, cast

DEFAULTS = {
    "pair": "tiny",
    "lsp": "0.25,0.5,1.0",
    "seq_len": 512,
    "batch": 1,
    "steps": 3,
    "warmup": 1,
    "lam": 0.5,
    "seed": 0,
    "vocab": None,
    "device": "auto",
    "dtype": "auto",
    "loss": "chunked",
    "count_flops": False,
    "out": "profile",
}


def parse(argv: list[str]) -> dict[str, Any]:
    from omegaconf import OmegaConf

    from kdlite.traces import check_args

    check_args(argv, DEFAULTS, __doc__)
    cfg = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_dotlist(argv))
    # A merge of dict configs is a DictConfig, so its container is a dict; its keys are those of
    # DEFAULTS (str): unknown keys were rejected above.
    out = cast(dict[str, Any], OmegaConf.to_container(cfg))
    lsp = out["lsp"]
    out["lsp"] = [float(v) for v in (lsp.split(",") if isinstance(lsp, str) else [lsp])]
    return out


def main(argv: list[str] | None = None) -> Path:
    import torch

    from kdlite.analysis.compute import build_pair, markdown, plot, profile_lsps

    cfg = parse(sys.argv[1:] if argv is None else argv)
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = cfg["dtype"]
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    vocab = cfg["vocab"] if cfg["vocab"] is not None else (512 if cfg["pair"] == "tiny" else None)
    teacher, student = build_pair(cfg["pair"], vocab, getattr(torch, dtype), torch.device(device))
    rows = profile_lsps(
        teacher,
        student,
        cfg["lsp"],
        cfg["seq_len"],
        batch=cfg["batch"],
        steps=cfg["steps"],
        warmup=cfg["warmup"],
        lam=cfg["lam"],
        prefer_chunked=cfg["loss"] == "chunked",
        count_flops=cfg["count_flops"],
        seed=cfg["seed"],
    )
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, cfg["pair"])
    (out / "profile.md").write_text(f"# kdlite compute profile\n\n{table}")
    plot(rows, cfg["pair"], out / "profile.png")
    print(table)
    print(f"wrote {out / 'profile.md'} and {out / 'profile.png'}")
    return out / "profile.md"


if __name__ == "__main__":
    main()
