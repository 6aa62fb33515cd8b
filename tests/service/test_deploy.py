"""Deployment files agree with the code: Grafana dashboard, docker compose, Kubernetes, Prometheus.

Fast, no network, no docker. Metric names come from the registries the service builds
(``WorkerMetrics``, ``ApiMetrics``), queue key names and ports from ``service.settings`` defaults,
so renaming one in the code without the deployment files fails here. The YAML files need PyYAML
(the tests that read them are skipped without it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from service.jobs import Keys
from service.metrics import WorkerMetrics
from service.routes_health import ApiMetrics, router
from service.settings import QueueSettings, WorkerSettings
from tests.service.helpers import example_env, interpolate

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "nowcast-dashboard.json"
PROVISIONING = DEPLOY / "grafana" / "provisioning"

# Series that Prometheus writes itself for every scrape target (no exporter defines them).
PROMETHEUS_SERIES = {"up"}

# Sample names prometheus_client exposes for a metric family of each type.
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}

_PROMQL_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_PROMQL_MATCHERS = re.compile(r"\{[^}]*\}")
_PROMQL_RANGE = re.compile(r"\[[^\]]*\]")
_PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_PROMQL_IDENT = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()")
_PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                    "and", "or", "unless", "inf", "nan"}


# --- helpers -------------------------------------------------------------------------------------

def exported_families() -> dict[str, str]:
    """Metric family name -> type, for everything the worker and the API register."""
    families = {}
    for registry in (WorkerMetrics().registry, ApiMetrics().registry):
        for family in registry.collect():
            families[family.name] = family.type
    return families


def exported_series() -> dict[str, str]:
    """Every sample name a scrape of the worker or the API can show -> its family name."""
    series = {}
    for name, kind in exported_families().items():
        for suffix in SUFFIXES[kind]:
            series[name + suffix] = name
    return series


def promql_metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, labels and keywords left out)."""
    text = _PROMQL_STRING.sub("", expr)
    text = _PROMQL_MATCHERS.sub("", text)
    text = _PROMQL_RANGE.sub("", text)
    text = _PROMQL_GROUPING.sub("", text)
    return {name for name in _PROMQL_IDENT.findall(text) if name.lower() not in _PROMQL_KEYWORDS}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels(dash: dict) -> list[dict]:
    """All panels, including those nested in collapsed rows."""
    found = []
    for panel in dash["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(dash: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query on the dashboard."""
    return [(panel["title"], target["expr"]) for panel in panels(dash) for target in panel.get("targets", [])]


def dockerfile_cmd() -> list[str]:
    line = next(line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return json.loads(line.removeprefix("CMD "))


def option(argv: list[str], flag: str) -> str:
    """The value after ``flag`` in a command line; fails the test when absent."""
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def api_port() -> int:
    """The port the image's default command (the API) listens on."""
    return int(option(dockerfile_cmd(), "--port"))


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def k8s_env(container: dict) -> dict[str, str]:
    return {item["name"]: str(item.get("value")) for item in container.get("env", [])}


def worker_metrics_port(env: dict[str, str]) -> int:
    return int(env.get("NOWCAST_WORKER__METRICS_PORT", WorkerSettings().metrics_port))


def queue_keys(env: dict[str, str]) -> Keys:
    return Keys(env.get("NOWCAST_QUEUE__PREFIX", QueueSettings().prefix))


@pytest.fixture(scope="module")
def compose(yaml) -> dict:
    """The services of docker-compose.yml as compose runs them with deploy/env.example's values."""
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), example_env())["services"]


def k8s_container(k8s: dict, kind: str, name: str) -> dict:
    assert (kind, name) in k8s, f"no {kind} {name} in deploy/k8s (found {sorted(k8s)})"
    containers = k8s[(kind, name)]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{kind} {name}: expected one container"
    return containers[0]


# --- Grafana dashboard ---------------------------------------------------------------------------

