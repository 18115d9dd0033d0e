"""The BYOC bundle: built, unpacked, rendered with the Helm SDK, linted, and schema-validated.

The chart is rendered offline by ``helm-python-sdk`` (Helm v4's Go SDK through ctypes, no helm
binary) and every manifest must pass ``kubernetes-validate`` in strict mode (unknown fields are
errors) for the oldest and the newest Kubernetes version the tests target.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import logging
import re
import tarfile
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from shared.catalog import AgentManifest
from shared.deployments.bundle import CLOUDS, NAMESPACE, RELEASE_NAME, BundleSpec, build_bundle, bundle_filename
from shared.deployments.service import agent_image

BUILTIN_MANIFEST = Path(__file__).resolve().parents[2] / "agents" / "cost-anomaly" / "manifest.yaml"

REPO = Path(__file__).resolve().parents[2]
API_KEY = "mk.key01hx.Zq3v-8hX_sEcReT-9f2W4kTq7LmN0pRs"
# Oldest supported (Chart.yaml kubeVersion allows 1.27+; 1.30 is the oldest still maintained by the
# clouds) and the newest the validator ships schemas for.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())

# The shape of Terraform's <cloud>_helm_values output (byoc/terraform/outputs.tf) for each cloud.
CLUSTER_VALUES: dict[str, dict[str, Any]] = {
    "gke": {
        "serviceAccount": {"annotations": {
            "iam.gke.io/gcp-service-account": "am-cost-optimizer-agent@acme-prod.iam.gserviceaccount.com"}},
        "persistence": {"storageClassName": "standard-rwx"},
    },
    "eks": {
        "persistence": {"storageClass": {
            "create": True, "name": "agent-logs-efs", "provisioner": "efs.csi.aws.com", "reclaimPolicy": "Retain",
            "parameters": {"provisioningMode": "efs-ap", "fileSystemId": "fs-0123456789abcdef0",
                           "directoryPerms": "700", "uid": "10001", "gid": "10001", "basePath": "/agent-logs"}}},
    },
    "aks": {
        "serviceAccount": {"annotations": {
            "azure.workload.identity/client-id": "8b6c1c52-8b7c-4c11-9d3c-2f7e6c1a9e21"}},
        "podLabels": {"azure.workload.identity/use": "true"},
        "persistence": {"storageClassName": "azurefile-csi"},
    },
}


def make_spec(**overrides: Any) -> BundleSpec:
    fields: dict[str, Any] = {
        "control_plane_url": "https://api.aicloudconsult.com",
        "deployment_id": "dep_01jd8x2m4k5n6p7q8r9s0t1v2w",
        "org_id": "org_01jd8x0a1b2c3d4e5f6g7h8j9k",
        "agent_name": "cost-optimizer",
        "agent_version": "1.4.2",
        "image": "us-docker.pkg.dev/aicloudguard/marketplace/data-plane-runner:1.4.2",
        "agent_config": {"accounts": ["123456789012"], "threshold_usd": 250.5, "notify": {"email": True},
                         "large": 12345678901234567, "note": "ünïcødé \"quoted\" {{ .Values }}"},
        "credential_secret_name": "acme-dataplane-key",
        "api_key": API_KEY,
        "cloud": "gke",
    }
    fields.update(overrides)
    return BundleSpec(**fields)


def members(bundle: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        return archive.getmembers()


def unpack(bundle: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as archive:
        archive.extractall(into, filter="data")
    return into


def render(chart_dir: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every object the chart renders to, as ``helm install`` would (offline)."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE_NAME, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def validate_strictly(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{obj['kind']}/{obj['metadata']['name']}"
                pytest.fail(f"{name} is invalid for Kubernetes {version}: {exc.message} at {list(exc.path)}")


def lint_problems(chart_dir: Path, values: dict[str, Any] | None = None) -> list[str]:
    report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSIONS[0]}")
    # Severity 1 is informational (e.g. "icon is recommended"); warnings and errors fail.
    return [*report["errors"], *(f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2)]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return unpack(build_bundle(make_spec()), tmp_path_factory.mktemp("bundle"))


@pytest.fixture(scope="module")
def rendered(bundle_dir: Path) -> list[dict[str, Any]]:
    return render(bundle_dir / "helm-chart")


# --- archive ---


def test_bundle_holds_the_chart_the_terraform_and_a_readme() -> None:
    names = {member.name for member in members(build_bundle(make_spec()))}
    assert {name.split("/")[0] for name in names} == {"README.md", "helm-chart", "terraform"}
    chart = {
        "Chart.yaml", "values.yaml", "values.schema.json", "templates/_helpers.tpl", "templates/deployment.yaml",
        "templates/configmap.yaml", "templates/secret.yaml", "templates/service.yaml", "templates/hpa.yaml",
        "templates/pvc.yaml",
    }
    assert {f"helm-chart/{path}" for path in chart} <= names
    terraform = {"main.tf", "networking.tf", "iam.tf", "storage.tf", "outputs.tf", "variables.tf", "versions.tf",
                 "terraform.tfvars"}
    assert {f"terraform/{path}" for path in terraform} <= names


def test_bundle_bytes_are_deterministic() -> None:
    first, second = build_bundle(make_spec()), build_bundle(make_spec())
    assert first == second
    assert first[4:8] == b"\0\0\0\0", "the gzip header must not carry a timestamp"
    entries = members(first)
    assert [entry.name for entry in entries] == sorted(entry.name for entry in entries)
    for entry in entries:
        assert (entry.mtime, entry.uid, entry.gid, entry.uname, entry.gname) == (315_532_800, 0, 0, "", "")
        assert entry.isdir() or entry.isfile()
    assert build_bundle(make_spec(agent_version="1.4.3")) != first


def test_bundle_filename_names_agent_and_deployment() -> None:
    assert bundle_filename(make_spec()) == "agent-marketplace-cost-optimizer-dep_01jd8x2m4k5n6p7q8r9s0t1v2w.tar.gz"


# --- the rendered chart ---


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("include_secret", [False, True], ids=["secret-referenced", "secret-embedded"])
def test_chart_lints_and_every_manifest_validates_strictly(tmp_path: Path, cloud: str, include_secret: bool) -> None:
    chart_dir = unpack(build_bundle(make_spec(cloud=cloud), include_secret=include_secret), tmp_path) / "helm-chart"
    cluster_values = CLUSTER_VALUES[cloud]
    assert lint_problems(chart_dir, cluster_values) == []
    objects = render(chart_dir, cluster_values)
    validate_strictly(objects)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "ConfigMap", "Service", "HorizontalPodAutoscaler", "PersistentVolumeClaim",
            "ServiceAccount", "PodDisruptionBudget", "CronJob"} <= kinds
    assert ("Secret" in kinds) is include_secret
    assert ("StorageClass" in kinds) is (cloud == "eks")


def test_the_packaged_chart_renders_and_lints_with_its_defaults() -> None:
    chart_dir = REPO / "byoc" / "chart"
    assert lint_problems(chart_dir) == []
    validate_strictly(render(chart_dir))


def test_values_schema_rejects_unknown_keys() -> None:
    with helm.Chart.load(REPO / "byoc" / "chart") as chart, pytest.raises(helm.HelmValuesError, match="replicas"):
        chart.render({"replicas": 3}, name=RELEASE_NAME, namespace=NAMESPACE)


def test_every_namespaced_object_is_in_the_agent_marketplace_namespace(rendered: list[dict[str, Any]]) -> None:
    for obj in rendered:
        if obj["kind"] != "StorageClass":
            assert obj["metadata"]["namespace"] == "agent-marketplace", obj["kind"]


def test_deployment_is_autoscaled_from_2_to_10_replicas(rendered: list[dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    assert deployment["metadata"]["name"] == "data-plane-agent"
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(rendered, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "data-plane-agent"}
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_container_limits_probes_and_security(rendered: list[dict[str, Any]]) -> None:
    pod = one(rendered, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "us-docker.pkg.dev/aicloudguard/marketplace/data-plane-runner:1.4.2"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi", "ephemeral-storage": "10Gi"}
    assert container["resources"]["limits"] == {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "10Gi"}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": 8000}, probe
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    # The read-only root filesystem leaves /tmp and the log volume as the only writable places.
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/log/agent"}
    logs = next(volume for volume in pod["volumes"] if volume["name"] == "logs")
    assert logs == {"name": "logs", "persistentVolumeClaim": {"claimName": "agent-logs"}}


def test_environment_comes_from_the_configmap_and_the_existing_secret(rendered: list[dict[str, Any]]) -> None:
    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": "agent-config"}}]
    key = next(env for env in container["env"] if env["name"] == "MARKETPLACE_DATAPLANE_KEY")
    assert key["valueFrom"] == {"secretKeyRef": {"name": "acme-dataplane-key", "key": "dataplane-api-key"}}
    assert by_kind(rendered, "Secret") == [], "the default references an existing Secret"


def test_configmap_carries_control_plane_url_identity_and_config(rendered: list[dict[str, Any]]) -> None:
    spec = make_spec()
    config_map = one(rendered, "ConfigMap")
    assert config_map["metadata"]["name"] == "agent-config"
    data = config_map["data"]
    assert data["MARKETPLACE_CONTROL_PLANE_URL"] == "https://api.aicloudconsult.com"
    assert data["MARKETPLACE_DEPLOYMENT_ID"] == spec.deployment_id
    assert data["MARKETPLACE_ORG_ID"] == spec.org_id
    assert data["MARKETPLACE_AGENT"] == "cost-optimizer@1.4.2"
    assert (data["MARKETPLACE_AGENT_NAME"], data["MARKETPLACE_AGENT_VERSION"]) == ("cost-optimizer", "1.4.2")
    assert data["MARKETPLACE_LOG_LEVEL"] == "INFO"
    # Exact round trip: large integers, floats, unicode and template-looking text survive.
    assert json.loads(data["MARKETPLACE_AGENT_CONFIG"]) == spec.agent_config
    assert data["MARKETPLACE_AGENT_CONFIG"] == spec.agent_config_json


def test_service_and_log_volume(rendered: list[dict[str, Any]]) -> None:
    service = one(rendered, "Service")
    assert service["metadata"]["name"] == "agent-service"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    pvc = one(rendered, "PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == "agent-logs"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    retention = one(rendered, "CronJob")
    command = retention["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["find", "/var/log/agent", "-type", "f", "-mtime", "+90", "-delete"]


def test_cluster_values_wire_workload_identity_and_storage(bundle_dir: Path) -> None:
    gke = render(bundle_dir / "helm-chart", CLUSTER_VALUES["gke"])
    assert one(gke, "ServiceAccount")["metadata"]["annotations"] == CLUSTER_VALUES["gke"]["serviceAccount"]["annotations"]
    assert one(gke, "PersistentVolumeClaim")["spec"]["storageClassName"] == "standard-rwx"
    eks = render(bundle_dir / "helm-chart", CLUSTER_VALUES["eks"])
    storage_class = one(eks, "StorageClass")
    assert storage_class["provisioner"] == "efs.csi.aws.com"
    assert storage_class["parameters"]["fileSystemId"] == "fs-0123456789abcdef0"
    assert one(eks, "PersistentVolumeClaim")["spec"]["storageClassName"] == "agent-logs-efs"
    aks = render(bundle_dir / "helm-chart", CLUSTER_VALUES["aks"])
    pod_labels = one(aks, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["azure.workload.identity/use"] == "true"


# --- the API key ---


def _all_bytes(bundle: bytes) -> bytes:
    """The compressed archive, the tar stream and every file: where a leaked key could hide."""
    return bundle + gzip.decompress(bundle)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_api_key_is_nowhere_in_the_bundle_by_default(cloud: str) -> None:
    bundle = build_bundle(make_spec(cloud=cloud))
    haystack = _all_bytes(bundle)
    secret_part = API_KEY.rsplit(".", maxsplit=1)[-1]
    for form in (API_KEY.encode(), base64.b64encode(API_KEY.encode()), secret_part.encode()):
        assert form not in haystack


def test_api_key_is_embedded_only_when_asked(tmp_path: Path) -> None:
    bundle = build_bundle(make_spec(), include_secret=True)
    assert API_KEY.encode() in gzip.decompress(bundle)
    values_entry = next(m for m in members(bundle) if m.name == "helm-chart/values.yaml")
    assert values_entry.mode == 0o600, "a values file holding the key is private"
    objects = render(unpack(bundle, tmp_path) / "helm-chart")
    secret = one(objects, "Secret")
    assert secret["metadata"]["name"] == "agent-credentials"
    assert base64.b64decode(secret["data"]["dataplane-api-key"]).decode() == API_KEY
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    key = next(env for env in container["env"] if env["name"] == "MARKETPLACE_DATAPLANE_KEY")
    assert key["valueFrom"]["secretKeyRef"]["name"] == "agent-credentials"
    readme = (tmp_path / "README.md").read_text()
    assert "kubectl create secret" not in readme
    assert "Keep this bundle private" in readme


def test_include_secret_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key"):
        build_bundle(make_spec(api_key=None), include_secret=True)


def test_api_key_never_reaches_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    spec = make_spec()
    assert API_KEY not in repr(spec)
    with caplog.at_level(logging.DEBUG, logger="shared.deployments.bundle"):
        build_bundle(spec)
        build_bundle(spec, include_secret=True)
    assert "built BYOC bundle" in caplog.text
    assert API_KEY not in caplog.text


# --- README and Terraform inputs ---


def test_readme_gives_the_install_steps(bundle_dir: Path) -> None:
    readme = (bundle_dir / "README.md").read_text()
    steps = [
        "terraform -chdir=terraform apply",
        "terraform -chdir=terraform output -json gke_helm_values > cluster-values.json",
        "kubectl create secret generic acme-dataplane-key",
        "--namespace agent-marketplace --from-file=dataplane-api-key=/dev/stdin",
        "helm install agent-marketplace ./helm-chart -n agent-marketplace -f cluster-values.json",
    ]
    positions = [readme.index(step) for step in steps]
    assert positions == sorted(positions), "the steps are in install order"
    assert "https://api.aicloudconsult.com" in readme


@pytest.mark.parametrize("cloud", CLOUDS)
def test_tfvars_select_the_cloud(tmp_path: Path, cloud: str) -> None:
    bundle_dir = unpack(build_bundle(make_spec(cloud=cloud)), tmp_path)
    tfvars = (bundle_dir / "terraform" / "terraform.tfvars").read_text()
    assert f'cloud         = "{cloud}"' in tfvars
    assert 'name          = "am-cost-optimizer"' in tfvars
    assert 'deployment_id = "dep_01jd8x2m4k5n6p7q8r9s0t1v2w"' in tfvars
    assert f"{cloud}_helm_values" in (bundle_dir / "README.md").read_text()


# --- input validation ---


@pytest.mark.parametrize(("overrides", "message"), [
    ({"control_plane_url": "http://api.aicloudconsult.com"}, "must use https"),
    ({"control_plane_url": "http://10.0.0.5:8080"}, "must use https"),
    ({"control_plane_url": "ftp://api.aicloudconsult.com"}, "absolute https"),
    ({"control_plane_url": "api.aicloudconsult.com"}, "absolute https"),
    ({"control_plane_url": "https://user:pw@api.aicloudconsult.com"}, "credentials"),
    ({"control_plane_url": "https://api.aicloudconsult.com/?next=1"}, "query"),
    ({"control_plane_url": "https://api.aicloudconsult.com/ x"}, "spaces"),
    ({"control_plane_url": "https://api.aicloudconsult.com:99999"}, "control_plane_url"),
    ({"control_plane_url": ""}, "required"),
    ({"deployment_id": "Dep_01"}, "deployment_id"),
    ({"deployment_id": "dep_01_"}, "deployment_id"),
    ({"org_id": ""}, "org_id"),
    ({"agent_name": "Cost_Optimizer"}, "DNS-1123"),
    ({"agent_name": "a" * 64}, "DNS-1123"),
    ({"agent_name": "-cost"}, "DNS-1123"),
    ({"agent_version": "1.4"}, "agent_version"),
    ({"image": "us-docker.pkg.dev/aicloudguard/marketplace/data-plane-runner"}, "tag or digest"),
    ({"image": "runner:1.0"}, "fully qualified"),
    ({"image": "us-docker.pkg.dev/Acme/Runner:1.0"}, "fully qualified"),
    ({"image": "us-docker.pkg.dev/acme/runner:1.0 ; rm -rf /"}, "fully qualified"),
    ({"credential_secret_name": "Agent_Credentials"}, "credential_secret_name"),
    ({"cloud": "gcp"}, "cloud"),
    ({"log_level": "VERBOSE"}, "log_level"),
    ({"agent_config": ["not", "an", "object"]}, "JSON object"),
    ({"agent_config": {"when": object()}}, "agent_config.when"),
    ({"agent_config": {"limits": [1.0, float("nan")]}}, r"agent_config.limits\[1\]"),
    ({"agent_config": {1: "integer key"}}, "not a string"),
    ({"agent_config": {"blob": "x" * 300_000}}, "bytes as JSON"),
    ({"api_key": ""}, "api_key"),
    ({"api_key": "two words"}, "api_key"),
])
def test_bad_input_raises_value_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_spec(**overrides)


def test_error_messages_never_quote_the_key() -> None:
    with pytest.raises(ValueError, match="api_key") as raised:
        make_spec(api_key="secret-part other-part")
    assert "secret-part" not in str(raised.value)


@pytest.mark.parametrize("url", [
    "http://localhost:8080", "http://127.0.0.1:8080", "http://[::1]:8080", "http://dev.localhost",
    "https://api.aicloudconsult.com/v1", "https://10.0.0.5",
])
def test_https_and_loopback_http_urls_are_accepted(url: str) -> None:
    assert make_spec(control_plane_url=url).control_plane_url == url


def test_image_may_be_pinned_by_digest(tmp_path: Path) -> None:
    digest = "sha256:" + "ab" * 32
    spec = make_spec(image=f"europe-docker.pkg.dev/acme/runner/data-plane@{digest}")
    (container,) = one(render(unpack(build_bundle(spec), tmp_path) / "helm-chart"), "Deployment")["spec"]["template"][
        "spec"]["containers"]
    assert container["image"] == f"europe-docker.pkg.dev/acme/runner/data-plane@{digest}"


@pytest.mark.parametrize("named", [True, False])
def test_the_chart_runs_the_versions_own_image_when_it_names_one(tmp_path: Path, named: bool) -> None:
    """issue 14: a version naming a digest-pinned ``runtime.image`` runs in it; one without runs in
    the runner image, which fetches the version's package."""
    own = "europe-docker.pkg.dev/acme/agents/spend:2.0.0@sha256:" + "cd" * 32
    runner = "us-docker.pkg.dev/agent-marketplace/runner/data-plane:1.4.2"
    manifest = AgentManifest.model_validate(yaml.safe_load(BUILTIN_MANIFEST.read_text()))
    if named:
        manifest = manifest.model_copy(update={"runtime": manifest.runtime.model_copy(update={"image": own})})
    image = agent_image(manifest, runner)
    assert image == (own if named else runner)
    (container,) = one(render(unpack(build_bundle(make_spec(image=image)), tmp_path) / "helm-chart"),
                       "Deployment")["spec"]["template"]["spec"]["containers"]
    # Pinned by digest, the chart names the image by its digest alone (a tag beside it changes nothing).
    assert container["image"] == (own.replace(":2.0.0@", "@") if named else runner)


