"""lenet-cli's Optuna sweeper for Hydra (a Hydra plugin: Hydra finds sweepers only in the
hydra_plugins namespace). See hydra_plugins/lenet_cli_optuna/sweeper.py."""
