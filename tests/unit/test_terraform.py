"""Terraform: the SaaS deployment (terraform/), the BYOC template (byoc/terraform/) and the
per-cloud Terraform inside generated bundles.

No provider can be downloaded here, so ``terraform init/validate`` are out of reach. Instead:
``terraform fmt -check`` (when the binary is installed), python-hcl2 parses every file, and a
reference check proves every ``var.``, ``local.``, ``data.`` and resource reference names
something the configuration declares (what ``validate`` would catch first). The structural tests
pin the properties the architecture asks for.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from shared.deployments.bundle import CLOUDS, BundleSpec, Cloud, build_bundle, specialize_terraform

REPO = Path(__file__).resolve().parents[2]
SAAS = REPO / "terraform"
BYOC = REPO / "byoc" / "terraform"
TERRAFORM = shutil.which("terraform")

PROVIDER_PREFIX = {"gke": "google", "eks": "aws", "aks": "azurerm"}
RESOURCE_REFERENCE = re.compile(
    r"(?<![\w.\"-])(?<!data\.)((?:google|aws|azurerm|random)_[a-z0-9_]+)\.([a-z_][a-z0-9_-]*)")


def unquote(label: str) -> str:
    return label.strip('"')


def tf_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tf"))


def parse(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl2.load(handle)


@dataclass
class Declarations:
    """What a Terraform module declares, read with python-hcl2."""

    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: set[tuple[str, str]] = field(default_factory=set)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    providers: set[str] = field(default_factory=set)
    required_providers: set[str] = field(default_factory=set)


def declarations(paths: Iterable[Path]) -> Declarations:
    found = Declarations()
    for path in paths:
        document = parse(path)
        for block in document.get("variable", []):
            found.variables.update({unquote(name): body for name, body in block.items()})
        for block in document.get("locals", []):
            found.locals.update(key for key in block if not key.startswith("__"))
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    found.resources[unquote(kind), unquote(name)] = body
        for block in document.get("data", []):
            for kind, named in block.items():
                found.data.update((unquote(kind), unquote(name)) for name in named)
        for block in document.get("output", []):
            found.outputs.update({unquote(name): body for name, body in block.items()})
        for block in document.get("provider", []):
            found.providers.update(unquote(name) for name in block)
        for block in document.get("terraform", []):
            for requirements in block.get("required_providers", []):
                found.required_providers.update(key for key in requirements if not key.startswith("__"))
    return found


def code_without_comments(paths: Iterable[Path]) -> str:
    return "\n".join(line for path in paths for line in path.read_text().splitlines()
                     if not line.lstrip().startswith(("#", "//")))


def dangling_references(paths: list[Path]) -> list[str]:
    """References to variables, locals, data sources or resources the module does not declare."""
    declared = declarations(paths)
    code = code_without_comments(paths)
    problems = [f"var.{name}" for name in sorted(set(re.findall(r"\bvar\.([a-z_][a-z0-9_]*)", code)))
                if name not in declared.variables]
    problems += [f"local.{name}" for name in sorted(set(re.findall(r"\blocal\.([a-z_][a-z0-9_]*)", code)))
                 if name not in declared.locals]
    problems += [f"data.{kind}.{name}" for kind, name in
                 sorted(set(re.findall(r"\bdata\.([a-z0-9_]+)\.([a-z_][a-z0-9_]*)", code)))
                 if (kind, name) not in declared.data]
    problems += [f"{kind}.{name}" for kind, name in sorted(set(RESOURCE_REFERENCE.findall(code)))
                 if (kind, name) not in declared.resources]
    return problems


def fmt_check(directory: Path) -> None:
    if TERRAFORM is None:  # a missing tool fails its test (README: nothing is skipped)
        pytest.fail("the terraform CLI is not on PATH: `terraform fmt -check` needs it (no providers, offline)")
    result = subprocess.run([TERRAFORM, "fmt", "-check", "-recursive", "-diff", "-no-color", str(directory)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"terraform fmt -check failed in {directory}:\n{result.stdout}{result.stderr}"


def bundle_terraform(cloud: Cloud, into: Path) -> Path:
    spec = BundleSpec(control_plane_url="https://api.aicloudconsult.com", deployment_id="dep_01jd8x2m4k",
                      org_id="org_01jd8x0a1b", agent_name="cost-optimizer", agent_version="1.4.2",
                      image="us-docker.pkg.dev/aicloudguard/marketplace/data-plane-runner:1.4.2", cloud=cloud)
    with tarfile.open(fileobj=io.BytesIO(build_bundle(spec)), mode="r:gz") as archive:
        archive.extractall(into, filter="data", members=[m for m in archive.getmembers()
                                                        if m.name.startswith("terraform")])
    return into / "terraform"


# --- formatting and parsing ---


@pytest.mark.parametrize("directory", [SAAS, BYOC], ids=["saas", "byoc"])
def test_terraform_fmt_check(directory: Path) -> None:
    fmt_check(directory)


@pytest.mark.parametrize("path", tf_files(SAAS) + tf_files(BYOC), ids=lambda p: str(p.relative_to(REPO)))
def test_every_tf_file_parses_with_python_hcl2(path: Path) -> None:
    assert parse(path), f"{path} declares nothing"


@pytest.mark.parametrize("directory", [SAAS, BYOC], ids=["saas", "byoc"])
def test_every_reference_resolves(directory: Path) -> None:
    assert dangling_references(tf_files(directory)) == []


def test_reference_check_catches_a_dangling_reference(tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(
        'resource "google_storage_bucket" "logs" {\n  name = var.bucket\n  location = local.region\n}\n\n'
        'output "x" {\n  value = google_storage_bucket.missing.name\n}\n')
    assert dangling_references([tmp_path / "main.tf"]) == ["var.bucket", "local.region",
                                                            "google_storage_bucket.missing"]


# --- the BYOC template ---


def test_byoc_template_has_the_architecture_files() -> None:
    assert {path.name for path in tf_files(BYOC)} == {
        "main.tf", "networking.tf", "iam.tf", "storage.tf", "outputs.tf", "variables.tf", "versions.tf"}


def test_byoc_cloud_variable_defaults_to_gke() -> None:
    cloud = declarations(tf_files(BYOC)).variables["cloud"]
    assert unquote(cloud["default"]) == "gke"
    assert 'contains(["gke", "eks", "aks"], var.cloud)' in cloud["validation"][0]["condition"]


@pytest.mark.parametrize("cloud", CLOUDS)
def test_byoc_every_resource_is_gated_on_its_cloud(cloud: str) -> None:
    """Each cloud's resources exist only when var.cloud selects it (count/for_each on local.<cloud>)."""
    declared = declarations(tf_files(BYOC))
    prefix = PROVIDER_PREFIX[cloud]
    gated = {key for key in declared.resources if key[0].startswith(f"{prefix}_")}
    assert gated, f"no {cloud} resources"
    for (kind, name), body in declared.resources.items():
        if (kind, name) not in gated:
            continue
        meta = str(body.get("count", body.get("for_each", "")))
        assert f"local.{cloud}" in meta or re.search(rf"\b{prefix}_[a-z0-9_]+\.{cloud}", meta), \
            f"{kind}.{name} is not gated on cloud {cloud}: {meta!r}"


