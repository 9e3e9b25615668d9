"""The Optuna study behind `hparams_search=optuna` (the sweep loop: hydra_plugins/lenet_cli_optuna):
its storage (a journal file, by default optuna.journal in the sweep folder, or a database URL),
its search space, and the trials it holds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Transformer

from lenet_cli.console import console, short_path
from lenet_cli.errors import ConfigError
from lenet_cli.run_folder import RunFolder

JOURNAL_FILE = "optuna.journal"
# User attributes every trial carries (Optuna's dashboard shows them).
FOLDER_ATTR = "sweep_folder"  # the sweep folder of the command that runs the trial
NOT_RUN_ATTR = "not_run"  # set on a trial asked for after the study was full (not counted)
ABANDONED_ATTR = "abandoned_trials"  # the study's: trials whose command died (left_running)


def prunes(pruner: Any) -> bool:
    """Whether hydra.sweeper.pruner (a config, or None) prunes (pruner=none is a NopPruner)."""
    return pruner is not None and pruner.get("_target_") != "optuna.pruners.NopPruner"


def open_storage(url: str):
    """An Optuna storage for a URL (a database) or a file path (a journal)."""
    import optuna

    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        check_journal(Path(url))
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    import sqlalchemy.exc

    engine: dict[str, Any] = {}
    if url.startswith("sqlite"):  # several workers: wait for the file lock instead of failing
        engine = {"connect_args": {"timeout": 60}}
        if database := sqlalchemy.engine.make_url(url).database:  # None: sqlite://, in memory
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    try:
        # Commands started together each try to create a new database's tables; all but the
        # first fail ("table studies already exists", a unique constraint on alembic's version,
        # a locked file) and succeed when they try again, the tables existing by then.
        for attempt in range(5):
            try:
                return optuna.storages.RDBStorage(url, engine_kwargs=engine)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                time.sleep(0.2 * (attempt + 1))
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)  # its error is the panel's
    except ImportError as error:
        raise ConfigError(
            f"hydra.sweeper.storage={without_password(url)}: {str(error).rstrip('.')}.",
            fix="Install the database's driver: for PostgreSQL pip install 'psycopg[binary]' "
            "(SQLAlchemy 2's default; postgresql+psycopg2:// URLs use psycopg2-binary). Or use "
            "a file: hydra.sweeper.storage=studies/lenet.journal.",
        ) from None
    except (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError) as error:
        raise ConfigError(
            f"hydra.sweeper.storage={without_password(url)}: Optuna cannot open it "
            f"({without_password(str(error).splitlines()[0])}).",
            fix="Check the URL, the database server and its credentials.",
        ) from None


def without_password(text: str) -> str:
    """The text with any URL's password masked (user:***@host, libpq's ?password=***)."""
    text = re.sub(r"(://[^/:@\s]+:)[^@\s]+@", r"\1***@", text)
    return re.sub(r"([?&]password=)[^&\s]+", r"\1***", text)


def check_storage_secret(storage: Any) -> None:
    """Refuse a database URL with its password written in (not as ${oc.env:...}): the command
    line is recorded in multirun.yaml and every job's .hydra/, and resumed from there."""
    raw = str(storage)
    written = re.findall(r"://[^/:@\s]+:([^@\s]+)@|[?&]password=([^&\s]+)", raw)
    if any("${" not in "".join(password) for password in written):
        raise ConfigError(
            f"hydra.sweeper.storage={without_password(raw)} has its password written in: it "
            "would be saved in the sweep's records (multirun.yaml, every job's .hydra/).",
            fix="Leave it out and set it in the environment: PGPASSWORD=... for PostgreSQL (or "
            "~/.pgpass), or write it as 'postgresql://user:${oc.env:DB_PASSWORD}@host/db' (in "
            "single quotes) with DB_PASSWORD exported; a resume finds it the same way.",
        )


