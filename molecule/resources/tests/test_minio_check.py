"""The MinIO backend cannot run here (no MinIO server binary can be obtained), so its
role is held to what can be checked: a check-mode run of site.yml with
object_store_backend=minio against the real object-store host goes through, with a
stand-in binary whose checksum the role verifies."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STAND_IN_BINARY = b"stand-in for a MinIO release binary\n"


def run_site_check(inventory: str, tmp_path: Path, checksum: str) -> subprocess.CompletedProcess:
    binary = tmp_path / "minio"
    binary.write_bytes(STAND_IN_BINARY)
    playbook = Path(sys.executable).parent / "ansible-playbook"
    return subprocess.run(
        [
            str(playbook),
            "-i",
            inventory,
            str(REPO / "playbooks/site.yml"),
            "--check",
            "--limit",
            "object_stores",
            "-e",
            "object_store_backend=minio",
            "-e",
            f"minio_local_binary={binary}",
            "-e",
            f"minio_checksum={checksum}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
        timeout=600,
    )


def test_minio_role_passes_check_mode(pytestconfig, tmp_path):
    inventory = pytestconfig.getoption("ansible_inventory")
    good = "sha256:" + hashlib.sha256(STAND_IN_BINARY).hexdigest()
    result = run_site_check(inventory, tmp_path, good)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "minio : " in result.stdout, "the minio role did not run"
    assert "failed=0" in result.stdout


def test_minio_role_refuses_a_binary_with_the_wrong_checksum(pytestconfig, tmp_path):
    inventory = pytestconfig.getoption("ansible_inventory")
    result = run_site_check(inventory, tmp_path, "sha256:" + "0" * 64)
    assert result.returncode != 0
    assert "checksum" in result.stdout.lower()
