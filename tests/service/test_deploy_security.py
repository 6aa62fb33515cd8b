"""The deployment files are safe by default: secrets that must be set, Redis with a password and
out of reach, non-root read-only containers without capabilities, pinned images, probes, limits.

Static checks of Dockerfile, docker-compose.yml and deploy/k8s (no docker, no cluster). Compose's
``${VAR:?message}`` interpolation is reproduced here, so that "compose refuses to start without
the keys" is tested, and the interpolated environment is validated as production ``Settings``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from service.settings import Settings
from tests.service.helpers import MissingVariable, example_env, interpolate
from tests.service.test_deploy import DEPLOY, ROOT, compose_env, k8s_container, k8s_env

PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+[\w.-]*$")  # name:1.2.3 (a digest is better still)
CONTAINERS = [("Deployment", "nowcast-api"), ("Deployment", "nowcast-worker"),
              ("StatefulSet", "nowcast-redis")]


@pytest.fixture(scope="module")
def raw_compose(yaml) -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    return example_env()


@pytest.fixture(scope="module")
def stack(raw_compose, env) -> dict:
    return interpolate(raw_compose, env)["services"]


# --- docker compose -----------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["NOWCAST_API_KEYS", "REDIS_PASSWORD"])
def test_compose_refuses_to_start_without_keys_or_redis_password(raw_compose, env, missing):
    with pytest.raises(MissingVariable, match=missing):
        interpolate(raw_compose, {k: v for k, v in env.items() if k != missing})


def test_compose_env_is_a_valid_production_configuration(stack, env, monkeypatch):
    for name in ("api", "worker"):
        for key, value in compose_env(stack[name]).items():
            monkeypatch.setenv(key, value)
        settings = Settings()
        assert settings.environment == "production" and settings.auth.api_keys
        assert urlsplit(settings.redis.url).password == env["REDIS_PASSWORD"]


def test_compose_redis_requires_the_password_and_is_not_published(stack, env):
    redis = stack["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == env["REDIS_PASSWORD"]
    assert compose_env(redis)["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]  # the health check's login
    assert "ports" not in redis


def test_compose_publishes_only_on_loopback_by_default(stack):
    for name, service in stack.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_compose_containers_are_hardened_with_limits(stack):
    for name, service in stack.items():
        assert service.get("read_only") is True, name
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        user = str(service.get("user", "root")).split(":")[0]
        assert user not in ("root", "0", ""), f"{name} runs as root"
        limits = service["deploy"]["resources"]["limits"]
        assert limits.get("memory") and limits.get("cpus"), name


def test_compose_images_are_pinned_and_built_where_ours(stack):
    for name, service in stack.items():
        assert PINNED.match(service["image"]), f"{name}: {service['image']} is not a pinned tag"
    for name in ("api", "worker"):
        assert "build" in stack[name] and stack[name]["image"] == stack["api"]["image"]


def test_compose_checks_health_of_redis_api_and_worker(stack):
    for name in ("redis", "api", "worker"):
        assert stack[name]["healthcheck"]["test"], name
    worker = stack["worker"]
    liveness = compose_env(worker)["NOWCAST_WORKER__LIVENESS_FILE"]
    assert liveness in " ".join(worker["healthcheck"]["test"])
    assert compose_env(worker)["NOWCAST_WORKER__METRICS_HOST"] == "0.0.0.0"  # scraped by prometheus


def test_compose_grafana_admin_comes_from_a_secret(stack, raw_compose):
    grafana = stack["grafana"]
    env = compose_env(grafana)
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert "grafana_admin_password" in grafana["secrets"]
    source = ROOT / raw_compose["secrets"]["grafana_admin_password"]["file"]
    assert source.parent == DEPLOY / "secrets" and not source.exists()  # never committed
    assert env["GF_USERS_ALLOW_SIGN_UP"] == "false" and env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"


def test_secrets_stay_out_of_git():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored
    assert (DEPLOY / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]


# --- Dockerfile ---------------------------------------------------------------------------------

def test_dockerfile_has_a_healthcheck_a_numeric_user_and_read_only_code():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^HEALTHCHECK .*\n?.*CMD", text, re.M) and "/livez" in text
    user = re.search(r"^USER (\S+)", text, re.M)[1]
    assert user.split(":")[0].isdigit() and user.split(":")[0] != "0"
    assert "chown" not in text, "the service user must not own (and be able to change) the code"
    base = re.search(r"^FROM (\S+)", text, re.M)[1]
    assert ":" in base and not base.endswith(":latest")


# --- Kubernetes ---------------------------------------------------------------------------------

def pod_spec(k8s: dict, kind: str, name: str) -> dict:
    return k8s[(kind, name)]["spec"]["template"]["spec"]


@pytest.mark.parametrize("kind, name", CONTAINERS)
def test_k8s_pods_run_restricted(k8s, kind, name):
    pod = pod_spec(k8s, kind, name)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod.get("automountServiceAccountToken") is False
    container = k8s_container(k8s, kind, name)
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "a read-only root needs a writable /tmp"
    for part in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][part]), (name, part)
    assert PINNED.match(container["image"]), f"{name}: {container['image']} is not a pinned tag"


@pytest.mark.parametrize("kind, name", CONTAINERS)
def test_k8s_containers_have_probes(k8s, kind, name):
    container = k8s_container(k8s, kind, name)
    assert "livenessProbe" in container, name
    assert "readinessProbe" in container or "startupProbe" in container, name
    if name == "nowcast-worker":  # the liveness file the worker touches is the one the probes read
        liveness = k8s_env(container)["NOWCAST_WORKER__LIVENESS_FILE"]
        for probe in ("startupProbe", "livenessProbe"):
            assert liveness in " ".join(container[probe]["exec"]["command"])


def secret_refs(container: dict) -> dict[str, tuple[str, str]]:
    return {e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
            for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}


def test_k8s_redis_password_and_api_keys_come_from_secrets(k8s):
    redis = k8s_container(k8s, "StatefulSet", "nowcast-redis")
    password = secret_refs(redis)["REDIS_PASSWORD"]
    assert redis["args"][redis["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert secret_refs(redis)["REDISCLI_AUTH"] == password
    for name in ("nowcast-api", "nowcast-worker"):
        container = k8s_container(k8s, "Deployment", name)
        refs, names = secret_refs(container), [e["name"] for e in container["env"]]
        assert refs["REDIS_PASSWORD"] == password and refs["NOWCAST_AUTH__API_KEYS"][0] == "nowcast-api-keys"
        # $(VAR) expands only from variables listed before it
        assert names.index("REDIS_PASSWORD") < names.index("NOWCAST_REDIS__URL")
        assert urlsplit(k8s_env(container)["NOWCAST_REDIS__URL"]).password == "$(REDIS_PASSWORD)"
        assert k8s_env(container)["NOWCAST_ENVIRONMENT"] == "production"
        assert all(not e["valueFrom"]["secretKeyRef"].get("optional") for e in container["env"]
                   if "secretKeyRef" in e.get("valueFrom", {}))
    trigger = k8s[("ScaledObject", "nowcast-worker")]["spec"]["triggers"][0]
    auth = k8s[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]["secretTargetRef"]
    assert {(a["parameter"], a["name"], a["key"]) for a in auth} == {("password", *password)}


def test_k8s_network_policies_deny_by_default_and_open_only_what_is_needed(k8s):
    policies = {name: doc["spec"] for (kind, name), doc in k8s.items() if kind == "NetworkPolicy"}
    deny = [p for p in policies.values() if p["podSelector"] == {"matchLabels": {"app": "nowcast"}}
            and not p.get("ingress") and not p.get("egress")]
    assert deny and set(deny[0]["policyTypes"]) == {"Ingress", "Egress"}
    redis = [p for p in policies.values()
             if p["podSelector"].get("matchLabels", {}).get("component") == "redis"]
    assert len(redis) == 1
    sources = redis[0]["ingress"][0]["from"]
    components = {s["podSelector"]["matchLabels"]["component"] for s in sources if "podSelector" in s}
    assert components == {"api", "worker"}
    assert all("podSelector" in s or "namespaceSelector" in s for s in sources)
    assert redis[0]["ingress"][0]["ports"] == [{"port": 6379, "protocol": "TCP"}]
    worker_in = [p for p in policies.values()
                 if p["podSelector"].get("matchLabels", {}).get("component") == "worker" and "ingress" in p]
    assert all(rule.get("from") for p in worker_in for rule in p["ingress"]), "worker metrics open to all"
