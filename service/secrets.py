"""Credentials never reach a log line or an error message.

The service logs URLs through :func:`mask_url`; as a second line of defence, the entry points
(``python -m service.worker``, ``nowcast serve``, the API's lifespan) put a
:class:`SecretFilter` on the handlers of the root and uvicorn loggers, which masks the password
of any URL and the literal secrets of the settings (API keys, the Redis password) in every
record, whoever logged it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from service.settings import Settings

MASK = "***"
# scheme://user:password@host  or  scheme://:password@host
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:)(?P<password>[^@\s/]+)(?=@)")
LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (``redis://:***@host:6379/0``)."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, url)


def settings_secrets(settings: Settings) -> list[str]:
    """The literal secrets of ``settings``: API keys and the Redis password."""
    found = [key for key in settings.auth.api_keys if key]
    password = urlsplit(settings.redis.url).password
    if password:
        found.append(password)
    return found


class SecretFilter(logging.Filter):
    """Masks URL passwords and the given literal ``secrets`` in a record's message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__("secrets")
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        text = mask_url(text)
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.mask(message)
        if record.exc_info and not record.exc_text:  # tracebacks may quote a URL too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_secret_filter(settings: Settings) -> SecretFilter:
    """Put one :class:`SecretFilter` for ``settings`` on every handler of the root and uvicorn
    loggers (call it after logging is configured); returns it."""
    return install_filter(SecretFilter(settings_secrets(settings)))


def install_filter(secret_filter: SecretFilter) -> SecretFilter:
    """Put ``secret_filter`` on every handler of the root and uvicorn loggers, in place of any
    :class:`SecretFilter` there before; returns it."""
    for name in LOGGERS:
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, SecretFilter)]:
                handler.removeFilter(old)
            handler.addFilter(secret_filter)
    return secret_filter
