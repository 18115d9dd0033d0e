"""The BYOC bundle: everything a customer needs to run one deployment's data plane in their cloud.

``build_bundle(spec)`` returns a deterministic ``.tar.gz`` (same spec, same bytes) holding

- ``helm-chart/``: the data-plane chart (``byoc/chart``) whose ``values.yaml`` is filled in for the
  deployment: control-plane URL, deployment and agent identity, agent config, image, and a
  reference to the Kubernetes Secret with the data-plane API key;
- ``terraform/``: the customer-cluster template (``byoc/terraform``) reduced to the selected cloud
  (GKE, EKS or AKS) so it needs that cloud's provider and credentials only, plus a generated
  ``terraform.tfvars``;
- ``README.md``: the install steps.

The API key is written into the bundle only when ``include_secret=True`` is asked for explicitly;
otherwise the README tells the customer to create the Secret with ``kubectl`` themselves.
Pure Python: the templates are package data read with :mod:`importlib.resources`.
"""

from __future__ import annotations

import copy
import gzip
import io
import ipaddress
import json
import logging
import math
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Final, Literal, NamedTuple, get_args
from urllib.parse import urlsplit

import yaml

from shared.catalog import SemVer, SemVerError

_log = logging.getLogger(__name__)

Cloud = Literal["gke", "eks", "aks"]
"""Where the customer's cluster runs: Google (GKE), AWS (EKS) or Azure (AKS)."""

CLOUDS: Final[tuple[Cloud, ...]] = get_args(Cloud)
NAMESPACE: Final = "agent-marketplace"
"""The namespace the chart installs into (the architecture's fixed name)."""
RELEASE_NAME: Final = "agent-marketplace"
DEFAULT_SECRET_NAME: Final = "agent-credentials"  # noqa: S105 - a Secret's name, not a secret
SECRET_KEY: Final = "dataplane-api-key"  # noqa: S105 - a key name inside the Secret
"""The key inside the credentials Secret that holds the data-plane API key."""
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MEDIA_TYPE: Final = "application/gzip"

# Every entry carries this modification time (1980-01-01, the earliest a zip can hold too), so
# the archive's bytes depend on the spec alone.
_FIXED_MTIME: Final = 315_532_800
_MAX_CONFIG_BYTES: Final = 256 * 1024  # a ConfigMap holds at most 1 MiB in total
_MAX_URL_LENGTH: Final = 2048
_MAX_API_KEY_LENGTH: Final = 4096

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Platform ids (``dep_...``, ``org_...``) double as Kubernetes label values and cloud labels.
_IDENTIFIER = re.compile(r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$")
# registry[:port]/path[:tag][@sha256:digest], fully qualified, with a tag or a digest.
_IMAGE = re.compile(
    r"^(?P<repository>[a-z0-9]+(?:[.-][a-z0-9]+)*(?::[0-9]{1,5})?"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)+)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x20\x7f]")

_CHART_SUFFIXES: Final = frozenset({".yaml", ".tpl", ".txt", ".json"})
_TERRAFORM_SUFFIXES: Final = frozenset({".tf"})


