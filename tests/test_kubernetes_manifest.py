"""The Kubernetes example (deploy/kubernetes/sidecar.yaml), checked offline.

It validates against the API's JSON schemas (strict: an unknown or misspelt field
fails) for every Kubernetes version from the first with native sidecars, and it
keeps the promises the daemon and the image depend on: a logs volume both
containers mount, probes on the port the config listens on, a grace period longer
than the drain, the image's user, the downward-API variables the enrichment reads,
and a config the real validator accepts.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kubernetes_schemas  # type: ignore[import-untyped]
from packaging.version import Version

from shipper.config import DEFAULT_CONFIG_PATH, Settings, load_config
from shipper.transform.enrich import KUBERNETES_ENV
from tests.support.daemon import PROJECT_ROOT, run_cli
from tests.test_container import image_user

MANIFEST = PROJECT_ROOT / "deploy" / "kubernetes" / "sidecar.yaml"
#: Native sidecars (an init container with restartPolicy: Always) are on by default from 1.29.
OLDEST_KUBERNETES = Version("1.29")
#: What the downward API would give each ``fieldRef``, for checking the config offline.
FIELD_VALUES = {
    "metadata.name": "app-6d9c7b5f4-x2kqp",
    "metadata.namespace": "payments",
    "spec.nodeName": "node-1",
    "status.podIP": "192.0.2.10",
}
#: The daemon's resident memory under load, in MiB (the memory limit must leave room).
PEAK_RSS_MIB = 120

Resource = dict[str, Any]


# --- reading the manifest ---------------------------------------------------------------


def documents() -> list[Resource]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def one(kind: str) -> Resource:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s in {MANIFEST.name}"
    return found[0]


def pod_spec() -> Resource:
    spec: Resource = one("Deployment")["spec"]["template"]["spec"]
    return spec


def container(name: str) -> Resource:
    spec = pod_spec()
    every: list[Resource] = [*spec.get("initContainers", []), *spec["containers"]]
    found = [c for c in every if c["name"] == name]
    assert len(found) == 1, f"{len(found)} containers named {name}"
    return found[0]


def mounts(of: Resource) -> dict[str, Resource]:
    """Volume name to its mount in the container ``of``."""
    return {m["name"]: m for m in of.get("volumeMounts", [])}


def volume(name: str) -> Resource:
    found: Resource = next(v for v in pod_spec()["volumes"] if v["name"] == name)
    return found


def shipper_env() -> dict[str, str]:
    """The shipper container's environment as the pod would have it."""
    env: dict[str, str] = {}
    for entry in container("shipper")["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            env[entry["name"]] = FIELD_VALUES[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def config_text() -> str:
    text = one("ConfigMap")["data"][DEFAULT_CONFIG_PATH.name]
    assert isinstance(text, str)
    return text


def settings(tmp_path: Path) -> Settings:
    """The embedded config through the real loader, with only the pod's environment."""
    path = tmp_path / DEFAULT_CONFIG_PATH.name
    path.write_text(config_text())
    return load_config(path, environ=shipper_env())


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in base units: ``"96Mi"`` in bytes, ``"50m"`` in cores."""
    units = {
        "m": 1e-3,
        "": 1,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "Ki": 1024,
        "Mi": 1024**2,
        "Gi": 1024**3,
    }
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", str(value))
    assert match and match[2] in units, f"not a quantity: {value!r}"
    return float(match[1]) * units[match[2]]


def kubernetes_versions() -> list[str]:
    """Every Kubernetes version the installed schemas cover, from the oldest we support."""
    # Listed once per schema flavour (plain and strict): counted once here.
    known = set(kubernetes_schemas.all_versions())
    versions = sorted((v for v in known if Version(v) >= OLDEST_KUBERNETES), key=Version)
    assert versions, f"no schemas for Kubernetes >= {OLDEST_KUBERNETES}"
    return versions


# --- the tests ------------------------------------------------------------------------


@pytest.mark.parametrize("version", kubernetes_versions())
def test_the_manifest_is_valid_for_kubernetes(version: str) -> None:
    kinds = []
    for resource in documents():
        # SchemaNotFoundError for an unknown kind or apiVersion fails the test too.
        kubernetes_schemas.validate(resource, version, strict=True)
        kinds.append(resource["kind"])
    assert sorted(kinds) == ["ConfigMap", "Deployment", "ServiceAccount"]


def test_the_strict_schemas_catch_a_misspelt_field() -> None:
    # So a pass above means something: a typo in a probe is refused.
    deployment = copy.deepcopy(one("Deployment"))
    shipper = deployment["spec"]["template"]["spec"]["initContainers"][0]
    shipper["livenesProbe"] = shipper.pop("livenessProbe")
    version = kubernetes_versions()[-1]
    with pytest.raises(kubernetes_schemas.ValidationError, match="livenesProbe"):
        kubernetes_schemas.validate(deployment, version, strict=True)


def test_the_shipper_is_a_native_sidecar() -> None:
    spec = pod_spec()
    # Started before the app and stopped after it, so the app's last lines are shipped.
    assert [c["name"] for c in spec["initContainers"]] == ["shipper"]
    assert container("shipper")["restartPolicy"] == "Always"
    assert [c["name"] for c in spec["containers"]] == ["app"]
    # The image's entrypoint is `shipper run`: only its arguments are given.
    assert "command" not in container("shipper")
    assert container("shipper")["args"] == ["--config", str(DEFAULT_CONFIG_PATH)]


def test_both_containers_share_the_logs_volume(tmp_path: Path) -> None:
    assert "emptyDir" in volume("logs")
    app, shipper = mounts(container("app"))["logs"], mounts(container("shipper"))["logs"]
    assert app["mountPath"] == shipper["mountPath"]
    # Retention deletes shipped rotated files: the shipper's mount must be writable.
    assert not shipper.get("readOnly", False)
    (source,) = settings(tmp_path).sources.values()
    for pattern in source.include:
        assert str(pattern).startswith(shipper["mountPath"] + "/"), pattern


def test_the_state_and_config_volumes(tmp_path: Path) -> None:
    loaded = settings(tmp_path)
    shipper = mounts(container("shipper"))
    assert shipper["state"]["mountPath"] == str(loaded.state_dir)
    assert not shipper["state"].get("readOnly", False)
    # The spool lives there: a full spool must not reach the sizeLimit, which evicts the pod.
    assert loaded.spool.max_bytes < quantity(volume("state")["emptyDir"]["sizeLimit"])
    # The ConfigMap's config.toml is the daemon's default config path.
    assert shipper["config"]["mountPath"] == str(DEFAULT_CONFIG_PATH.parent)
    assert shipper["config"]["readOnly"] is True
    assert volume("config")["configMap"]["name"] == one("ConfigMap")["metadata"]["name"]


def test_the_probes_ask_the_port_the_config_listens_on(tmp_path: Path) -> None:
    health = settings(tmp_path).health
    # The kubelet probes the pod's IP: loopback would fail every probe.
    assert health.host == "0.0.0.0"
    shipper = container("shipper")
    paths = {
        probe: (shipper[probe]["httpGet"]["path"], shipper[probe]["httpGet"]["port"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": ("/healthz", health.port),
        "livenessProbe": ("/healthz", health.port),
        "readinessProbe": ("/readyz", health.port),
    }
    assert [p["containerPort"] for p in shipper["ports"]] == [health.port]


def test_the_grace_period_outlasts_the_drain(tmp_path: Path) -> None:
    drain = settings(tmp_path).shutdown_timeout_secs
    assert pod_spec()["terminationGracePeriodSeconds"] > drain


def test_the_shipper_runs_as_the_images_user_with_nothing_more() -> None:
    uid, gid = image_user()
    pod = pod_spec()["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["fsGroup"] == gid
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    shipper = container("shipper")["securityContext"]
    assert shipper == {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_the_resources_fit_the_daemon() -> None:
    resources = container("shipper")["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert quantity(request) <= quantity(limit), kind
    assert quantity(resources["limits"]["memory"]) >= 2 * PEAK_RSS_MIB * 1024**2


def test_the_enrichment_gets_every_downward_api_variable_it_reads() -> None:
    env = {e["name"]: e for e in container("shipper")["env"]}
    for variable, _ in KUBERNETES_ENV:
        assert variable in env, variable
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    # The downward API has no container name: it names the container that writes the logs.
    assert env["CONTAINER_NAME"]["value"] == "app"


def test_credentials_come_from_the_service_accounts_role(tmp_path: Path) -> None:
    account = one("ServiceAccount")
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", role), role
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    sink = settings(tmp_path).sink
    assert sink.type == "s3" and sink.bucket and sink.region
    # No key anywhere: not in the config, not in the pod's environment.
    assert "AWS_" not in config_text() and not any(n.startswith("AWS_") for n in shipper_env())
    assert settings(tmp_path).sink.prefix == f"k8s/{FIELD_VALUES['metadata.namespace']}"


def test_check_config_accepts_the_embedded_config(tmp_path: Path) -> None:
    path = tmp_path / DEFAULT_CONFIG_PATH.name
    path.write_text(config_text())
    done = run_cli(["check-config", "-c", str(path)], env=shipper_env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sink s3" in done.stdout
