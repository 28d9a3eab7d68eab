"""`DataSpec`: which rows a run reads and how many it keeps; the schema of conf/data/*.yaml.

One shape everywhere: Hydra merges the YAML onto this dataclass (`TrainConfig.data`), so an unknown
key fails at compose time; `kdlite.config.data_spec` turns the composed node into an instance; the
loader (`sources.load_examples`) and the data module (`datamodule.DistillDataModule`) take that
instance. Written in OmegaConf's dialect (`Optional[...]`, a required field without default is
MISSING), which is why it is a plain, mutable dataclass.
"""

from dataclasses import dataclass
from typing import Optional  # noqa: UP035 - OmegaConf 2.3 needs Optional, not `X | None`


@dataclass
class DataSpec:
    # openthoughts | bespoke | synthetic1 | nemotron | skyt1 | jsonl | synthetic (sources.DATASETS)
    name: str
    path: Optional[str] = None  # Hub id or local file/folder; None = the dataset's Hub id
    revision: Optional[str] = None  # Hub commit/tag; None = the latest (the manifest records it)
    hf_config: Optional[str] = None  # None = the dataset's default
    split: Optional[str] = None  # None = the dataset's default split
    task_types: Optional[list[str]] = None  # keep rows of these `task_type`s; None = the default
    train_size: int = 8000
    val_size: int = 1000
    max_tokens: int = 4096  # keep rendered examples with fewer tokens than this
    limit: Optional[int] = None  # read at most this many rows
    synthetic_size: Optional[int] = None  # examples the embedded corpus generates (synthetic)
    # the embedded corpus's answer sections: chain (the derivation again in one line) | restate
    # (the think block's conclusion); docs/mini-replication.md §8
    synthetic_answer_form: str = "chain"
    seed: int = 0  # train/val selection seed (and the synthetic generator's)