def test_dashboard_is_grafana_json_with_queries_on_every_panel():
    dash = dashboard()
    assert dash["uid"] and dash["title"]
    assert dash["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dash):
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
            assert all(target.get("expr", "").strip() for target in panel["targets"]), panel["title"]


def test_dashboard_queries_use_only_metric_names_the_service_exports():
    known = set(exported_series()) | PROMETHEUS_SERIES
    unknown = {}
    for title, expr in queries(dashboard()):
        names = promql_metric_names(expr)
        assert names, f"{title!r}: no metric name found in {expr!r}"
        if names - known:
            unknown[title] = sorted(names - known)
    assert not unknown, f"metric names not exported by the worker or the API: {unknown}"


def test_dashboard_shows_every_metric_the_service_exports():
    series = exported_series()
    shown = {series[name] for _, expr in queries(dashboard())
             for name in promql_metric_names(expr) if name in series}
    assert set(exported_families()) - shown == set()


def test_dashboard_quantiles_come_from_histogram_buckets_grouped_by_le():
    families = exported_families()
    quantile_queries = [(t, e) for t, e in queries(dashboard()) if "histogram_quantile" in e]
    assert quantile_queries
    for title, expr in quantile_queries:
        buckets = [name for name in promql_metric_names(expr) if name.endswith("_bucket")]
        assert buckets, f"{title!r}: histogram_quantile without a _bucket series: {expr}"
        assert all(families.get(name.removesuffix("_bucket")) == "histogram" for name in buckets), expr
        groupings = [set(g.replace(" ", "").split(",")) for g in _PROMQL_GROUPING.findall(expr)]
        assert any("le" in g for g in groupings), f"{title!r}: buckets must be aggregated by le: {expr}"


def test_dashboard_uses_the_provisioned_prometheus_datasource(yaml):
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uids = {ds.get("uid") for ds in provisioned["datasources"] if ds["type"] == "prometheus"}
    assert None not in uids, "give the provisioned datasource a fixed uid for the dashboard to use"
    for panel in panels(dashboard()):
        for ref in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
            if isinstance(ref, dict) and ref.get("type") == "prometheus":
                assert ref.get("uid") in uids, f"panel {panel['title']!r}: datasource {ref} not in {uids}"


def test_grafana_provisioning_finds_the_dashboard_compose_mounts(yaml, compose):
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "nowcast.yml").read_text())["providers"]
    provider_dirs = {PurePosixPath(p["options"]["path"]) for p in providers if p["type"] == "file"}
    mounts = {}
    for volume in compose["grafana"]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[(ROOT / source).resolve()] = PurePosixPath(target)
    assert mounts.get(PROVISIONING.resolve()) == PurePosixPath("/etc/grafana/provisioning")
    assert DASHBOARD.resolve() in mounts, "docker-compose.yml does not mount the dashboard into grafana"
    dashboard_target = mounts[DASHBOARD.resolve()]
    assert any(dashboard_target.is_relative_to(d) for d in provider_dirs), (
        f"dashboard mounted at {dashboard_target}, provisioning reads {sorted(map(str, provider_dirs))}")
    assert (ROOT / compose["prometheus"]["volumes"][0].split(":")[0]).resolve() == DEPLOY / "prometheus.yml"


def test_dashboard_target_labels_name_real_scrape_jobs_and_pod_components(yaml, k8s):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    job_names = {job["job_name"] for job in config["scrape_configs"]}
    components = {doc["spec"]["template"]["metadata"]["labels"].get("component")
                  for (kind, _), doc in k8s.items() if kind in ("Deployment", "StatefulSet")}
    for title, expr in queries(dashboard()):
        for job in re.findall(r'\bjob="([^"]+)"', expr):
            assert job in job_names, f"{title!r}: no scrape job {job!r} in prometheus.yml"
        for component in re.findall(r'\bcomponent="([^"]+)"', expr):
            assert component in components, f"{title!r}: no pod with component={component!r} in deploy/k8s"


# --- docker compose -----------------------------------------------------------------------------

def test_compose_redis_persists_jobs_and_never_evicts_them(compose):
    command = compose["redis"]["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--maxmemory-policy") == "noeviction"


