"""The Helm chart, linted and rendered by Helm's own engine, every manifest validated offline."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from relay.config import load_settings

CHART = Path(__file__).resolve().parents[2] / "helm" / "knock-relay"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBERNETES = kubernetes_validate.latest_version()


def ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "ci" / name).read_text())  # type: ignore[no-any-return]


def render(values: dict[str, Any] | None = None, release: str = "relay") -> list[dict[str, Any]]:
    with helm_python.Chart.load(str(CHART)) as chart:
        files = chart.render(values or {}, name=release, namespace="leasing")
    manifests = []
    for path, text in files.items():
        if path.endswith(".yaml"):
            manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


def notes(values: dict[str, Any] | None = None) -> str:
    with helm_python.Chart.load(str(CHART)) as chart:
        return chart.render(values or {}, name="relay", namespace="leasing")["knock-relay/templates/NOTES.txt"]


def one(manifests: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [m for m in manifests if m["kind"] == kind and (component is None or component_of(m) == component)]
    assert len(found) == 1, [(m["kind"], m["metadata"]["name"]) for m in found]
    return found[0]


def component_of(manifest: dict[str, Any]) -> str | None:
    return manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def pods(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [m["spec"]["template"]["spec"] for m in manifests if m["kind"] == "Deployment"]
    return specs + [m["spec"] for m in manifests if m["kind"] == "Pod"]


VALUE_SETS = [pytest.param({}, id="defaults")] + [
    pytest.param(yaml.safe_load(path.read_text()), id=path.name) for path in CI_VALUES
]


@pytest.mark.parametrize("values", VALUE_SETS)
def test_chart_lints_without_warnings(values: dict[str, Any]) -> None:
    report = helm_python.lint(str(CHART), values, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_rendered_manifest_validates_strictly(values: dict[str, Any]) -> None:
    manifests = render(values)
    assert {"ConfigMap", "Secret", "Service", "Deployment", "Pod"} <= {m["kind"] for m in manifests} or values
    for manifest in manifests:
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator resources: no schema offline, checked by their own tests below
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_ci_values_turn_every_option_on() -> None:
    manifests = render(ci_values("all-on-values.yaml"))
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds.count("Deployment") == 3  # web, worker, sandbox
    assert kinds.count("HorizontalPodAutoscaler") == 2 and kinds.count("PodDisruptionBudget") == 2
    assert "Ingress" in kinds and "ServiceAccount" in kinds and kinds.count("Service") == 3  # web, worker, sandbox
    assert "ServiceMonitor" in kinds and "PrometheusRule" in kinds
    assert kinds.count("NetworkPolicy") == 2 and kinds.count("Secret") == 2  # a Secret per tier


def test_web_and_worker_run_their_commands_with_their_probes() -> None:
    manifests = render()
    web = container(one(manifests, "Deployment", "web"))
    assert web["command"] == ["gunicorn", "wsgi:app"]
    port = {p["name"]: p["containerPort"] for p in web["ports"]}["http"]
    assert {"name": "PORT", "value": str(port)} in web["env"]
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert web["startupProbe"]["httpGet"]["path"] == "/healthz"

    worker_deployment = one(manifests, "Deployment", "worker")
    worker = container(worker_deployment)
    assert worker["command"] == ["python", "-m", "relay", "worker"]
    grace = float(worker["args"][worker["args"].index("--shutdown-grace") + 1])
    assert worker_deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace
    health_port = {p["name"]: p["containerPort"] for p in worker["ports"]}["health"]
    assert {"name": "RELAY_WORKER_PORT", "value": str(health_port)} in worker["env"]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    # A worker takes no traffic, but a rollout waits for the new ones to run before replacing more.
    assert worker["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert worker_deployment["spec"]["minReadySeconds"] >= 10


def test_a_grace_period_below_the_worker_shutdown_grace_is_refused() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="terminationGracePeriodSeconds must be above"):
        render({"worker": {"shutdownGraceSeconds": 60, "terminationGracePeriodSeconds": 60}})


@pytest.mark.parametrize("values", VALUE_SETS)
def test_every_pod_is_locked_down(values: dict[str, Any]) -> None:
    for pod in pods(render(values)):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert "limits" in each["resources"] and "memory" in each["resources"]["limits"]
        relay_containers = [c for c in pod["containers"] if c["name"] != "readyz"]
        for each in relay_containers:
            assert {"name": "tmp", "mountPath": "/tmp"} in each["volumeMounts"]  # the one writable place
        if relay_containers:
            assert {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]


def test_replica_and_autoscaling_values_change_the_output() -> None:
    fixed = render({"web": {"replicaCount": 5}, "worker": {"replicaCount": 3}})
    assert one(fixed, "Deployment", "web")["spec"]["replicas"] == 5
    assert one(fixed, "Deployment", "worker")["spec"]["replicas"] == 3
    assert not [m for m in fixed if m["kind"] == "HorizontalPodAutoscaler"]

    scaled = render({"worker": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 9}}})
    assert "replicas" not in one(scaled, "Deployment", "worker")["spec"]
    assert one(scaled, "Deployment", "web")["spec"]["replicas"] == 2
    hpa = one(scaled, "HorizontalPodAutoscaler", "worker")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 9)
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(scaled, "Deployment", "worker")["metadata"]["name"]


def test_disruption_budgets_select_their_own_pods() -> None:
    manifests = render()
    for component in ("web", "worker"):
        budget = one(manifests, "PodDisruptionBudget", component)
        labels = one(manifests, "Deployment", component)["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert not [m for m in render({"web": {"podDisruptionBudget": {"enabled": False}}}) if component_of(m) == "web"
                and m["kind"] == "PodDisruptionBudget"]  # fmt: skip


def named(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, str]:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest.get("data") or manifest.get("stringData") or {}
    return {}


def mounted_secrets(manifests: list[dict[str, Any]], component: str) -> dict[str, str]:
    """The files of the Secret mounted at RELAY_SECRETS_DIR, as {name: contents}."""
    deployment = one(manifests, "Deployment", component)
    spec = container(deployment)
    folder = {item["name"]: item["value"] for item in spec.get("env", [])}.get("RELAY_SECRETS_DIR")
    if not folder:
        return {}
    (mount,) = [m for m in spec["volumeMounts"] if m["mountPath"] == folder]
    (volume,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    return named(manifests, "Secret", volume["secret"]["secretName"])


def environment(manifests: list[dict[str, Any]], component: str) -> dict[str, str]:
    """What the component's process reads: ConfigMap and Secret through envFrom, then its own env,
    then (as the relay does with RELAY_SECRETS_DIR) what the mounted Secret holds for unset names."""
    spec = container(one(manifests, "Deployment", component))
    env: dict[str, str] = {}
    for source in spec["envFrom"]:
        ref = source.get("configMapRef") or source.get("secretRef")
        env.update(named(manifests, "ConfigMap" if "configMapRef" in source else "Secret", ref["name"]))
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    for name, value in mounted_secrets(manifests, component).items():
        env.setdefault(name, value)
    env.pop("RELAY_SECRETS_DIR", None)
    return env


def test_rendered_environment_is_a_valid_relay_configuration() -> None:
    manifests = render(ci_values("all-on-values.yaml"))
    for component in ("web", "worker"):
        settings = load_settings(environment(manifests, component))
        assert settings.environment == "production"
        assert settings.redis_url == "rediss://:redis-password@redis.leasing.svc:6380/0"
        assert settings.mailbox_domains == {"acme-living.com", "reply.acme-living.com"}
        assert settings.knock_rate_limit == 20 and settings.require_durable_redis is True
        assert settings.ses_s3_buckets == ("acme-relay-inbound",)
        # Staging: the sandbox is on, so Knock is the in-cluster sandbox with its key.
        sandbox_service = one(manifests, "Service", "sandbox")
        assert settings.knock_base_url == f"http://{sandbox_service['metadata']['name']}:8081"
        assert settings.knock_api_key == "staging-sandbox-key"
    assert load_settings(environment(manifests, "worker")).worker_port == 9001

    production = render({**ci_values("all-on-values.yaml"), "sandbox": {"enabled": False}})
    for component in ("web", "worker"):
        settings = load_settings(environment(production, component))
        assert settings.knock_base_url == "https://stage-syndication.knockrentals.com"
        assert settings.knock_api_key == "knock-api-key"
    # Each tier holds only the credentials it uses: the web the webhooks' and the API's, the worker
    # the providers' API keys.
    web, worker = (load_settings(environment(production, tier)) for tier in ("web", "worker"))
    assert web.webhook_basic_auth == (("relay", "first-secret"), ("relay2", "second-secret"))
    assert web.api_token == "relay-api-token" and web.mailgun_webhook_signing_keys == ("mailgun-signing-key",)
    assert web.mailgun_api_key is None
    assert worker.mailgun_api_key == "mailgun-api-key"
    assert worker.api_token is None and worker.webhook_basic_auth == () and worker.mailgun_webhook_signing_keys == ()


def test_credentials_are_files_not_environment_variables() -> None:
    manifests = render(ci_values("all-on-values.yaml"))
    for tier in ("web", "worker"):
        deployment = one(manifests, "Deployment", tier)
        spec = container(deployment)
        assert all("secretRef" not in source for source in spec["envFrom"])
        assert all("valueFrom" not in item for item in spec["env"])
        assert mounted_secrets(manifests, tier)["REDIS_URL"].startswith("rediss://")
    # Without the split, the one Secret is environment again (for images that predate RELAY_SECRETS_DIR).
    flat = render({**ci_values("all-on-values.yaml"), "secrets": {**ci_values("all-on-values.yaml")["secrets"],
                                                                   "mountAsFiles": False}})  # fmt: skip
    assert any("secretRef" in source for source in container(one(flat, "Deployment", "web"))["envFrom"])


def test_sentinel_and_replica_values_reach_both_tiers() -> None:
    values = ci_values("all-on-values.yaml")
    values["config"] |= {"redisSentinels": "s1.redis:26379,s2.redis:26379,s3.redis", "redisSentinelMaster": "relay",
                         "redisSentinelTls": True, "redisMinReplicas": 1, "redisReplicaTimeoutMs": 800}  # fmt: skip
    values["secrets"]["redisSentinelPassword"] = "sentinel-password"
    manifests = render(values)
    for component in ("web", "worker"):
        settings = load_settings(environment(manifests, component))
        assert settings.redis_sentinels == (("s1.redis", 26379), ("s2.redis", 26379), ("s3.redis", 26379))
        assert (settings.redis_sentinel_master, settings.redis_sentinel_tls) == ("relay", True)
        assert settings.redis_sentinel_password == "sentinel-password"
        assert (settings.redis_min_replicas, settings.redis_replica_timeout_ms) == (1, 800)
    values["config"]["redisSentinelMaster"] = ""
    with pytest.raises(Exception, match="redisSentinelMaster is required"):
        render(values)


def test_existing_secret_replaces_the_charts_secret() -> None:
    manifests = render(ci_values("existing-secret-values.yaml"))
    assert not [m for m in manifests if m["kind"] == "Secret"]
    for component in ("web", "worker"):
        volumes = one(manifests, "Deployment", component)["spec"]["template"]["spec"]["volumes"]
        assert {"secretName": "knock-relay-credentials", "defaultMode": 0o440} in [v.get("secret") for v in volumes]
    # The worker may have a Secret of its own, holding only its keys.
    secrets = {"existingSecret": "knock-relay-credentials", "existingWorkerSecret": "worker-keys"}
    split = render({**ci_values("existing-secret-values.yaml"), "secrets": secrets})
    worker_volumes = one(split, "Deployment", "worker")["spec"]["template"]["spec"]["volumes"]
    assert "worker-keys" in [v.get("secret", {}).get("secretName") for v in worker_volumes]


def test_ingress_buffers_whole_bodies_up_to_the_relay_limit() -> None:
    ingress = one(render({"ingress": {"enabled": True}}), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "on"
    body_mib = int(annotations["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m"))
    assert body_mib * 1024 * 1024 > 31457280
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/webhooks", "/v1"}  # probes stay inside the cluster
    unbuffered = one(render({"ingress": {"enabled": True, "bufferRequests": False}}), "Ingress")
    assert "nginx.ingress.kubernetes.io/proxy-request-buffering" not in unbuffered["metadata"].get("annotations", {})


def test_long_release_names_are_truncated_and_keep_their_component() -> None:
    release = "a-very-long-release-name-for-the-leasing-team-in-production-cluster"
    for manifest in render({"sandbox": {"enabled": True}}, release=release):
        name = manifest["metadata"]["name"]
        assert len(name) <= 63 and not name.endswith("-"), name
    names = {m["metadata"]["name"] for m in render(release=release) if m["kind"] == "Deployment"}
    assert {n.rsplit("-", 1)[1] for n in names} == {"web", "worker"}


def test_helm_test_pod_checks_readyz_through_the_service() -> None:
    manifests = render()
    pod = one(manifests, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = one(manifests, "Service", "web")
    script = "\n".join(container_ for container_ in pod["spec"]["containers"][0]["command"])
    assert f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/readyz" in script


def test_notes_print_the_webhook_url_for_each_provider() -> None:
    host = "relay.acme-living.com"
    text = notes({"ingress": {
        "enabled": True,
        "hosts": [{"host": host, "paths": [{"path": "/webhooks", "pathType": "Prefix"}]}],
        "tls": [{"secretName": "t", "hosts": [host]}],
    }})  # fmt: skip
    for url in (
        "https://USER:PASS@relay.acme-living.com/webhooks/sendgrid/inbound",
        "https://relay.acme-living.com/webhooks/mailgun/inbound",
        "https://relay.acme-living.com/webhooks/mailgun/events",
        "https://USER:PASS@relay.acme-living.com/webhooks/postmark/inbound",
        "https://relay.acme-living.com/webhooks/mime",
    ):
        assert url in text
    assert "WARNING: secrets.redisUrl is empty" in notes()


@pytest.mark.parametrize(
    "values",
    [
        {"web": {"port": "eighty"}},
        {"config": {"environment": "staging"}},
        {"config": {"knockBaseUrl": "ftp://knock"}},
        {"webb": {}},
        {"ingress": {"hosts": [{"host": "h", "paths": [{"path": "webhooks", "pathType": "Prefix"}]}]}},
    ],
)
def test_schema_rejects_mistyped_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)


def test_every_value_is_commented() -> None:
    """Each leaf in values.yaml has a comment line above it, or sits in a block whose key has one."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    covered_below: int | None = None  # indentation of a commented block whose children need no comment
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):(.*)$", line)
        if not match:
            continue
        indent, key, rest = len(match[1]), match[2], match[3].strip()
        if covered_below is not None and indent > covered_below:
            continue
        covered_below = None
        previous = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        if previous.startswith("#"):
            covered_below = indent
        elif rest:  # a leaf without its own comment
            uncommented.append(key)
    assert uncommented == []


