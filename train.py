"""Distil a teacher into a student. `python train.py` runs the embedded default on a CPU.

python train.py pair=32b_8b data=bespoke lsp=0.5 trainer=fsdp
python train.py -m experiment=rq2_lsp
"""

import hydra
from omegaconf import DictConfig

from kdlite.config import register_configs
from kdlite.training import train

register_configs()


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