def test_byoc_cluster_per_cloud() -> None:
    resources = declarations(tf_files(BYOC)).resources
    gke = resources["google_container_cluster", "gke"]
    assert unquote(gke["workload_identity_config"][0]["workload_pool"]) == "${var.gke_project_id}.svc.id.goog"
    assert gke["private_cluster_config"][0]["enable_private_nodes"] is True
    assert gke["addons_config"][0]["gcp_filestore_csi_driver_config"][0]["enabled"] is True
    eks = resources["aws_eks_cluster", "eks"]
    assert [unquote(r) for r in eks["encryption_config"][0]["resources"]] == ["secrets"]
    assert ("aws_eks_addon", "eks_efs_csi_driver") in resources
    aks = resources["azurerm_kubernetes_cluster", "aks"]
    assert aks["workload_identity_enabled"] is True and aks["oidc_issuer_enabled"] is True
    assert aks["storage_profile"][0]["file_driver_enabled"] is True


def test_byoc_logs_storage_is_private_and_expires_after_90_days() -> None:
    declared = declarations(tf_files(BYOC))
    assert unquote(str(declared.variables["logs_retention_days"]["default"])) == "90"
    bucket = declared.resources["google_storage_bucket", "gke_logs"]
    assert unquote(bucket["public_access_prevention"]) == "enforced"
    assert bucket["lifecycle_rule"][0]["condition"][0]["age"] == "${var.logs_retention_days}"
    assert declared.resources["aws_s3_bucket_public_access_block", "eks_logs"]["block_public_acls"] is True
    assert declared.resources["aws_efs_file_system", "eks_logs"]["encrypted"] is True
    assert declared.resources["aws_efs_backup_policy", "eks_logs"]["backup_policy"][0]["status"] == '"ENABLED"'
    assert unquote(declared.resources["azurerm_storage_account", "aks_logs"]["min_tls_version"]) == "TLS1_2"


