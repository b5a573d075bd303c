import hashlib
import subprocess
from types import SimpleNamespace

import pytest

from rankflow.core import integrity
from rankflow.core.artifacts import atomic_dir
from rankflow.core.integrity import MANIFEST, IntegrityError
from rankflow.core.io import atomic_write_text

pytestmark = pytest.mark.fast


def _artifact(tmp_path):
    with atomic_dir(tmp_path / "artifact") as scratch:
        (scratch / "workflow.pkl").write_bytes(b"pickle bytes")
        (scratch / "categories").mkdir()
        (scratch / "categories" / "unique.ad_id.parquet").write_bytes(b"vocabulary")
    return tmp_path / "artifact"


def test_atomic_dir_seals_and_sha256sum_agrees(tmp_path):
    artifact = _artifact(tmp_path)
    lines = (artifact / MANIFEST).read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "categories/unique.ad_id.parquet",
        "workflow.pkl",
    ]
    # The manifest is plain sha256sum format: checkable without rankflow.
    subprocess.run(["sha256sum", "--check", "--quiet", MANIFEST], cwd=artifact, check=True)
    expected = hashlib.sha256((artifact / MANIFEST).read_bytes()).hexdigest()
    assert integrity.verify(artifact) == expected == integrity.digest(artifact)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda a: (a / "workflow.pkl").write_bytes(b"evil pickle"), "changed ['workflow.pkl']"),
        (lambda a: (a / "categories" / "unique.ad_id.parquet").unlink(), "missing"),
        (lambda a: (a / "extra.pkl").write_bytes(b"x"), "not in the manifest ['extra.pkl']"),
        (lambda a: (a / MANIFEST).unlink(), f"has no {MANIFEST}"),
        (lambda a: (a / MANIFEST).write_text("garbage\n"), "line 1"),
        (lambda a: (a / "link").symlink_to("/etc/passwd"), "symlinks"),
    ],
)
def test_tampered_artifacts_are_refused(tmp_path, tamper, message):
    artifact = _artifact(tmp_path)
    tamper(artifact)
    with pytest.raises(IntegrityError, match=r"refusing|line 1") as err:
        integrity.verify(artifact)
    assert message in str(err.value)


def test_rewritten_manifest_is_caught_by_the_recorded_digest(tmp_path):
    artifact = _artifact(tmp_path)
    recorded = integrity.verify(artifact)
    (artifact / "workflow.pkl").write_bytes(b"evil pickle")
    integrity.seal(artifact)  # the attacker reseals: the files match the manifest again
    integrity.verify(artifact)
    with pytest.raises(IntegrityError, match="recorded when the artifact was written"):
        integrity.verify(artifact, expected=recorded)


def test_kfp_artifact_metadata_round_trip(tmp_path):
    spec = tmp_path / "spec.yaml"
    atomic_write_text(spec, "name: x\n")
    out = SimpleNamespace(path=str(spec), metadata={})
    integrity.record(out)
    assert out.metadata["sha256"] == hashlib.sha256(b"name: x\n").hexdigest()
    assert integrity.checked(out) == spec
    spec.write_text("name: y\n")
    with pytest.raises(IntegrityError, match=r"spec\.yaml: sha256"):
        integrity.checked(out)
    directory = SimpleNamespace(path=str(_artifact(tmp_path)), metadata={})
    integrity.record(directory)
    assert integrity.checked(directory) == tmp_path / "artifact"
    missing = SimpleNamespace(path=str(tmp_path / "gone"), metadata={})
    with pytest.raises(IntegrityError, match="missing"):
        integrity.checked(missing)


def test_failed_block_and_failed_write_leave_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "a") as scratch:
        (scratch / "half").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError):
        atomic_write_text(tmp_path / "b.json", None)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_writer_killed_mid_write_leaves_no_artifact_and_the_next_one_cleans_up(tmp_path):
    import signal
    import sys

    final = tmp_path / "nvt_workflow"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from rankflow.core.artifacts import atomic_dir\n"
            "with atomic_dir(sys.argv[1]) as scratch:\n"
            "    (scratch / 'workflow.pkl').write_bytes(b'half')\n"
            "    print('writing', flush=True)\n"
            "    time.sleep(60)\n",
            str(final),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert not final.exists()
    assert len(list(tmp_path.glob(".nvt_workflow.partial-*"))) == 1
    with atomic_dir(final) as scratch:
        (scratch / "workflow.pkl").write_bytes(b"whole")
    assert list(tmp_path.glob(".nvt_workflow.partial-*")) == []
    integrity.verify(final)