def test_compose_worker_reserves_a_gpu_and_runs_the_worker_image(compose):
    worker, api = compose["worker"], compose["api"]
    assert worker["command"][-2:] == ["-m", "service.worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    # The worker has no build of its own: it runs the image that the api service builds.
    assert "build" in worker or worker["image"] == api["image"]


def test_compose_api_serves_http_without_the_model_or_a_gpu(compose):
    api = compose["api"]
    command = api.get("command") or dockerfile_cmd()
    assert "service.app:create_app" in command and "service.worker" not in command
    assert "devices" not in api.get("deploy", {}).get("resources", {}).get("reservations", {})
    assert "NOWCAST_MODEL__DEVICE" not in compose_env(api)
    container_ports = {int(str(p).rsplit(":", 1)[-1]) for p in api["ports"]}
    assert api_port() in container_ports


def test_compose_api_and_worker_share_the_compose_redis(compose):
    for name in ("api", "worker"):
        url = urlsplit(compose_env(compose[name])["NOWCAST_REDIS__URL"])
        assert (url.hostname, url.port) == ("redis", 6379), name
        assert compose[name]["depends_on"]["redis"]["condition"] == "service_healthy"


# --- Kubernetes ---------------------------------------------------------------------------------

def test_k8s_manifests_parse_into_the_objects_the_service_needs(k8s):
    needed = {("Service", "nowcast-api"), ("Deployment", "nowcast-api"), ("Deployment", "nowcast-worker"),
              ("ScaledObject", "nowcast-worker"), ("Service", "nowcast-redis"),
              ("StatefulSet", "nowcast-redis")}
    assert needed <= set(k8s), f"missing from deploy/k8s: {sorted(needed - set(k8s))}"
    api_service = k8s[("Service", "nowcast-api")]["spec"]
    assert api_service["selector"] == k8s[("Deployment", "nowcast-api")]["spec"]["selector"]["matchLabels"]


def test_k8s_worker_gets_a_gpu_and_the_api_does_not(k8s):
    worker = k8s_container(k8s, "Deployment", "nowcast-worker")
    assert worker["args"][-2:] == ["-m", "service.worker"]
    resources = worker["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    if "nvidia.com/gpu" in resources.get("requests", {}):  # Kubernetes refuses requests != limits
        assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"]
    api = k8s_container(k8s, "Deployment", "nowcast-api")
    assert "service.app:create_app" in api["args"]
    assert all("nvidia.com/gpu" not in api["resources"].get(kind, {}) for kind in ("requests", "limits"))


def test_k8s_redis_persists_jobs_and_never_evicts_them(k8s):
    redis = k8s_container(k8s, "StatefulSet", "nowcast-redis")
    assert option(redis["args"], "--appendonly") == "yes"
    assert option(redis["args"], "--maxmemory-policy") == "noeviction"
    templates = k8s[("StatefulSet", "nowcast-redis")]["spec"]["volumeClaimTemplates"]
    claims = {t["metadata"]["name"] for t in templates}
    assert any(m["name"] in claims and m["mountPath"] == "/data" for m in redis["volumeMounts"])


def test_k8s_api_and_worker_reach_the_redis_service(k8s):
    service_ports = {p["port"] for p in k8s[("Service", "nowcast-redis")]["spec"]["ports"]}
    for name in ("nowcast-api", "nowcast-worker"):
        url = urlsplit(k8s_env(k8s_container(k8s, "Deployment", name))["NOWCAST_REDIS__URL"])
        assert url.hostname == "nowcast-redis" and url.port in service_ports, name


def test_keda_scales_the_worker_on_the_stream_and_group_the_code_uses(k8s):
    scaled = k8s[("ScaledObject", "nowcast-worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "nowcast-worker"
    keys = queue_keys(k8s_env(k8s_container(k8s, "Deployment", "nowcast-worker")))
    triggers = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis-streams"]
    assert triggers, "no redis-streams trigger"
    for trigger in triggers:
        assert trigger["metadata"]["stream"] == keys.stream
        assert trigger["metadata"]["consumerGroup"] == keys.group
        host, port = trigger["metadata"]["address"].rsplit(":", 1)
        assert host == "nowcast-redis"
        assert int(port) in {p["port"] for p in k8s[("Service", "nowcast-redis")]["spec"]["ports"]}


def test_k8s_pods_announce_the_metrics_ports_the_code_listens_on(k8s):
    api = k8s_container(k8s, "Deployment", "nowcast-api")
    worker = k8s_container(k8s, "Deployment", "nowcast-worker")
    ports = {"nowcast-api": int(option(api["args"], "--port")),
             "nowcast-worker": worker_metrics_port(k8s_env(worker))}
    for name, container in (("nowcast-api", api), ("nowcast-worker", worker)):
        port = ports[name]
        annotations = k8s[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert int(annotations["prometheus.io/port"]) == port, name
        assert annotations.get("prometheus.io/path", "/metrics") == "/metrics", name
        assert port in {p["containerPort"] for p in container["ports"]}, name


# --- Prometheus ---------------------------------------------------------------------------------

def _scrape_targets(job: dict) -> set[tuple[str, int]]:
    targets = {tuple(t.rsplit(":", 1)) for c in job.get("static_configs", []) for t in c["targets"]}
    targets |= {(n, c["port"]) for c in job.get("dns_sd_configs", []) for n in c["names"]}
    return {(host, int(port)) for host, port in targets}


def test_prometheus_scrapes_the_api_and_worker_metrics_ports(yaml, compose):
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "/metrics" in {route.path for route in router.routes}
    expected = {"nowcast-api": ("api", api_port()),
                "nowcast-worker": ("worker", worker_metrics_port(compose_env(compose["worker"])))}
    for job_name, (service, port) in expected.items():
        assert job_name in jobs, f"prometheus.yml has no job {job_name}"
        assert jobs[job_name].get("metrics_path", "/metrics") == "/metrics"
        assert _scrape_targets(jobs[job_name]) == {(service, port)}, job_name
        assert service in compose