def test_service_monitor_scrapes_the_web_and_worker_metrics_ports() -> None:
    manifests = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}})
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]
    scraped = []
    for service in (m for m in manifests if m["kind"] == "Service"):
        labels = service["metadata"]["labels"]
        wanted = selector["matchExpressions"][0]["values"]
        if selector["matchLabels"].items() <= labels.items() and labels["app.kubernetes.io/component"] in wanted:
            scraped.append(labels["app.kubernetes.io/component"])
            port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
            pods = one(manifests, "Deployment", labels["app.kubernetes.io/component"])
            assert port["targetPort"] in {p["name"] for p in container(pods)["ports"]}
    assert sorted(scraped) == ["web", "worker"]
    assert not [m for m in render() if m["kind"] == "ServiceMonitor"]


def test_alert_rules_use_metrics_the_relay_exports() -> None:
    import redis
    from prometheus_client import REGISTRY

    from relay.metrics import RedisGauges
    from tests.helpers import REDIS_URL

    exported = {family.name for family in REGISTRY.collect()}  # counters and histograms, without _total
    exported |= {family.name for family in RedisGauges(redis.Redis.from_url(REDIS_URL), "relay-queue:x").collect()}
    runbook = "https://wiki.example.com/relay/README"
    rule = one(render({"metrics": {"prometheusRule": {"enabled": True, "runbookUrl": runbook}}}), "PrometheusRule")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} >= {"KnockRelayDeadDeliveriesGrowing", "KnockRelayKnockErrorRatioHigh",
                                           "KnockRelayQueueOld", "KnockRelayWebhooksFailing",
                                           "KnockRelayWebhooksFailingForSES", "KnockRelayWebPodsUnready",
                                           "KnockRelayKnockDown"}  # fmt: skip
    for r in rules:
        for name in re.findall(r"\b(relay_[a-z_]+)", r["expr"]):
            assert name.removesuffix("_total") in exported or name in exported, name
        # Two releases in two namespaces alert apart: every aggregation keeps the namespace.
        aggregations = re.findall(r"\b(sum|max|min|avg|count)\s*(by\s*\([^)]*\))?\s*\(", r["expr"])
        assert aggregations and all("namespace" in by for _, by in aggregations), r["alert"]
        assert r["annotations"]["runbook_url"] == f"{runbook}#{r['alert'].lower()}"
    # SNS gives up after about a minute (3 tries, 20 s apart): its alerts must fire within it, also
    # when no web pod is ready and the ingress refuses webhooks without the relay counting them.
    (ses,) = [r for r in rules if r["alert"] == "KnockRelayWebhooksFailingForSES"]
    assert "[1m]" in ses["expr"] and "for" not in ses
    (none_ready,) = [r for r in rules if r["alert"] == "KnockRelayNoWebPodReady"]
    web = one(render(), "Deployment", "web")["metadata"]["name"]
    assert f'deployment="{web}"' in none_ready["expr"] and none_ready["for"] == "30s"
    with pytest.raises(Exception, match="runbookUrl is required"):
        render({"metrics": {"prometheusRule": {"enabled": True}}})