def check_journal(path: Path) -> None:
    """Refuse a damaged journal before anything is written to it (Optuna's reader stops with a
    traceback at a bad line; its writer appends after a cut-off last line, joining two records).
    A cut-off last line (a full disk, a kill mid-write) is repaired, a copy kept; other damage is a
    panel. Under Optuna's lock, so that a line being written is not taken for damage."""
    if not path.is_file():
        return
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes by default
    # A lock (held for one write) older than Optuna's grace period was left by a killed process:
    # Optuna breaks it only after waiting that whole period, in every command that meets it.
    # Its age by the file server's clock (a new file's mtime), not this machine's, which may
    # differ on a shared folder. Optuna 4.0 to 5.1 name the lock <journal>.lock.
    with contextlib.suppress(OSError, RuntimeError):  # no lock, or released meanwhile
        with tempfile.NamedTemporaryFile(dir=path.parent) as probe:
            now = os.fstat(probe.fileno()).st_mtime
        if now - Path(f"{path}.lock").lstat().st_mtime > lock.grace_period:
            lock.release()  # what Optuna does after its grace period
            console.print(f"Removed {short_path(path)}.lock, left by a command that was killed.")
    lock.acquire()
    try:
        data = path.read_bytes()
        *whole, last = data.split(b"\n")
        for number, line in enumerate(whole, start=1):
            try:
                json.loads(line)
            except ValueError:
                raise ConfigError(
                    f"{path}: line {number} of the study's journal does not parse (the file was "
                    "left as it is).",
                    fix="Restore the file from a copy; or keep the trials before that line by "
                    f"cutting the file there (head -n {number - 1}), knowing later ones are lost.",
                ) from None
        if last:
            copy = path.with_name(f"{path.name}.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            shutil.copy2(path, copy)
            os.truncate(path, len(data) - len(last))
            console.print(f"Repaired {path}: its last line was cut off (a copy: {copy.name}).")
    finally:
        lock.release()


def absolute_storage_override(line: str) -> str:
    """`hydra.sweeper.storage=<file>` made absolute, so that a resumed sweep (which replays it)
    finds the study from any folder; other overrides as they are."""
    key, _, storage = line.partition("=")
    if key.lstrip("+") != "hydra.sweeper.storage" or storage in ("", "null") or "${" in storage:
        return line  # ${oc.env:...}: kept as written (it may hold a password)
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    elif storage.startswith("sqlite:///") and not storage.startswith("sqlite:////"):
        storage = "sqlite:///" + str(Path(storage.removeprefix("sqlite:///")).resolve())
    return f"{key}={storage}"


class SearchSpace:
    """Optuna distributions for the keys searched (hydra.sweeper.params and the command line:
    choice and range are categorical, interval uniform, integer when both ends are, tag(log,
    interval(a,b)) log-uniform), fixed values for the rest."""

    def __init__(self, params: Mapping[str, Any], command_line: Iterable[str]) -> None:
        lines = [f"{key}={value}" for key, value in params.items()]
        lines += [o for o in command_line if not o.startswith("hydra.")]
        self.distributions: dict[str, Any] = {}
        self.fixed: dict[str, str] = {}
        self._encoded: dict[str, dict[Any, str]] = {}
        for override in OverridesParser.create().parse_overrides(lines):
            key = override.get_key_element()
            self.distributions.pop(key, None)
            self.fixed.pop(key, None)
            if override.is_sweep_override():
                self.distributions[key] = self._distribution(key, override)
            else:
                self.fixed[key] = override.get_value_element_as_str()

    def _distribution(self, key: str, override):
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if override.is_interval_sweep():
            interval = override.value()
            log = "log" in interval.tags
            if isinstance(interval.start, int) and isinstance(interval.end, int):
                return IntDistribution(interval.start, interval.end, log=log)
            return FloatDistribution(float(interval.start), float(interval.end), log=log)
        if isinstance(override.value(), Glob):
            raise ConfigError(
                f"{override.input_line}: a glob cannot be searched by Optuna.",
                fix=f"List the options: {key}=choice(a,b,c).",
            )
        natives = list(override.sweep_iterator())
        encoded = list(override.sweep_iterator(transformer=Transformer.encode))
        primitive = all(v is None or isinstance(v, (bool, int, float, str)) for v in natives)
        choices = natives if primitive else encoded
        self._encoded[key] = dict(zip(choices, encoded, strict=True))
        return CategoricalDistribution(choices)

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The Hydra overrides of one trial: its sampled values, then the fixed ones."""
        sampled = [f"{k}={self._encoded.get(k, {}).get(v, v)}" for k, v in params.items()]
        return sampled + [f"{key}={value}" for key, value in self.fixed.items()]


def trials_held(study, before: int | None = None) -> int:
    """Trials that count towards n_trials (all but those asked for once the study was full and
    those abandoned by a command that died), of those numbered below `before` when given."""
    trials = [t for t in study.get_trials(deepcopy=False) if before is None or t.number < before]
    abandoned = set(study.user_attrs.get(ABANDONED_ATTR, []))
    return sum(NOT_RUN_ATTR not in t.user_attrs and t.number not in abandoned for t in trials)


def left_running(study, sweep_folder: Path) -> tuple[list, list[int]]:
    """Trials left RUNNING by commands that ended without telling them: this sweep folder's, to
    run again first, and the numbers of those failed here: another folder's whose job folder
    holds no result and no live claim. They no longer count towards n_trials, so others take
    their place (this command cannot run a job in another folder)."""
    from optuna.trial import TrialState

    mine, unfinished, failed = str(sweep_folder.resolve()), [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        folder = trial.user_attrs.get(FOLDER_ATTR)
        if folder == mine:
            unfinished.append(trial)
        elif folder is not None:
            jobs = [*Path(folder).glob(f"{trial.number}_*"), *Path(folder).glob(str(trial.number))]
            if len(jobs) == 1 and RunFolder(jobs[0]).state() in ("stopped", "new"):
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(trial.number)
    if failed:
        study.set_user_attr(ABANDONED_ATTR, [*study.user_attrs.get(ABANDONED_ATTR, []), *failed])
    return unfinished, failed
