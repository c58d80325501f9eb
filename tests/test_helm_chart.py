"""The Kubernetes example (``deploy/helm/edge-deploy-triton``) rendered by Helm's own engine, without a cluster
(``python deploy/helm/render.py``: ``helm-python-sdk`` binds the Helm v4 SDK): the example values give Triton
replicas that read the model repository, are ready only when Triton says so, stop gracefully, and sit behind a
Service and a headless Service; values that name no repository, or two, are refused by the chart's schema.
The renderer runs in a child process: Helm's Go runtime never shares this one with the servers' clients."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.paths import REPO

RENDER = REPO / "deploy" / "helm" / "render.py"
EXAMPLE = REPO / "deploy" / "helm" / "values-example.yaml"


def _run(values: Path, *flags: str) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, str(RENDER), str(values), "--namespace", "serving", *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1) and done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def _render(values: dict | Path, tmp_path: Path) -> dict[str, dict]:
    """``{kind/name: object}`` of the chart rendered with ``values`` (a dict or a file) for release ``edge``;
    values the chart refuses raise ``ValueError`` with Helm's message."""
    if isinstance(values, dict):
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values), encoding="utf-8")
        values = tmp_path / "values.yaml"
    code, answer = _run(values, "--json")
    if code:
        raise ValueError(answer["error"])
    objects = [o for text in answer["manifests"].values() for o in yaml.safe_load_all(text) if o]
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}


def test_the_example_values_render_triton_replicas_behind_two_services(tmp_path):
    values = yaml.safe_load(EXAMPLE.read_text())
    objects = _render(EXAMPLE, tmp_path)
    assert sorted(objects) == ["Deployment/edge-triton", "PodDisruptionBudget/edge-triton", "Service/edge-triton",
                               "Service/edge-triton-pods"]
    deployment = objects["Deployment/edge-triton"]["spec"]
    pod = deployment["template"]["spec"]
    (server,) = pod["containers"]
    assert deployment["replicas"] == values["replicas"] == 2
    assert deployment["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    assert server["image"] == f"{values['image']['repository']}:{values['image']['tag']}"
    assert server["args"] == ["--model-repository=/models", "--exit-timeout-secs=30", "--strict-readiness=true"]
    assert pod["terminationGracePeriodSeconds"] > values["server"]["exitTimeoutSeconds"]
    assert pod["volumes"] == [{"name": "model-repository", "persistentVolumeClaim": {
        "claimName": "edge-deploy-models", "readOnly": True}}]
    assert server["volumeMounts"] == [{"name": "model-repository", "mountPath": "/models", "readOnly": True,
                                       "subPath": "model_repository"}]
    assert server["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                                   "limits": {"memory": "24Gi", "nvidia.com/gpu": 1}}
    assert {p["name"]: p["containerPort"] for p in server["ports"]} == {"http": 8000, "grpc": 8001, "metrics": 8002}
    for probe in ("startupProbe", "readinessProbe"):
        assert server[probe]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}

    labels = deployment["template"]["metadata"]["labels"]
    selectors = [deployment["selector"]["matchLabels"], objects["PodDisruptionBudget/edge-triton"]["spec"][
        "selector"]["matchLabels"], *(objects[s]["spec"]["selector"] for s in ("Service/edge-triton",
                                                                                "Service/edge-triton-pods"))]
    assert all(selector.items() <= labels.items() for selector in selectors)  # every one finds the pods
    service, pods = objects["Service/edge-triton"]["spec"], objects["Service/edge-triton-pods"]["spec"]
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["ports"]] == [
        ("http", 8000, "http"), ("grpc", 8001, "grpc"), ("metrics", 8002, "metrics")]
    assert pods["clusterIP"] == "None" and [p["port"] for p in pods["ports"]] == [8000, 8001]


def test_a_cloud_repository_on_the_cpu_needs_no_volume(tmp_path):
    objects = _render({"modelRepository": {"uri": "s3://models/edge"}, "gpusPerReplica": 0, "replicas": 1,
                       "server": {"exitTimeoutSeconds": 10, "extraArgs": ["--log-verbose=1"]}}, tmp_path)
    assert sorted(objects) == ["Deployment/edge-triton", "Service/edge-triton", "Service/edge-triton-pods"]
    pod = objects["Deployment/edge-triton"]["spec"]["template"]["spec"]
    (server,) = pod["containers"]
    assert server["args"] == ["--model-repository=s3://models/edge", "--exit-timeout-secs=10",
                              "--strict-readiness=true", "--log-verbose=1"]
    assert "volumes" not in pod and "volumeMounts" not in server and server["resources"] == {}
    assert server["image"] == "nvcr.io/nvidia/tritonserver:24.08-py3"


@pytest.mark.parametrize("repository, complaint", [
    ({}, "'oneOf' failed, none matched"),
    ({"pvc": "claim", "uri": "s3://models/edge"}, "'oneOf' failed, none matched"),
    ({"uri": "http://models/edge"}, "does not match pattern"),
])
def test_values_without_exactly_one_repository_are_refused(repository, complaint, tmp_path):
    with pytest.raises(ValueError, match=complaint) as refused:
        _render({"modelRepository": repository}, tmp_path)
    assert "/modelRepository" in str(refused.value) and "values don't meet the specifications" in str(refused.value)


def test_the_chart_lints_clean_with_the_example_values():
    code, report = _run(EXAMPLE, "--lint")
    assert code == 0 and report["errors"] == [] and all(m["severity"] < 2 for m in report["messages"]), report
