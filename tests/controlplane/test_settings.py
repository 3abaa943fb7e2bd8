"""Settings come from HETEROPLANE_* variables; the database defaults to a SQLite file in the data directory."""

import pytest
from pydantic import ValidationError

from controlplane.settings import Settings


def test_default_database_is_a_sqlite_file_in_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HETEROPLANE_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("HETEROPLANE_DATABASE_URL", raising=False)
    assert Settings().effective_database_url == f"sqlite:///{tmp_path / 'state' / 'heteroplane.db'}"


def test_environment_overrides_with_the_prefix(monkeypatch):
    monkeypatch.setenv("HETEROPLANE_DATABASE_URL", "postgresql+psycopg://hp:secret@db:5432/heteroplane")
    monkeypatch.setenv("HETEROPLANE_RECONCILE_PERIOD_S", "2.5")
    settings = Settings()
    assert settings.effective_database_url == "postgresql+psycopg://hp:secret@db:5432/heteroplane"
    assert settings.reconcile_period_s == 2.5


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("HETEROPLANE_DATABASE_URL", "mysql://root@localhost/hp", "database_url"),
        ("HETEROPLANE_API_PORT", "70000", "api_port"),
        ("HETEROPLANE_DEMAND_HEADROOM", "0.5", "demand_headroom"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch, variable, value, field):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_forecast_periods_come_as_a_json_list_and_must_be_positive(monkeypatch):
    monkeypatch.setenv("HETEROPLANE_FORECAST_PERIODS_S", "[1200, 8400]")
    assert Settings().forecast_periods_s == (1200.0, 8400.0)
    monkeypatch.setenv("HETEROPLANE_FORECAST_PERIODS_S", "[0]")
    with pytest.raises(ValidationError, match="forecast_periods_s"):
        Settings()
