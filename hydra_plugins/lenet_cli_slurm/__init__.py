"""lenet-cli's SLURM launcher for Hydra sweeps (a Hydra plugin: Hydra finds launchers only in the
hydra_plugins namespace). See hydra_plugins/lenet_cli_slurm/launcher.py."""