@dataclass(frozen=True)
class BundleSpec:
    """What one BYOC bundle is generated for; invalid input raises :class:`ValueError`.

    ``api_key`` (the data-plane API key) is never shown by ``repr`` and never logged; it is
    written into the bundle only by ``build_bundle(spec, include_secret=True)``.
    """

    control_plane_url: str
    """Base URL of the control plane: ``https://``, or ``http://`` for a loopback host only."""
    deployment_id: str
    org_id: str
    agent_name: str
    """The agent's slug (a DNS-1123 label)."""
    agent_version: str
    """The agent's semantic version."""
    image: str
    """The data-plane runner image, fully qualified, with a tag or a ``sha256`` digest."""
    agent_config: Mapping[str, Any] = field(default_factory=dict, hash=False)
    """The install-time agent configuration (a JSON object)."""
    credential_secret_name: str = DEFAULT_SECRET_NAME
    """The Kubernetes Secret the data plane reads its API key from (key ``dataplane-api-key``)."""
    api_key: str | None = field(default=None, repr=False, hash=False)
    cloud: Cloud = "gke"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        _check_url(self.control_plane_url)
        _check_identifier("deployment_id", self.deployment_id)
        _check_identifier("org_id", self.org_id)
        _check_dns_label("agent_name", self.agent_name)
        try:
            SemVer.parse(self.agent_version)
        except SemVerError as exc:
            raise ValueError(f"agent_version: {exc}") from None
        _image_parts(self.image)
        if not isinstance(self.credential_secret_name, str) or len(self.credential_secret_name) > 253 or \
                not _DNS1123_SUBDOMAIN.match(self.credential_secret_name):
            raise ValueError(f"credential_secret_name: {self.credential_secret_name!r} is not a valid Kubernetes "
                             "Secret name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.')")
        if self.cloud not in CLOUDS:
            raise ValueError(f"cloud: {self.cloud!r} is not one of {', '.join(CLOUDS)}")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}")
        if self.api_key is not None:
            _check_api_key(self.api_key)
        # A private deep copy: the spec never changes under the caller's later edits.
        object.__setattr__(self, "agent_config", json.loads(_config_json(self.agent_config)))

    @property
    def agent_config_json(self) -> str:
        """The agent configuration as canonical JSON (sorted keys, no insignificant spaces)."""
        return _config_json(self.agent_config)

    @property
    def cluster_name(self) -> str:
        """Base name of the customer's cluster resources (Terraform ``name``, 4-20 characters)."""
        return f"am-{self.agent_name}"[:20].rstrip("-")


def bundle_filename(spec: BundleSpec) -> str:
    """A download name for the bundle, e.g. ``agent-marketplace-cost-optimizer-dep_01h....tar.gz``."""
    return f"agent-marketplace-{spec.agent_name}-{spec.deployment_id}.tar.gz"


def build_bundle(spec: BundleSpec, *, include_secret: bool = False) -> bytes:
    """The deployment's BYOC bundle as deterministic ``.tar.gz`` bytes.

    ``include_secret=True`` writes ``spec.api_key`` in clear into ``helm-chart/values.yaml`` (the
    chart then creates the Secret itself); it raises :class:`ValueError` when the spec has no key.
    """
    if include_secret and spec.api_key is None:
        raise ValueError("include_secret=True needs a spec with an api_key")
    files: dict[str, bytes] = {}
    for path, data in _package_tree("chart", _CHART_SUFFIXES):
        if path != "values.yaml":
            files[f"helm-chart/{path}"] = data
    files["helm-chart/values.yaml"] = _chart_values(spec, include_secret=include_secret).encode()
    for path, data in _package_tree("terraform", _TERRAFORM_SUFFIXES):
        files[f"terraform/{path}"] = specialize_terraform(data.decode(), spec.cloud).encode()
    files["terraform/terraform.tfvars"] = _tfvars(spec).encode()
    files["README.md"] = _readme(spec, include_secret=include_secret).encode()
    private = {"helm-chart/values.yaml"} if include_secret else set()
    archive = _tar_gz(files, private=private)
    _log.info("built BYOC bundle for deployment %s (%s %s on %s): %d files, %d bytes, key embedded: %s",
              spec.deployment_id, spec.agent_name, spec.agent_version, spec.cloud, len(files), len(archive),
              include_secret)
    return archive


# --- validation ---


