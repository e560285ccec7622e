"""The deployment examples in docs/deploy/ hold together: files that parse, a Grafana
dashboard over metrics a real server exports, probes on the port metrics_bind opens, and a
Kubernetes grace period that covers the shutdown."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO
from tests.serving import get, running
from tui_passenger.config import parse_config

DEPLOY = REPO / "docs" / "deploy"
EXAMPLE = DEPLOY / "passenger.toml"
#: What tui-passenger takes, past shutdown_timeout, to stop workers and preloaders (5 s each).
STOP_WORKERS = 10


def example_config(tmp_path):
    """docs/deploy/passenger.toml, through the real parser (its app root made to exist)."""
    root = tmp_path / "app"
    root.mkdir()
    return parse_config(EXAMPLE.read_text().replace('"/srv/app"', json.dumps(str(root))),
                        path=str(EXAMPLE))


def test_the_example_config_is_valid_and_opens_the_probes(tmp_path):
    config = example_config(tmp_path)
    assert config.server.metrics_bind == ("0.0.0.0", 9100)
    assert (config.server.address, config.server.port) == ("0.0.0.0", 3000)


def test_the_dockerfile_runs_headless_as_a_non_root_user_with_a_healthcheck(tmp_path):
    text = (DEPLOY / "Dockerfile").read_text()
    config = example_config(tmp_path)
    assert re.search(r"^FROM python:3\.\d+-slim$", text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert user and user.group(1).split(":")[0] not in ("0", "root")
    exposed = re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()
    assert exposed == [str(config.server.port), str(config.server.metrics_bind[1])]
    health = re.search(r"^HEALTHCHECK .*\n?.*CMD (\[.*\])$", text, re.M)
    assert health and f"127.0.0.1:{config.server.metrics_bind[1]}/healthz" in health.group(1)
    json.loads(health.group(1))  # exec form
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd == ["tui-passenger", "--headless", "-c", "/etc/tui-passenger/passenger.toml"]
    assert "COPY docs/deploy/passenger.toml /etc/tui-passenger/passenger.toml" in text
    for source in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path  # the build context is the repository


def kubernetes_numbers(text: str) -> dict[str, object]:
    """What the manifest says about probes and shutdown, read without a YAML library."""
    return {
        "grace": int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1)),
        "pre_stop": int(re.search(r'command: \["sleep", "(\d+)"\]', text).group(1)),
        "probes": re.findall(r"(liveness|readiness)Probe:\s+httpGet:\s+path: (\S+)\s+"
                             r"port: (\S+)", text),
        "ports": dict(re.findall(r"- name: (\w+)\s+containerPort: (\d+)", text)),
    }


def test_kubernetes_probes_use_the_metrics_port_and_the_grace_covers_the_shutdown(tmp_path):
    numbers = kubernetes_numbers((DEPLOY / "kubernetes.yaml").read_text())
    server = example_config(tmp_path).server
    assert numbers["probes"] == [("liveness", "/healthz", "metrics"),
                                 ("readiness", "/readyz", "metrics")]
    assert numbers["ports"] == {"http": str(server.port),
                                "metrics": str(server.metrics_bind[1])}
    needed = numbers["pre_stop"] + int(server.shutdown_timeout) + STOP_WORKERS
    assert numbers["grace"] >= needed
    assert f"{needed}," in (DEPLOY / "kubernetes.yaml").read_text()  # the comment's sum


def test_kubernetes_manifest_parses_as_yaml():
    yaml = pytest.importorskip("yaml")
    deployment, service = yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text())
    assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert pod["securityContext"]["runAsNonRoot"] is True


def dashboard_queries() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"]
               for target in panel.get("targets", [])]
    queries += [variable["definition"] for variable in dashboard["templating"]["list"]
                if "definition" in variable]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    return queries


async def test_the_grafana_dashboard_queries_only_what_a_server_exports():
    queries = dashboard_queries()
    assert len(queries) > 10
    async with running([{"name": "app"}], metrics_bind="127.0.0.1:0") as server:
        assert (await get(server, "/"))[0] == 200
        await server.sample_now()
        exported = server.metrics.render()[0].decode()
    series = set(re.findall(r"^(tui_passenger_\w+)", exported, re.M))
    used = {name for query in queries for name in re.findall(r"tui_passenger_\w+", query)}
    assert used <= series, used - series
    # Every label value a query picks exists too.
    for label, value in {(label, value) for query in queries
                         for label, value in re.findall(r'(\w+)=~?"([\w|]+)"', query)}:
        for one in value.split("|"):
            assert f'{label}="{one}"' in exported, (label, one)
    # The overview's areas: traffic, errors, queue, workers, memory, spawn times.
    for name in ("requests_total", "responses_total", "503_total", "queue_length",
                 "processes", "memory_bytes", "spawn_duration_seconds_bucket"):
        assert f"tui_passenger_{name}" in used