def test_byoc_outputs_feed_the_helm_chart() -> None:
    outputs = declarations(tf_files(BYOC)).outputs
    for cloud in CLOUDS:
        assert {f"{cloud}_helm_values", f"{cloud}_kubeconfig_command", f"{cloud}_cluster_name"} <= set(outputs)
    assert "iam.gke.io/gcp-service-account" in str(outputs["gke_helm_values"]["value"])
    assert "azure.workload.identity/client-id" in str(outputs["aks_helm_values"]["value"])
    assert "efs.csi.aws.com" in str(outputs["eks_helm_values"]["value"])


# --- the Terraform of a generated bundle: one cloud only ---


@pytest.mark.parametrize("cloud", CLOUDS)
def test_bundle_terraform_keeps_only_the_selected_cloud(tmp_path: Path, cloud: Cloud) -> None:
    directory = bundle_terraform(cloud, tmp_path)
    paths = tf_files(directory)
    declared = declarations(paths)
    assert declared.required_providers == declared.providers == {PROVIDER_PREFIX[cloud]}
    others = {PROVIDER_PREFIX[other] for other in CLOUDS if other != cloud}
    assert not any(kind.split("_")[0] in others for kind, _ in [*declared.resources, *declared.data])
    assert not any(name.split("_")[0] in set(CLOUDS) - {cloud} for name in [*declared.variables, *declared.outputs])
    assert dangling_references(paths) == []
    assert unquote(parse(directory / "terraform.tfvars")["cloud"]) == cloud
    fmt_check(directory)


def test_specialising_the_template_keeps_every_block_exactly_once() -> None:
    """Across the three clouds each cloud-specific block appears once; shared blocks appear in all."""
    for path in tf_files(BYOC):
        text = path.read_text()
        headers = re.findall(r'^(?:resource|data|output|variable|provider) .*\{$', text, re.MULTILINE)
        counted: dict[str, int] = {}
        for cloud in CLOUDS:
            for header in re.findall(r'^(?:resource|data|output|variable|provider) .*\{$',
                                     specialize_terraform(text, cloud), re.MULTILINE):
                counted[header] = counted.get(header, 0) + 1
        assert set(counted) == set(headers), path.name
        for header, count in counted.items():
            assert count in (1, len(CLOUDS)), f"{path.name}: {header} kept {count} times"


def test_specialising_refuses_heredocs() -> None:
    with pytest.raises(ValueError, match="heredoc"):
        specialize_terraform('resource "aws_iam_policy" "p" {\n  policy = <<EOT\n{}\nEOT\n}\n', "eks")


# --- the SaaS deployment ---


@pytest.fixture(scope="module")
def saas() -> Declarations:
    return declarations(tf_files(SAAS))


def test_saas_cloud_sql_is_private_backed_up_and_highly_available(saas: Declarations) -> None:
    settings = saas.resources["google_sql_database_instance", "main"]["settings"][0]
    ip = settings["ip_configuration"][0]
    assert ip["ipv4_enabled"] is False
    assert ip["private_network"] == "${google_compute_network.main.id}"
    backups = settings["backup_configuration"][0]
    assert backups["enabled"] is True and backups["point_in_time_recovery_enabled"] is True
    assert unquote(saas.variables["db_availability_type"]["default"]) == "REGIONAL"
    assert unquote(saas.variables["db_version"]["default"]).startswith("POSTGRES_")
    assert ("google_service_networking_connection", "private_services") in saas.resources