def _check_url(url: object) -> None:
    if not isinstance(url, str) or not url:
        raise ValueError("control_plane_url: a URL is required")
    if len(url) > _MAX_URL_LENGTH or _CONTROL_CHARACTERS.search(url):
        raise ValueError("control_plane_url: must be a single URL without spaces or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - parsing the port raises ValueError when it is out of range
    except ValueError as exc:
        raise ValueError(f"control_plane_url: {exc}") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"control_plane_url: {url!r} must be an absolute https:// URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ValueError(f"control_plane_url: {url!r} must use https (http is allowed for loopback hosts only)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("control_plane_url: must not carry credentials (user:password@)")
    if parts.query or parts.fragment:
        raise ValueError("control_plane_url: must be a base URL without a query or fragment")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_identifier(name: str, value: object) -> None:
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise ValueError(f"{name}: {value!r} must be 1-63 lowercase letters, digits, '_' or '-', "
                         "starting and ending with a letter or digit")


def _check_dns_label(name: str, value: object) -> None:
    if not isinstance(value, str) or not _DNS1123_LABEL.match(value):
        raise ValueError(f"{name}: {value!r} must be a DNS-1123 label (1-63 lowercase letters, digits and '-', "
                         "starting and ending with a letter or digit)")


def _check_api_key(key: object) -> None:
    # The messages never quote the key.
    if not isinstance(key, str) or not key:
        raise ValueError("api_key: must be a non-empty string when given")
    if len(key) > _MAX_API_KEY_LENGTH or _CONTROL_CHARACTERS.search(key):
        raise ValueError("api_key: must be a single token without spaces or control characters")


def _image_parts(image: object) -> dict[str, str]:
    match = _IMAGE.match(image) if isinstance(image, str) else None
    if match is None:
        raise ValueError(f"image: {image!r} is not a fully qualified image reference "
                         "(registry/path:tag or registry/path@sha256:digest)")
    if match["tag"] is None and match["digest"] is None:
        raise ValueError(f"image: {image!r} needs an explicit tag or digest")
    return {"repository": match["repository"], "tag": match["tag"] or "", "digest": match["digest"] or ""}


def _config_json(config: object) -> str:
    if not isinstance(config, Mapping):
        raise ValueError(f"agent_config: must be a JSON object (a mapping), not {type(config).__name__}")
    try:
        _check_json_value(config, "agent_config")
    except RecursionError:
        raise ValueError("agent_config: nested too deeply (or refers to itself)") from None
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if len(text.encode()) > _MAX_CONFIG_BYTES:
        raise ValueError(f"agent_config: {len(text.encode())} bytes as JSON, more than the {_MAX_CONFIG_BYTES} allowed")
    return text


def _check_json_value(value: object, where: str) -> None:
    """Accept exactly what JSON can carry, naming the first offending path otherwise."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} is not a finite number and cannot be written as JSON")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string; JSON object keys must be strings")
            _check_json_value(item, f"{where}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_json_value(item, f"{where}[{index}]")
        return
    raise ValueError(f"{where}: a {type(value).__name__} is not JSON-serialisable")


# --- templates ---


def _package_tree(directory: str, suffixes: frozenset[str]) -> Iterator[tuple[str, bytes]]:
    """Template files under ``byoc/<directory>`` as (relative path, bytes), sorted by path."""
    yield from _walk(resources.files("byoc").joinpath(directory), "", suffixes)


def _walk(node: Traversable, prefix: str, suffixes: frozenset[str]) -> Iterator[tuple[str, bytes]]:
    for child in sorted(node.iterdir(), key=lambda entry: entry.name):
        if child.name.startswith(".") or child.name == "__pycache__":
            continue  # .terraform/, editor files, byte code
        path = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _walk(child, f"{path}/", suffixes)
        elif any(child.name.endswith(suffix) for suffix in suffixes) and "tfstate" not in child.name:
            yield path, child.read_bytes()


def _chart_values(spec: BundleSpec, *, include_secret: bool) -> str:
    defaults = yaml.safe_load(resources.files("byoc").joinpath("chart", "values.yaml").read_text())
    image = _image_parts(spec.image)
    overlay: dict[str, Any] = {
        "namespace": NAMESPACE,
        "image": {"repository": image["repository"], "tag": image["tag"], "digest": image["digest"]},
        "controlPlane": {"url": spec.control_plane_url},
        "deployment": {"id": spec.deployment_id, "orgId": spec.org_id},
        "agent": {"name": spec.agent_name, "version": spec.agent_version, "configJson": spec.agent_config_json},
        "logging": {"level": spec.log_level},
        "credentials": (
            {"existingSecret": "", "apiKey": spec.api_key} if include_secret
            else {"existingSecret": spec.credential_secret_name, "apiKey": ""}
        ),
    }
    values = _deep_merge(defaults, overlay)
    where = ("THIS FILE HOLDS THE DATA-PLANE API KEY: keep it private; the chart creates the Secret "
             f"{DEFAULT_SECRET_NAME}." if include_secret else
             f"The data-plane API key is read from the existing Secret {spec.credential_secret_name} "
             f"(key {SECRET_KEY}).")
    header = (
        f"# Values of the Agent Marketplace data plane for deployment {spec.deployment_id}\n"
        f"# ({spec.agent_name} {spec.agent_version}), generated by the marketplace.\n"
        f"# {where}\n"
        "# Cluster-specific values (workload identity, storage class) come from Terraform:\n"
        f"#   terraform -chdir=terraform output -json {spec.cloud}_helm_values > cluster-values.json\n"
    )
    return header + yaml.safe_dump(values, sort_keys=False, default_flow_style=False, allow_unicode=True,
                                   width=1_000_000)


def _deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --- Terraform: keep only the selected cloud ---

_CLOUD_OF_PREFIX: Final[Mapping[str, Cloud]] = {"google": "gke", "aws": "eks", "azurerm": "aks"}
_CLOUD_BY_NAME: Final[Mapping[str, Cloud]] = {cloud: cloud for cloud in CLOUDS}
_BLOCK_HEADER = re.compile(r'^(?P<kind>[a-z_]+)(?P<labels>(?:\s+"[^"]*")*)\s*\{(?P<closed>\s*\})?$')
_SECTION = re.compile(r"^# --- (?P<title>.+) ---$")
_HEREDOC = re.compile(r"<<-?[A-Za-z_]+\s*$")


def specialize_terraform(text: str, cloud: Cloud) -> str:
    """A ``terraform fmt``-formatted template reduced to the blocks ``cloud`` uses.

    A top-level block belongs to a cloud by name: ``resource``/``data`` by the type's provider
    prefix (``google_``, ``aws_``, ``azurerm_``), ``provider`` by its name, ``variable`` and
    ``output`` by a ``gke_``/``eks_``/``aks_`` prefix; every other block is shared. Comments
    directly above a block go with it, ``# --- <cloud> ---`` section headings with their cloud,
    and ``required_providers`` loses the other clouds' entries. Terraform configures every
    provider a configuration uses, even for ``count = 0`` resources, so without this a customer
    would need credentials for all three clouds.
    """
    if cloud not in CLOUDS:
        raise ValueError(f"cloud: {cloud!r} is not one of {', '.join(CLOUDS)}")
    kept = [_drop_other_providers(chunk.text, cloud) if chunk.kind == "terraform" else chunk.text
            for chunk in _chunks(text) if chunk.owner is None or chunk.owner == cloud]
    return "\n\n".join(kept) + "\n"


class _Chunk(NamedTuple):
    owner: Cloud | None  # None: shared by every cloud
    kind: str  # the block type ("resource", "terraform", ...), "#" for a comment paragraph
    text: str


def _chunks(text: str) -> Iterator[_Chunk]:
    """Split a template into comment paragraphs and top-level blocks, each with its owning cloud."""
    lines = text.splitlines()
    index = 0
    pending: list[str] = []  # comment lines directly above the next block
    while index < len(lines):
        line = lines[index]
        if _HEREDOC.search(line):
            raise ValueError(f"line {index + 1}: heredocs are not supported in BYOC templates; use jsonencode")
        if not line.strip():
            if pending:
                yield _Chunk(_paragraph_owner(pending), "#", "\n".join(pending))
                pending = []
            index += 1
            continue
        header = _BLOCK_HEADER.match(line)
        if header is None:
            if line.startswith(("#", "//")):
                pending.append(line)
                index += 1
                continue
            raise ValueError(f"line {index + 1}: expected a top-level block or a comment, got {line!r}")
        end = index
        if header["closed"] is None:
            while end < len(lines) and lines[end] != "}":
                if _HEREDOC.search(lines[end]):
                    raise ValueError(f"line {end + 1}: heredocs are not supported in BYOC templates")
                end += 1
            if end == len(lines):
                raise ValueError(f"line {index + 1}: block is never closed at column 0")
        labels = re.findall(r'"([^"]*)"', header["labels"])
        yield _Chunk(_block_owner(header["kind"], labels), header["kind"], "\n".join([*pending, *lines[index:end + 1]]))
        pending = []
        index = end + 1
    if pending:
        yield _Chunk(_paragraph_owner(pending), "#", "\n".join(pending))


def _block_owner(kind: str, labels: list[str]) -> Cloud | None:
    if kind in ("resource", "data") and labels:
        return _CLOUD_OF_PREFIX.get(labels[0].split("_", 1)[0])
    if kind == "provider" and labels:
        return _CLOUD_OF_PREFIX.get(labels[0])
    if kind in ("variable", "output") and labels:
        return _CLOUD_BY_NAME.get(labels[0].split("_", 1)[0])
    return None


def _paragraph_owner(lines: list[str]) -> Cloud | None:
    section = _SECTION.match(lines[0])
    if section is None:
        return None
    found = [cloud for cloud in CLOUDS if re.search(rf"\b{cloud}\b", section["title"], re.IGNORECASE)]
    return found[0] if len(found) == 1 else None


def _drop_other_providers(block: str, cloud: Cloud) -> str:
    out: list[str] = []
    skipping = False
    for line in block.splitlines():
        entry = re.match(r"^    (?P<name>[a-z][a-z0-9-]*) = \{$", line)
        if entry and _CLOUD_OF_PREFIX.get(entry["name"], cloud) != cloud:
            skipping = True
        if not skipping:
            out.append(line)
        elif line == "    }":
            skipping = False
    return "\n".join(out)


def _hcl_string(value: str) -> str:
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("${", "$${").replace("%{", "%%{"))
    return f'"{escaped}"'


def _tfvars(spec: BundleSpec) -> str:
    assignments = {
        "cloud": spec.cloud,
        "name": spec.cluster_name,
        "deployment_id": spec.deployment_id,
        "org_id": spec.org_id,
    }
    width = max(len(key) for key in assignments)
    lines = [
        f"# Terraform inputs for deployment {spec.deployment_id} ({spec.agent_name} {spec.agent_version}),",
        "# generated by the marketplace. See variables.tf for every input and its default.",
        "",
        *(f"{key.ljust(width)} = {_hcl_string(value)}" for key, value in assignments.items()),
        "",
        *_cloud_tfvars_hints(spec.cloud),
    ]
    return "\n".join(lines) + "\n"


def _cloud_tfvars_hints(cloud: Cloud) -> list[str]:
    required = {
        "gke": ['# Required: the Google Cloud project that hosts the cluster.', '# gke_project_id = "my-project"'],
        "eks": ["# AWS credentials and account come from your AWS CLI profile or environment."],
        "aks": ['# Required: the Azure subscription that hosts the cluster.',
                '# aks_subscription_id = "00000000-0000-0000-0000-000000000000"'],
    }[cloud]
    region = {"gke": "us-central1", "eks": "us-east-1", "aks": "eastus"}[cloud]
    return [
        *required,
        "",
        "# Optional: the region, and the networks allowed to reach the Kubernetes API.",
        f'# region              = "{region}"',
        '# cluster_admin_cidrs = ["203.0.113.0/24"]',
    ]


# --- README ---

_KUBECONFIG_TOOL: Final[Mapping[Cloud, str]] = {
    "gke": "the Google Cloud CLI (`gcloud`) signed in to the target project",
    "eks": "the AWS CLI (`aws`) with credentials for the target account",
    "aks": "the Azure CLI (`az`) signed in to the target subscription",
}
_TFVARS_STEP: Final[Mapping[Cloud, str]] = {
    "gke": "set `gke_project_id`",
    "eks": "adjust `region` if needed",
    "aks": "set `aks_subscription_id`",
}


def _readme(spec: BundleSpec, *, include_secret: bool) -> str:
    secret = spec.credential_secret_name
    secret_step = (
        f"4. The data-plane API key is embedded in `helm-chart/values.yaml` (`credentials.apiKey`): the chart\n"
        f"   creates the Secret `{DEFAULT_SECRET_NAME}` itself. Keep this bundle private and delete it after\n"
        "   the install.\n"
        if include_secret else
        f"4. Store the data-plane API key (shown once by the marketplace) in the Secret `{secret}`;\n"
        "   `read -rs` keeps it out of your shell history and off the process list:\n\n"
        "   ```sh\n"
        "   read -rsp 'Data-plane API key: ' MARKETPLACE_DATAPLANE_KEY; echo\n"
        f"   printf %s \"$MARKETPLACE_DATAPLANE_KEY\" | kubectl create secret generic {secret} \\\n"
        f"     --namespace {NAMESPACE} --from-file={SECRET_KEY}=/dev/stdin\n"
        "   unset MARKETPLACE_DATAPLANE_KEY\n"
        "   ```\n"
    )
    return f"""# Agent Marketplace data plane: {spec.agent_name} {spec.agent_version}

Bring-your-own-cloud bundle for deployment `{spec.deployment_id}` (organisation `{spec.org_id}`),
target cloud **{spec.cloud.upper()}**. The data plane runs in your cluster and only makes outbound HTTPS
calls to the control plane at `{spec.control_plane_url}`; nothing needs to reach it from outside.

## Contents

- `terraform/`: the cluster (namespace `{NAMESPACE}`, private nodes, autoscaling node pool), its
  network, the workload identity of the data plane, and storage for agent logs.
- `helm-chart/`: the data plane: Deployment `data-plane-agent` (2-10 replicas, autoscaled), ConfigMap
  `agent-config`, Service `agent-service` (port 8000, `/health`), PersistentVolumeClaim `agent-logs`
  (100 GiB, 90-day retention). `helm-chart/values.yaml` is already filled in for this deployment.

## Requirements

Terraform >= 1.9, Helm >= 3.14, kubectl, and {_KUBECONFIG_TOOL[spec.cloud]}.

## Install

1. Review `terraform/terraform.tfvars` and {_TFVARS_STEP[spec.cloud]}.
2. Create the cluster:

   ```sh
   terraform -chdir=terraform init
   terraform -chdir=terraform apply
   ```

3. Point kubectl and Helm at the new cluster, create the namespace, and save the cluster-specific
   chart values:

   ```sh
   sh -c "$(terraform -chdir=terraform output -raw {spec.cloud}_kubeconfig_command)"
   kubectl create namespace {NAMESPACE}
   terraform -chdir=terraform output -json {spec.cloud}_helm_values > cluster-values.json
   ```

{secret_step}
5. Install the data plane:

   ```sh
   helm install {RELEASE_NAME} ./helm-chart -n {NAMESPACE} -f cluster-values.json
   kubectl -n {NAMESPACE} rollout status deployment/data-plane-agent
   ```

The deployment appears as connected in the marketplace once the first replica registers.

## Upgrade and removal

- New configuration or agent version: download a fresh bundle and run
  `helm upgrade {RELEASE_NAME} ./helm-chart -n {NAMESPACE} -f cluster-values.json`.
- `helm uninstall {RELEASE_NAME} -n {NAMESPACE}` keeps the `agent-logs` volume (delete the claim to
  drop the logs); `terraform -chdir=terraform destroy` removes the cluster once
  `deletion_protection = false` is set.
"""


# --- archive ---


def _tar_gz(files: Mapping[str, bytes], *, private: set[str]) -> bytes:
    directories = {"/".join(path.split("/")[:depth]) for path in files
                   for depth in range(1, path.count("/") + 1)}
    buffer = io.BytesIO()
    # No file name and a zero timestamp in the gzip header: identical input, identical bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, compresslevel=9, mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name in sorted(directories | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime = _FIXED_MTIME
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if name in files:
                info.type = tarfile.REGTYPE
                info.mode = 0o600 if name in private else 0o644
                info.size = len(files[name])
                archive.addfile(info, io.BytesIO(files[name]))
            else:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                archive.addfile(info)
    return buffer.getvalue()
