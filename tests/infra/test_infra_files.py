"""infra/ passes every validator that installs from the package registries here.

Nothing in infra/ can be applied on this machine (no cloud, no cluster, no
Docker daemon), so each file is held to what can be checked: yamllint on all
YAML, kubernetes-validate (strict schemas bundled for fixed Kubernetes
versions), python-hcl2 parsing of the Terraform plus the properties the
bucket must have, checkov on Terraform, Kubernetes and the Dockerfile,
hadolint, shellcheck, and systemd-analyze on the units.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pitrflow.config import parse_config
from tests.infra import tools

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S_VERSIONS = ("1.30.0", "1.37.0")
BIN = Path(sys.executable).parent


def run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, **kwargs)


def k8s_documents() -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted((INFRA / "k8s").glob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_yamllint_passes_on_all_infra_yaml_and_the_generated_prefect_yaml(
        tmp_path: Path) -> None:
    from deployments.generate import write_prefect_yaml

    # The generated file names the config by its path: a path of usual length, not
    # pytest's (which grows with the test's name and the xdist worker's).
    tmp_path = Path(tempfile.mkdtemp(prefix="pitr-yaml-", dir="/tmp"))
    config = tmp_path / "pitrflow.toml"
    config.write_text('[repository]\npath = "r"\n[instances.main]\nengine = "postgresql"\n'
                      'host = "db1"\n')
    generated = write_prefect_yaml(config, tmp_path / "prefect.yaml")
    result = run([sys.executable, "-m", "yamllint", "--strict", "-c", INFRA / ".yamllint.yaml",
                  INFRA, INFRA / ".checkov.yaml", generated])
    shutil.rmtree(tmp_path, ignore_errors=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    import kubernetes_validate

    documents = k8s_documents()
    kinds = {doc["kind"] for _, doc in documents}
    assert {"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "NetworkPolicy"} <= kinds
    for path, doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
        assert doc["metadata"].get("namespace", "pitrflow") == "pitrflow", path


def test_kubernetes_validate_rejects_a_broken_manifest() -> None:
    import kubernetes_validate

    _, deployment = next((p, d) for p, d in k8s_documents() if d["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_worker_deployment_wires_config_secret_probes_and_no_password() -> None:
    documents = dict((d["kind"], d) for _, d in k8s_documents())
    pod = documents["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "pitrflow-db-passwords"}}]
    assert not [e for e in container["env"] if "PASSWORD" in e["name"] and "value" in e]
    assert {"name": "config", "configMap": {"name": "pitrflow-config"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == documents["ServiceAccount"]["metadata"]["name"]
    # The config shipped in the ConfigMap is one pitrflow itself accepts.
    text = documents["ConfigMap"]["data"]["pitrflow.toml"]
    config = parse_config(text, Path("/etc/pitrflow/pitrflow.toml"))
    assert config.instances["main"].password_env == "PITR_MAIN_PASSWORD"


def _unquote(value: Any) -> Any:
    """python-hcl2 8 keeps the quotes of labels and strings; compare without them."""
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def terraform() -> dict[str, Any]:
    import hcl2

    merged: dict[str, Any] = {}
    for path in sorted((INFRA / "terraform").glob("*.tf")):
        with open(path) as handle:
            parsed = _unquote(hcl2.load(handle))  # raises on any syntax error
        for block, items in parsed.items():
            if not block.startswith("__"):
                merged.setdefault(block, []).extend(items)
    return merged


def _resources(tf: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [body for item in tf["resource"] for k, named in item.items() if k == kind
            for body in named.values()]


def test_terraform_parses_and_the_bucket_is_private_encrypted_versioned_and_restorable(
        ) -> None:
    tf = terraform()
    [sse] = _resources(tf, "aws_s3_bucket_server_side_encryption_configuration")
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms" and sse["rule"][0]["bucket_key_enabled"]
    [key] = _resources(tf, "aws_kms_key")
    assert key["enable_key_rotation"] is True
    [versioning] = _resources(tf, "aws_s3_bucket_versioning")
    assert versioning["versioning_configuration"][0]["status"] == "Enabled"
    [block] = _resources(tf, "aws_s3_bucket_public_access_block")
    assert all(block[k] is True for k in ("block_public_acls", "block_public_policy",
                                          "ignore_public_acls", "restrict_public_buckets"))
    [lifecycle] = _resources(tf, "aws_s3_bucket_lifecycle_configuration")
    text = (INFRA / "terraform" / "s3.tf").read_text()
    assert "abort_incomplete_multipart_upload" in str(lifecycle)
    # A restore reads its backup and WAL at once: no archive tier that needs a thaw first.
    assert not re.search(r"GLACIER|DEEP_ARCHIVE", text)
    variables = {name for item in tf["variable"] for name in item}
    assert not [v for v in variables if re.search("secret|password|access_key", v)]


def test_terraform_can_create_the_bucket_with_object_lock() -> None:
    tf = terraform()
    variables = {name: body for item in tf["variable"] for name, body in item.items()}
    assert variables["object_lock_enabled"]["default"] is False
    mode = variables["object_lock_mode"]
    assert "GOVERNANCE" in str(mode["validation"]) and "COMPLIANCE" in str(mode["validation"])
    assert "var.object_lock_days >= 1" in str(variables["object_lock_days"]["validation"])
    [bucket] = _resources(tf, "aws_s3_bucket")
    assert bucket["object_lock_enabled"] == "${var.object_lock_enabled}"
    [lock] = _resources(tf, "aws_s3_bucket_object_lock_configuration")
    retention = lock["rule"][0]["default_retention"][0]
    assert (retention["mode"], retention["days"]) == ("${var.object_lock_mode}",
                                                      "${var.object_lock_days}")
    # The worker sets retention and deletes versions, and can never bypass a lock.
    [document] = [body for item in tf["data"] for kind, named in item.items()
                  if kind == "aws_iam_policy_document" for name, body in named.items()
                  if name == "worker"]
    actions = [a for statement in document["statement"] for a in statement["actions"]]
    for action in ("s3:PutObjectRetention", "s3:DeleteObjectVersion", "s3:ListBucketVersions"):
        assert action in actions
    assert not [a for a in actions if "Bypass" in a or a in ("s3:*", "*")]


def test_checkov_passes_with_only_documented_skips() -> None:
    config_text = (INFRA / ".checkov.yaml").read_text()
    skips = yaml.safe_load(config_text)["skip-check"]
    lines = config_text.splitlines()
    for check in skips:  # each skip sits right under a comment that gives its reason
        index = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[index - 1].strip().startswith("#"), check
    result = run([tools.checkov(), "--config-file", INFRA / ".checkov.yaml",
                  "-d", INFRA / "terraform", "-d", INFRA / "k8s", "-d", INFRA / "worker"])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    for framework in ("terraform", "kubernetes", "dockerfile"):
        assert re.search(rf"{framework} scan results:\s+Passed checks: [1-9]", result.stdout)
    assert "Failed checks: 0" in result.stdout and "Failed checks: [1-9]" not in result.stdout


def test_checkov_fails_a_bucket_without_encryption(tmp_path: Path) -> None:
    bad = tmp_path / "terraform"
    shutil.copytree(INFRA / "terraform", bad)
    text = (bad / "s3.tf").read_text()
    start = text.index('resource "aws_s3_bucket_server_side_encryption_configuration"')
    end = text.index('resource "aws_s3_bucket_lifecycle_configuration"')
    (bad / "s3.tf").write_text(text[:start] + text[end:])
    result = run([tools.checkov(), "--config-file", INFRA / ".checkov.yaml", "-d", bad])
    assert result.returncode != 0 and "CKV_AWS_145" in result.stdout


def test_hadolint_and_the_image_carries_postgresql_15_to_18() -> None:
    dockerfile = INFRA / "worker" / "Dockerfile"
    result = run([BIN / "hadolint", dockerfile])
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert 'ARG PG_MAJORS="15 16 17 18"' in text
    assert "pgdg/apt.postgresql.org.sh" in text and "create_main_cluster = false" in text
    assert re.search(r"^USER 10001$", text, re.M)


def test_shellcheck_passes_on_the_host_script() -> None:
    result = run([BIN / "shellcheck", INFRA / "host" / "run-server-and-worker.sh"])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_systemd_units_verify(tmp_path: Path) -> None:
    # The units name production paths; point them at this checkout so verify can find them.
    for unit in sorted((INFRA / "host").glob("*.service")):
        text = (unit.read_text().replace("/opt/pitrflow/venv", sys.prefix)
                .replace("/opt/pitrflow/src", str(ROOT))
                .replace("EnvironmentFile=/", "EnvironmentFile=-/"))
        (tmp_path / unit.name).write_text(text)
    result = run(["systemd-analyze", "verify", *sorted(tmp_path.glob("*.service"))])
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
