"""`--help` of lenet-train and lenet-eval: usage, config groups, the config the overrides compose.

Not Hydra's own --help: it lists the groups by composing a fresh config repository for each of
the ~110 group options (plugins' included), about a second on two cores; here the groups are read
from the conf/ folder and the config is composed once.
"""

from __future__ import annotations

import textwrap
from importlib.resources import files
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from lenet_cli.config import CONFIG_MODULE, compose_checked, validate

RUN_FOLDER = "outputs/<date>/<time>"  # what ${hydra:runtime.output_dir} shows under --resolve

# Each command (lenet-<config name>): what it does, its synopsis, examples (command line, what).
USAGE = {
    "train": (
        "Train a LeNet-family network on MNIST, test its best checkpoint and log everything to "
        f"TensorBoard under {RUN_FOLDER}/.",
        "lenet-train [group=option ...] [key=value ...]     (-m: one run per combination)",
        [
            ("lenet-train model=modern trainer.max_epochs=5", "one run"),
            ("lenet-train experiment=fast", "99% test accuracy in seconds"),
            ("lenet-train -m optimizer.lr=0.01,0.003 model=classic,modern", "a sweep (grid)"),
            (f"lenet-train resume={RUN_FOLDER}", "continue an interrupted run"),
            ("lenet-train model=tutorial --cfg job", "print the composed config, run nothing"),
        ],
    ),
    "eval": (
        "Test a checkpoint: accuracy, per-class accuracy, confusion matrix and worst mistakes, "
        "in a run folder of its own. The network is rebuilt from the checkpoint.",
        "lenet-eval ckpt_path=FILE [key=value ...]",
        [
            (f"lenet-eval ckpt_path={RUN_FOLDER}/checkpoints/best.ckpt", "evaluate"),
            ("lenet-eval ckpt_path=... data.eval_batch_size=500 mistakes=24", "other settings"),
        ],
    ),
}


# What a group's options mean where the name alone does not say (shown under the group).
GROUP_NOTES = {
    "scheduler": "optimizer.lr is the peak under onecycle (which starts at lr/10, warms up, then "
    "anneals), the starting value under cosine and step, the constant under none",
    "lecun98": "a row of the 1998 paper's table (its network, data and the paper's error); "
    "lenet-train -m experiment=lecun98 trains all four with three seeds",
}


def help_text(config_name: str, overrides: list[str], resolve: bool = False) -> str:
    """The help page of the command whose primary config is `config_name`, showing the config
    composed from `overrides` (one run's: the first value of each sweep), checked like a run's."""
    summary, synopsis, examples = USAGE[config_name]
    cfg = compose_checked(config_name, overrides)
    validate(cfg)
    # This command's groups (lenet-eval has no model group) and their options, read from conf/
    root, groups = Path(str(files(CONFIG_MODULE))), []
    for group in sorted(g for g in cfg.hydra.runtime.choices if g.split("/")[0] != "hydra"):
        options = sorted(path.stem for path in (root / group).glob("*.yaml"))
        groups.append(f"{group}: {', '.join(options)}")
        notes = GROUP_NOTES.get(group, "")
        groups += textwrap.wrap(notes, 98, initial_indent="  ", subsequent_indent="  ")
    cfg.hydra.runtime.output_dir = RUN_FOLDER
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} resolves (--resolve), as in Hydra's help
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    width = max(len(example) for example, _ in examples)
    lines = [
        *textwrap.wrap(f"lenet-{config_name}: {summary}", 100),
        "",
        f"Usage: {synopsis}",
        "",
        "Examples:",
        *(f"  {example:<{width}}  # {what}" for example, what in examples),
        "",
        "== Configuration groups ==",
        "Compose your configuration from those groups (group=option)",
        "",
        *groups,
        "",
        "== Config ==",
        "Override anything in the config (foo.bar=value); add a new key with +foo.bar=value.",
        "",
        OmegaConf.to_yaml(job, resolve=resolve).rstrip(),
        "",
        "Hydra's flags (--cfg, --info, -m, --config-dir...): --hydra-help",
    ]
    return "\n".join(lines)
