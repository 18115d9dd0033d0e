"""The dataplanes folder: what the control plane's local provisioner writes, the local pool reads.

The two sides share no code (the data plane never imports the control plane), so this test is the
contract between them: the format is documented in ``runtime/pool.py``.
"""

from __future__ import annotations

import stat
from pathlib import Path

from runtime.pool import Assignment, read_assignments
from shared.deployments.adapters.local_provisioner import LocalProvisioner
from shared.deployments.ports import DataPlaneSpec
from shared.kernel.settings import Settings


def spec(deployment_id: str, api_key: str) -> DataPlaneSpec:
    return DataPlaneSpec(deployment_id=deployment_id, org_id="org_1", agent_name="cost-anomaly-detector",
                         agent_version="1.0.1", image=None, control_plane_url="http://127.0.0.1:8080",
                         api_key=api_key, config={"billing_source": "/data/focus.csv"})


def local_provisioner(data_dir: Path) -> tuple[LocalProvisioner, Path]:
    # The folder the composition root gives the provisioner and ``marketplace up`` gives the pool.
    folder = Settings(mode="local", data_dir=data_dir, public_url="https://testserver").dataplanes_dir
    return LocalProvisioner(folder), folder


def test_the_pool_reads_what_the_provisioner_publishes(tmp_path: Path):
    provisioner, folder = local_provisioner(tmp_path)
    assert read_assignments(folder) == []  # nothing published yet: no folder
    provisioner.provision(spec("dep_b", "mk.dep_b.secret-b-0123456789abcdef"))
    provisioner.provision(spec("dep_a", "mk.dep_a.secret-a-0123456789abcdef"))
    assert read_assignments(folder) == [Assignment("dep_a", "mk.dep_a.secret-a-0123456789abcdef"),
                                        Assignment("dep_b", "mk.dep_b.secret-b-0123456789abcdef")]
    assert {stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()} == {0o600}
    assert "secret" not in repr(read_assignments(folder))

    provisioner.provision(spec("dep_a", "mk.dep_a.rotated-0123456789abcdef"))  # re-keyed
    provisioner.deprovision("dep_b")  # withdrawn
    assert read_assignments(folder) == [Assignment("dep_a", "mk.dep_a.rotated-0123456789abcdef")]


def test_files_being_written_or_not_assignments_are_left_out(tmp_path: Path):
    provisioner, folder = local_provisioner(tmp_path)
    provisioner.provision(spec("dep_ok", "mk.dep_ok.key-0123456789abcdef"))
    (folder / "dep_half.json").write_text('{"deployment_id": "dep_half", "api_')  # caught mid-write
    (folder / "dep_list.json").write_text('["dep_list"]')
    (folder / "dep_nokey.json").write_text('{"deployment_id": "dep_nokey", "api_key": ""}')
    (folder / "dep_next.tmp").write_text('{"deployment_id": "dep_next", "api_key": "k"}')
    (folder / "notes.json").write_text('{"deployment_id": "notes", "api_key": "k"}')
    assert read_assignments(folder) == [Assignment("dep_ok", "mk.dep_ok.key-0123456789abcdef")]
