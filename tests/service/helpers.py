"""Helpers of the service tests (imported by the tests, not fixtures)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from model.nowcast import Nowcaster
from model.options import NowcastDefaults


def nowcaster_of(model) -> Nowcaster:
    """The pipeline around a stand-in model: 5-minute steps, 4 km cells, the bulk frame by default."""
    defaults = NowcastDefaults(step_minutes=(5,), cell_km=4.0, advection="bulk")
    return Nowcaster(model, defaults, model_version=str(getattr(model, "model_version", "unknown")))


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
ENV_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "env.example"


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` without a value: compose refuses to start."""


def interpolate(value, env: dict[str, str]):
    """Compose's variable substitution over a loaded compose file (``$$`` escapes a dollar)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        present = env.get(name) not in (None, "") if op and op.startswith(":") else name in env
        if present:
            return env[name]
        if op and op.endswith("?"):
            raise MissingVariable(f"required variable {name} is missing a value: {arg}")
        return arg if op and op.endswith("-") else ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\0")).replace("\0", "$")


def example_env() -> dict[str, str]:
    """deploy/env.example with generated secrets in place of the placeholders."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value
    env["NOWCAST_API_KEYS"] = f'["{secrets.token_urlsafe(32)}"]'
    env["REDIS_PASSWORD"] = secrets.token_urlsafe(24)
    return env