def test_spec_keeps_its_own_copy_of_the_config() -> None:
    config: dict[str, Any] = {"accounts": ["1"]}
    spec = make_spec(agent_config=config)
    config["accounts"].append("2")
    assert spec.agent_config == {"accounts": ["1"]}


# --- the runner image ---


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        logical += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            keyword, _, arguments = logical.partition(" ")
            instructions.append((keyword.upper(), re.sub(r"\s+", " ", arguments).strip()))
            logical = ""
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_runs_the_runner_as_non_root_with_a_healthcheck() -> None:
    instructions = dockerfile_instructions((REPO / "byoc" / "Dockerfile").read_text())
    build_args = dict(arguments.split("=", 1) for keyword, arguments in instructions if keyword == "ARG")
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: build_args[m[1]], arguments.split()[0])
             for keyword, arguments in instructions if keyword == "FROM"]
    assert set(bases) == {"python:3.11-slim"}
    assert any(keyword == "RUN" and re.search(r"pip install --no-deps \./runner(\s|$)", arguments)
               for keyword, arguments in instructions)

    stage = final_stage(instructions)
    users = [arguments for keyword, arguments in stage if keyword == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid == "10001"
    last_user = max(i for i, (keyword, _) in enumerate(stage) if keyword == "USER")
    assert not any(keyword == "RUN" for keyword, _ in stage[last_user:]), "nothing runs as root after USER"
    assert ("EXPOSE", "8000") in stage
    (healthcheck,) = [arguments for keyword, arguments in stage if keyword == "HEALTHCHECK"]
    assert " CMD " in f" {healthcheck} "
    assert "http://127.0.0.1:8000/health" in healthcheck
    (entrypoint,) = [arguments for keyword, arguments in stage if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python", "-m", "runtime.runner"]


def test_dockerignore_admits_only_the_runner() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "an allow-list keeps .venv, .git, tests and local data out of the image"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"runtime", "jobs", "byoc/runner-pyproject.toml"} <= admitted
    assert not admitted & {".venv", ".git", "tests", ".data", "functions", "shared", "byoc", "pyproject.toml"}


@pytest.mark.parametrize("agent_name", ["a", "a-very-long-agent-name-that-goes-on", "x" * 63, "ab-cd-ef-gh-ij-kl-mn"])
def test_cluster_name_fits_terraform_limits(agent_name: str) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,18}[a-z0-9]", make_spec(agent_name=agent_name).cluster_name)
