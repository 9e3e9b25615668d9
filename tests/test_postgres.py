"""A search whose study lives in a real PostgreSQL database (the throwaway server of
scripts/postgres.sh, Debian's postgresql): the password reaches the study, a resume reaches it
again, and the password is found in nothing the commands print or write. Skipped, with the
reason, where the server cannot start; CI starts it (.ci/run)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import REPO, TINY, run_cli, service_env

pytestmark = pytest.mark.slow  # a chain of sweeps against a server

SERVER = REPO / "scripts" / "postgres.sh"
QUICK = [*TINY, "callbacks=none", "++trainer.limit_train_batches=4",
         "++trainer.limit_val_batches=2", "test=false"]  # fmt: skip
ENV_NAMES = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "LENET_STUDY_URL")


@pytest.fixture(scope="module")
def server() -> dict[str, str]:
    """The server's settings (scripts/postgres.sh env): started here if it is not up yet."""
    return service_env(SERVER, "PostgreSQL server")


@pytest.fixture(autouse=True)
def no_server_env(monkeypatch) -> None:
    """Each command gets only the settings its case names (none inherited from the shell)."""
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def trials(url: str, name: str) -> list:
    import optuna

    return optuna.load_study(study_name=name, storage=url).get_trials()


def assert_found_nowhere(secret: str, folder: Path, *commands) -> None:
    """Not in any file under folder (read as bytes: TensorBoard events, journals, logs, YAML),
    nor in what the commands printed."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any("tfevents" in p.name for p in files) and any(p.name == "hydra.yaml" for p in files)
    assert [p for p in files if secret.encode() in p.read_bytes()] == []
    for done in commands:
        assert secret not in done.stdout + done.stderr


@pytest.mark.parametrize("given", ["url-from-env", "password-from-env", "pgpassword"])
def test_a_study_in_postgres_resumes_and_its_password_is_written_nowhere(
    server: dict[str, str], given: str, tmp_path: Path, tiny_data: Path
) -> None:
    secret, url = server["PGPASSWORD"], server["LENET_STUDY_URL"]
    name = f"lenet-{uuid.uuid4().hex[:8]}"
    if given == "url-from-env":  # the whole URL, password and all, from the environment
        storage, env = "${oc.env:LENET_STUDY_URL}", {"LENET_STUDY_URL": url}
    elif given == "password-from-env":  # only the password, inside the URL
        storage = url.replace(secret, "${oc.env:DB_PASSWORD}")
        env = {"DB_PASSWORD": secret}
    else:  # a URL without the password; libpq reads PGPASSWORD
        storage, env = url.replace(f":{secret}@", "@"), {"PGPASSWORD": secret}
    env["LENET_THREADS_PER_JOB"] = "1"
    search = ["hparams_search=optuna", *QUICK, f"hydra.sweeper.storage={storage}",
              f"hydra.sweeper.study_name={name}", "hydra.sweeper.n_trials=2"]  # fmt: skip
    first = run_cli("-m", *search, cwd=tmp_path, data=tiny_data, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert [t.state.name for t in trials(url, name)] == ["COMPLETE", "COMPLETE"]

    again = ["-m", f"resume={sweep}", "hydra.sweeper.n_trials=3"]
    forgot = run_cli(*again, cwd=tmp_path, data=tiny_data)  # the records alone cannot reach it
    assert forgot.returncode == 2 and "Traceback" not in forgot.stderr, forgot.stderr[-3000:]
    resumed = run_cli(*again, cwd=tmp_path, data=tiny_data, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = trials(url, name)  # the same study, one trial more, run in the same sweep folder
    assert [t.state.name for t in study] == ["COMPLETE"] * 3
    assert {t.user_attrs["sweep_folder"] for t in study} == {str(sweep.resolve())}
    assert sorted(p.name[0] for p in sweep.glob("[0-9]_*")) == ["0", "1", "2"]
    assert not (sweep / "optuna.journal").exists()  # the study is in the database only
    assert f"storage: {storage}" in (sweep / "multirun.yaml").read_text()  # as it was given
    assert_found_nowhere(secret, tmp_path, first, resumed)


@pytest.mark.parametrize("given", ["inline", "in-query", "wrong-from-env"])
def test_a_password_in_the_url_or_a_wrong_one_is_a_panel_that_hides_it(
    server: dict[str, str], given: str, tmp_path: Path
) -> None:
    import optuna

    secret, url = server["PGPASSWORD"], server["LENET_STUDY_URL"]
    name = f"lenet-{uuid.uuid4().hex[:8]}"
    shown = url.replace(f":{secret}@", ":***@")
    if given == "inline":  # it would be recorded in multirun.yaml and every job's .hydra/
        storage, env, said = url, {}, "has its password written in"
    elif given == "in-query":  # libpq's ?password=, which psycopg takes too (quoted for Hydra)
        query = f"{url.replace(f':{secret}@', '@')}?password={secret}"
        storage, env, said = f"'{query}'", {}, "has its password written in"
        shown = query.replace(secret, "***")
    else:
        wrong = "wrong-" + secret
        storage, env = "${oc.env:LENET_STUDY_URL}", {"LENET_STUDY_URL": shown.replace("***", wrong)}
        secret, said = wrong, 'password authentication failed for user "lenet"'
    search = ["hparams_search=optuna", *QUICK, f"hydra.sweeper.storage={storage}",
              f"hydra.sweeper.study_name={name}", "hydra.sweeper.n_trials=1"]  # fmt: skip
    refused = run_cli("-m", *search, cwd=tmp_path, env=env)  # a regression runs one tiny job
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    printed = " ".join((refused.stdout + refused.stderr).split())
    assert shown in printed and said in printed and secret not in printed
    assert not (tmp_path / "outputs").exists()  # refused before any folder
    assert name not in optuna.get_all_study_names(storage=url)