def test_saas_has_the_platform_services(saas: Declarations) -> None:
    kinds = {kind for kind, _ in saas.resources}
    assert {
        "google_sql_database_instance", "google_firestore_database", "google_cloud_tasks_queue",
        "google_cloud_run_v2_service", "google_cloudfunctions2_function",
        "google_api_gateway_api", "google_api_gateway_api_config", "google_api_gateway_gateway",
        "google_secret_manager_secret", "google_cloud_scheduler_job", "google_service_account",
        "google_vpc_access_connector", "google_artifact_registry_repository",
    } <= kinds
    functions = saas.resources["google_cloudfunctions2_function", "api"]
    assert functions["for_each"] == "${toset(var.function_names)}"
    assert functions["build_config"][0]["entry_point"] == "${each.value}"
    config = saas.resources["google_api_gateway_api_config", "marketplace"]
    assert "var.openapi_spec_path" in str(config["openapi_documents"])
    # Agent runs execute in per-deployment Cloud Run jobs that the functions create at install
    # (the provisioner) and start from dispatch_task: no shared job is declared here, and the
    # functions' account may create jobs and the per-deployment accounts they run as.
    assert "google_cloud_run_v2_job" not in kinds
    code = code_without_comments(tf_files(SAAS))
    assert '"roles/run.developer"' in code
    assert "google_service_account_iam_member" in kinds


def test_saas_isolates_each_deployments_data_plane_key(saas: Declarations) -> None:
    code = code_without_comments(tf_files(SAAS))
    # No account may read every data-plane key: the prefix-scoped grant of the shared
    # data-plane account is gone; it reads the shared service's own key only.
    assert "google_project_iam_member" not in [kind for kind, name in saas.resources if name == "data_plane_keys"]
    assert not re.search(r'role\s*=\s*"roles/secretmanager.secretAccessor"[^}]*condition', code)
    shared_key = saas.resources["google_secret_manager_secret_iam_member", "data_plane_key"]
    assert unquote(shared_key["secret_id"]) == '${google_secret_manager_secret.app["dataplane-api-key"].id}'
    assert unquote(shared_key["member"]) == "serviceAccount:${google_service_account.data_plane.email}"
    # The functions create, delete and act as the per-deployment accounts, without keys or
    # account policies (a custom role, not roles/iam.serviceAccountAdmin).
    identities = saas.resources["google_project_iam_custom_role", "dataplane_identity_admin"]
    assert sorted(unquote(p) for p in identities["permissions"]) == ["iam.serviceAccounts.actAs", "iam.serviceAccounts.create",
                                                 "iam.serviceAccounts.delete", "iam.serviceAccounts.get"]
    assert "roles/iam.serviceAccountAdmin" not in code
    functions = "serviceAccount:${google_service_account.functions.email}"
    binding = saas.resources["google_project_iam_member", "functions_dataplane_identities"]
    assert unquote(binding["role"]) == "${google_project_iam_custom_role.dataplane_identity_admin.id}"
    assert unquote(binding["member"]) == functions
    # ...and set the policy of the per-deployment key secrets only.
    granter = saas.resources["google_project_iam_custom_role", "dataplane_key_granter"]
    assert "secretmanager.secrets.setIamPolicy" in [unquote(p) for p in granter["permissions"]]
    grants = saas.resources["google_project_iam_member", "functions_dataplane_key_grants"]
    assert unquote(grants["member"]) == functions
    expression = unquote(grants["condition"][0]["expression"])
    assert "/secrets/dataplane-" in expression and "!resource.name.startsWith" in expression
    assert "dataplane-api-key" in expression


