"""Settings: every bad value is one clear error naming its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from tollgate.config import ConfigError, load_settings


def test_defaults_follow_the_design() -> None:
    settings = load_settings(TOLLGATE_ENV="dev")
    assert settings.database_url == "sqlite:///./tollgate.db"
    assert settings.catalog_path == Path("catalog.yaml")
    assert settings.webhook_tolerance_seconds == 300
    assert settings.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        (
            "TOLLGATE_DEFAULT_CURRENCY",
            "usdd",
            "TOLLGATE_DEFAULT_CURRENCY: 'usdd' is not an ISO 4217",
        ),
        (
            "STRIPE_WEBHOOK_SECRETS",
            "whsec_ok,nope",
            "STRIPE_WEBHOOK_SECRETS: each secret must start with whsec_",
        ),
        ("STRIPE_SECRET_KEY", "pk_test_123", "STRIPE_SECRET_KEY: must start with sk_test_"),
        (
            "TOLLGATE_API_KEYS",
            "web:admin:0123456789abcdef",
            "TOLLGATE_API_KEYS: key 'web' has scope 'admin'",
        ),
        ("TOLLGATE_API_KEYS", "web:read", "TOLLGATE_API_KEYS: each key must be name:scope:secret"),
        (
            "TOLLGATE_DATABASE_URL",
            "mysql://x",
            "TOLLGATE_DATABASE_URL: must be a sqlite:/// or postgresql://",
        ),
        ("TOLLGATE_WEBHOOK_TOLERANCE", "0", "TOLLGATE_WEBHOOK_TOLERANCE"),
    ],
)
def test_bad_setting_names_its_variable(variable: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(**{variable: value})
    assert str(raised.value).startswith(says)
    assert "\n" not in str(raised.value)


def test_secrets_never_appear_in_the_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(TOLLGATE_API_KEYS="web:admin:supersecretvalue123")
    assert "supersecretvalue123" not in str(raised.value)


def test_placeholder_secret_is_refused_outside_dev() -> None:
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings(STRIPE_SECRET_KEY="sk_test_changeme")
    assert load_settings(TOLLGATE_ENV="dev", STRIPE_SECRET_KEY="sk_test_changeme").stripe_secret_key


def test_settings_come_from_environment_and_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "TOLLGATE_DEFAULT_CURRENCY=EUR\nSTRIPE_WEBHOOK_SECRETS=whsec_a, whsec_b\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLGATE_API_KEYS", "app:write:0123456789abcdef0123")
    settings = load_settings()
    assert settings.default_currency == "eur"
    assert settings.stripe_webhook_secrets == ["whsec_a", "whsec_b"]
    assert [(k.name, k.scope) for k in settings.bootstrap_api_keys] == [("app", "write")]


def test_postgres_urls_use_the_psycopg_driver() -> None:
    settings = load_settings(TOLLGATE_DATABASE_URL="postgres://u@h/db")
    assert settings.database_url == "postgresql+psycopg://u@h/db"
