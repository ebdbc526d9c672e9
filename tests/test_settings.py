"""Settings: one documented precedence, errors that name the variable, secrets never shown."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from tasks.core.errors import SettingsError
from tasks.core.settings import BackupSettings, PostgresSettings, load_settings, load_system

PASSWORD = "s3cr3t-Pa55"
DSN = f"postgresql://ops:{PASSWORD}@db.internal:5432/linkist"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("RUNBOOK_"):
            monkeypatch.delenv(key)


def test_missing_dsn_names_the_variable_to_set():
    with pytest.raises(SettingsError, match="RUNBOOK_PG_DSN"):
        load_settings()


def test_invalid_values_name_their_variables(monkeypatch):
    monkeypatch.setenv("RUNBOOK_PG_DSN", "mysql://nope")
    monkeypatch.setenv("RUNBOOK_BACKUP_PROCESS_MAX", "0")
    with pytest.raises(SettingsError, match="RUNBOOK_PG_DSN: .*postgresql://"):
        load_system(PostgresSettings)
    with pytest.raises(SettingsError, match="RUNBOOK_BACKUP_PROCESS_MAX"):
        load_system(BackupSettings)


def test_environment_overrides_the_toml_file_which_overrides_defaults(monkeypatch, tmp_path):
    config = tmp_path / "runbook.toml"
    config.write_text(
        f'[postgres]\ndsn = "{DSN}"\nrow_count_tolerance = 0.2\n'
        '[[postgres.tables]]\nname = "orders"\n'
        '[backup]\nstanza = "from-file"\nprocess_max = 4\n'
    )
    monkeypatch.setenv("RUNBOOK_CONFIG", str(config))
    monkeypatch.setenv("RUNBOOK_BACKUP_STANZA", "from-env")
    settings = load_settings()
    assert settings.backup.stanza == "from-env"
    assert settings.backup.process_max == 4
    assert settings.postgres.row_count_tolerance == 0.2
    assert [t.name for t in settings.postgres.tables] == ["orders"]
    assert settings.postgres.tables[0].key_columns == ["id"]
    assert settings.backup.restore_deadline_s == 3600


def test_a_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("RUNBOOK_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match="absent.toml"):
        load_settings()


def test_the_dsn_never_shows_in_repr_str_or_dumps(monkeypatch):
    monkeypatch.setenv("RUNBOOK_PG_DSN", DSN)
    settings = load_settings()
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in text
    assert settings.live_dsn().get_secret_value() == DSN


def test_a_bad_dsn_error_does_not_echo_the_password(monkeypatch):
    monkeypatch.setenv("RUNBOOK_PG_DSN", f"mysql://ops:{PASSWORD}@db/x")
    with pytest.raises(SettingsError) as info:
        load_system(PostgresSettings)
    assert PASSWORD not in str(info.value)


def test_dsn_can_come_from_a_prefect_secret_block(prefect_server, monkeypatch):
    from prefect.blocks.system import Secret

    Secret(value=SecretStr(DSN)).save("linkist-live-dsn", overwrite=True)
    monkeypatch.setenv("RUNBOOK_PG_DSN_SECRET_BLOCK", "linkist-live-dsn")
    assert load_settings().live_dsn().get_secret_value() == DSN


def test_an_unknown_secret_block_is_named(prefect_server, monkeypatch):
    monkeypatch.setenv("RUNBOOK_PG_DSN_SECRET_BLOCK", "no-such-block")
    with pytest.raises(SettingsError, match="no-such-block"):
        load_settings()