def test_runbook_has_a_section_for_every_alert() -> None:
    rules = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    runbook = (CHART.parent.parent / "docs" / "operations.md").read_text()
    for r in rules["groups"][0]["rules"]:
        assert f'<a id="{r["alert"].lower()}"></a>' in runbook, r["alert"]


def test_web_pods_stop_only_after_leaving_the_endpoints_and_outlive_a_redis_stall() -> None:
    deployment = one(render(), "Deployment", "web")
    web, spec = container(deployment), deployment["spec"]["template"]["spec"]
    sleep = int(web["lifecycle"]["preStop"]["exec"]["command"][1])
    assert web["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep" and sleep >= 5
    assert spec["terminationGracePeriodSeconds"] > sleep + 30  # gunicorn's graceful timeout after it
    assert deployment["spec"]["minReadySeconds"] > 0
    redis_socket_timeout = 5  # relay.services: a webhook waits this long for a stalled Redis
    for probe in (web["livenessProbe"], web["readinessProbe"]):
        assert probe["timeoutSeconds"] > redis_socket_timeout
    liveness = web["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 6 * redis_socket_timeout
    with pytest.raises(helm_python.HelmRenderError, match="preStopSleepSeconds \\+ 30"):
        render({"web": {"preStopSleepSeconds": 20, "terminationGracePeriodSeconds": 45}})
    custom = container(
        one(render({"web": {"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}}), "Deployment", "web")
    )
    assert custom["lifecycle"] == {"preStop": {"exec": {"command": ["true"]}}}


def policy(manifests: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return one(manifests, "NetworkPolicy", component)["spec"]  # type: ignore[no-any-return]


def test_network_policies_let_in_only_the_ingress_and_prometheus_and_out_only_dns_redis_and_https() -> None:
    manifests = render()
    web, worker = policy(manifests, "web"), policy(manifests, "worker")
    assert web["policyTypes"] == ["Ingress", "Egress"] and worker["policyTypes"] == ["Ingress", "Egress"]
    (web_in,) = web["ingress"]
    assert web_in["ports"] == [{"port": 8000, "protocol": "TCP"}]
    sources = [
        s.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") for s in web_in["from"]
    ]
    assert sources[:2] == ["ingress-nginx", "monitoring"]
    (worker_in,) = worker["ingress"]
    assert worker_in["ports"] == [{"port": 8001, "protocol": "TCP"}]
    assert "ingress-nginx" not in str(worker_in["from"]) and "monitoring" in str(worker_in["from"])
    for spec in (web, worker):
        ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (6379, "TCP"), (26379, "TCP"), (443, "TCP")} <= ports
        assert all("to" not in rule for rule in spec["egress"])  # any address: Redis and Knock are outside
    staging = policy(render({"sandbox": {"enabled": True}}), "worker")
    assert any(rule.get("to") and rule["ports"] == [{"port": 8081, "protocol": "TCP"}] for rule in staging["egress"])
    assert not [m for m in render({"networkPolicy": {"enabled": False}}) if m["kind"] == "NetworkPolicy"]


def test_pods_spread_over_nodes_and_zones_and_take_the_usual_extension_points() -> None:
    for tier in ("web", "worker"):
        spread = one(render(), "Deployment", tier)["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        assert all(c["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == tier for c in spread)
    ca = {"name": "redis-ca", "configMap": {"name": "redis-ca"}}
    mount = {"name": "redis-ca", "mountPath": "/etc/redis-ca", "readOnly": True}
    digest = "sha256:" + "a" * 64
    rack = {"maxSkew": 2, "topologyKey": "rack", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"tier": "edge"}}}  # fmt: skip
    values = {
        "image": {"digest": digest},
        "priorityClassName": "leasing-critical",
        "topologySpread": {"enabled": False},
        "web": {"extraVolumes": [ca], "extraVolumeMounts": [mount], "topologySpreadConstraints": [rack]},
        "worker": {"extraVolumes": [ca], "extraVolumeMounts": [mount]},
    }
    manifests = render(values)
    for tier in ("web", "worker"):
        spec = one(manifests, "Deployment", tier)["spec"]["template"]["spec"]
        assert spec["priorityClassName"] == "leasing-critical"
        assert ca in spec["volumes"] and mount in container(one(manifests, "Deployment", tier))["volumeMounts"]
        assert container(one(manifests, "Deployment", tier))["image"].endswith(f"@{digest}")
    assert [
        c["topologyKey"]
        for c in one(manifests, "Deployment", "web")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    ] == ["rack"]
    assert "topologySpreadConstraints" not in one(manifests, "Deployment", "worker")["spec"]["template"]["spec"]
    for manifest in manifests:
        if not manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_the_deployment_guide_names_every_credential_the_charts_secret_holds() -> None:
    keys = set(re.findall(r'"([A-Z][A-Z0-9_]+)" \.', (CHART / "templates" / "secret.yaml").read_text()))
    assert {"REDIS_URL", "KNOCK_API_KEY", "POSTMARK_SERVER_TOKEN", "REDIS_SENTINEL_PASSWORD"} <= keys
    guide = (CHART.parent.parent / "docs" / "deployment.md").read_text()
    listed = guide[guide.index("Rather than putting credentials in values") :][:1500]
    assert not [key for key in keys if f"`{key}`" not in listed]