def test_saas_schedules_the_periodic_jobs(saas: Declarations, cloudbuild: dict[str, Any]) -> None:
    jobs = {unquote(name): value for name, value in saas.variables["scheduled_jobs"]["default"].items()}
    platform = {
        "deployments-unreachable",
        "runs-reconcile",
        "webhooks-deliver",
        "secrets-rewrap",
        "webhooks-reseal",
        "webhooks-purge",
        "queue-relay",
        "billing-cycle",
        "billing-payouts",
        "approvals-expire",
        "approvals-remind",
        "notifications-deliver",
        "memory-gc",
    }
    assert set(jobs) == platform
    # Every scheduled function is deployed: it is a registered operation (cloudbuild.yaml deploys
    # one function per operation, plus _EXTRA_FUNCTIONS, which is empty).
    from functions.main import load_operations
    from functions.operation import REGISTRY

    load_operations()
    assert {unquote(job["function"]) for job in jobs.values()} <= {op.name for op in REGISTRY}
    assert cloudbuild["substitutions"]["_EXTRA_FUNCTIONS"] == ""
    # Every periodic job the platform runs locally (functions/scheduler.py) is scheduled by
    # name through the scheduled-job function in gcp mode, and nothing else goes there.
    from functions.scheduler import platform_jobs

    class _Anything:
        def __getattr__(self, name: str) -> Any:
            return (lambda: 0) if name == "relay" else None

    class _Services:
        def __getattr__(self, name: str) -> Any:
            return _Anything()
    assert {job.name for job in platform_jobs(_Services())} == platform
    assert {name for name, job in jobs.items() if unquote(job["function"]) == "run_scheduled_job"} == platform
    scheduler = saas.resources["google_cloud_scheduler_job", "jobs"]
    assert "oidc_token" in scheduler["http_target"][0]


def test_saas_grants_no_primitive_roles(saas: Declarations) -> None:
    code = code_without_comments(tf_files(SAAS))
    assert not re.search(r"roles/(owner|editor|viewer)\b", code)
    assert not re.search(r"allUsers|allAuthenticatedUsers", code)
    accounts = {name for kind, name in saas.resources if kind == "google_service_account"}
    assert accounts == {"functions", "functions_build", "data_plane", "tasks", "scheduler", "gateway"}


def test_saas_outputs(saas: Declarations) -> None:
    assert {"gateway_url", "cloudsql_connection_name", "function_urls", "service_accounts"} <= set(saas.outputs)


# --- cloudbuild.yaml drives the SaaS Terraform ---


@pytest.fixture(scope="module")
def cloudbuild() -> dict[str, Any]:
    return yaml.safe_load((REPO / "cloudbuild.yaml").read_text())  # type: ignore[no-any-return]


def step(cloudbuild: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in cloudbuild["steps"] if s["id"] == step_id)


def test_cloudbuild_pipeline_order(cloudbuild: dict[str, Any]) -> None:
    text = (REPO / "cloudbuild.yaml").read_text()
    for needle in ("ruff check", "--file=byoc/Dockerfile", "push", "marketplace openapi --gateway",
                   "terraform -chdir=terraform apply", "gcloud functions deploy"):
        assert needle in text, needle
    ids = [s["id"] for s in cloudbuild["steps"]]
    assert set(step(cloudbuild, "image-push")["waitFor"]) >= {"lint", "test"}, "only tested images are pushed"
    test = step(cloudbuild, "test")
    assert "bash /tmp/ci/.ci/run" in test["args"][-1], "the build tests with the README's command, as CI does"
    assert "CI=true" in test["env"]
    assert ids.index("terraform-apply") < ids.index("functions-deploy")
    assert set(step(cloudbuild, "terraform-apply")["waitFor"]) >= {"image-push", "gateway-config"}


def test_cloudbuild_gives_terraform_every_required_variable(cloudbuild: dict[str, Any], saas: Declarations) -> None:
    source = step(cloudbuild, "functions-source")["args"][1]
    tree = ast.parse(source)
    (tfvars,) = [node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "tfvars" for t in node.targets)]
    assert isinstance(tfvars, ast.Dict)
    passed = {key.value for key in tfvars.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)}
    required = {name for name, body in saas.variables.items() if "default" not in body}
    assert required <= passed, f"missing: {sorted(required - passed)}"
    assert passed <= set(saas.variables), f"unknown: {sorted(passed - set(saas.variables))}"
