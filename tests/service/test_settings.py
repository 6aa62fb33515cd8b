"""Settings refuse unsafe production values; secrets never reach a log line."""

from __future__ import annotations

import logging
import secrets

import pytest
from pydantic import ValidationError

from service.secrets import SecretFilter, install_secret_filter, mask_url
from service.settings import Settings

STRONG = secrets.token_urlsafe(32)
SAFE_REDIS = {"url": "redis://:s3cret-redis-pass@redis:6379/0"}


def production(**fields) -> Settings:
    return Settings(**{"environment": "production", "redis": SAFE_REDIS, **fields})


def test_production_accepts_strong_keys_and_a_redis_password():
    assert production(auth={"api_keys": [STRONG, secrets.token_hex(16)]}).auth.api_keys[0] == STRONG


@pytest.mark.parametrize("keys, message", [
    ([], "at least one key"),
    ([""], "too weak"),
    (["k"], "too weak"),
    (["password" * 4], "too weak"),  # long enough, 88 bits
    ([f" {STRONG} "], "too weak"),
    ([STRONG, STRONG], "duplicates"),
])
def test_production_refuses_missing_short_or_guessable_keys(keys, message):
    with pytest.raises(ValidationError, match=message) as refused:
        production(auth={"api_keys": keys})
    assert all(key not in str(refused.value) for key in keys if len(key) > 3)  # no key echoed
    assert "s3cret-redis-pass" not in str(refused.value)


def test_a_malformed_key_list_is_not_echoed():
    with pytest.raises(ValidationError) as refused:
        Settings(auth={"api_keys": "one-secret-value"})
    assert "one-secret-value" not in str(refused.value)


def test_production_refuses_a_redis_without_password():
    with pytest.raises(ValidationError, match="Redis password"):
        production(auth={"api_keys": [STRONG]}, redis={"url": "redis://redis:6379/0"})


def test_development_stays_open_and_metrics_bind_to_loopback():
    settings = Settings()
    assert settings.auth.api_keys == [] and settings.worker.metrics_host == "127.0.0.1"


def test_mask_url_hides_passwords_only():
    assert mask_url("redis://:hunter22@redis:6379/0") == "redis://:***@redis:6379/0"
    assert mask_url("connect rediss://user:p%40ss@host/1 failed") == "connect rediss://user:***@host/1 failed"
    assert mask_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_secret_filter_masks_urls_keys_and_tracebacks(caplog):
    settings = Settings(redis={"url": "redis://:hunter22@redis:6379/0"}, auth={"api_keys": [STRONG]})
    log = logging.getLogger("tests.secrets")
    handler = logging.StreamHandler()
    logging.getLogger().addHandler(handler)
    try:
        installed = install_secret_filter(settings)
        assert installed in handler.filters and isinstance(installed, SecretFilter)
        caplog.handler.addFilter(installed)
        log.warning("using %s with key %s", settings.redis.url, STRONG)
        try:
            raise ConnectionError(f"cannot reach {settings.redis.url}")
        except ConnectionError:
            log.exception("redis down")
    finally:
        logging.getLogger().removeHandler(handler)
        caplog.handler.removeFilter(installed)
    text = caplog.text
    assert "hunter22" not in text and STRONG not in text
    assert "redis://:***@redis:6379/0" in text and "with key ***" in text
