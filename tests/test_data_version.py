"""A raw data folder is checked against its DVC file before a stage reads it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from codistill.cli import main
from codistill.stages.data_version import (
    DataVersionError,
    RecordedVersion,
    require_recorded_version,
)

pytestmark = pytest.mark.cost(20)

DVC = str(Path(sys.executable).parent / "dvc")


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git and DVC project whose data/ (two datasets) is recorded in data.dvc."""
    for name, text in {
        "camvid/train/a.png": "a",
        "camvid/train/b.png": "b",
        "voc/c.png": "c",
    }.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / name).write_text(text)
    _run(["git", "init", "-q"], tmp_path)
    _run([DVC, "init", "-q"], tmp_path)
    _run([DVC, "add", "-q", "data"], tmp_path)
    return tmp_path


def test_the_recorded_version_passes(project):
    require_recorded_version(project / "data" / "camvid", RecordedVersion(project / "data.dvc"))


def test_every_change_is_named_and_the_dvc_file_is_left_alone(project):
    recorded = (project / "data.dvc").read_bytes()
    camvid = project / "data" / "camvid" / "train"
    (camvid / "a.png").write_text("corrupted")
    (camvid / "b.png").unlink()
    (camvid / "new.png").write_text("n")
    with pytest.raises(DataVersionError) as caught:
        require_recorded_version(project / "data" / "camvid", RecordedVersion(project / "data.dvc"))
    message = str(caught.value)
    for change in (
        "modified data/camvid/train/a.png",
        "deleted data/camvid/train/b.png",
        "added data/camvid/train/new.png",
        f"dvc checkout --force {project / 'data.dvc'}",
        "dvc add",
    ):
        assert change in message
    assert (project / "data.dvc").read_bytes() == recorded


def test_a_change_outside_the_folder_read_does_not_stop_it(project):
    (project / "data" / "voc" / "c.png").write_text("changed")
    require_recorded_version(project / "data" / "camvid", RecordedVersion(project / "data.dvc"))
    with pytest.raises(DataVersionError, match=r"modified data/voc/c\.png"):
        require_recorded_version(project / "data" / "voc", RecordedVersion(project / "data.dvc"))


@pytest.mark.parametrize(
    ("folder", "dvc_text", "md5", "message"),
    [
        ("data/cityscapes", None, None, r"no such folder; fetch it with `dvc pull .*data.dvc`"),
        ("elsewhere", None, None, "is not inside"),
        ("data/camvid", "outs: []\n", None, "not a DVC file with one output"),
        ("data/camvid", None, "0" * 32 + ".dir", r"records \w+\.dir, not the expected 0+\.dir"),
    ],
)
def test_a_missing_folder_a_bad_dvc_file_or_another_hash_is_named(
    project, folder, dvc_text, md5, message
):
    if dvc_text is not None:
        (project / "data.dvc").write_text(dvc_text)
    with pytest.raises(DataVersionError, match=message):
        require_recorded_version(project / folder, RecordedVersion(project / "data.dvc", md5))


def test_prepare_with_a_changed_folder_writes_nothing(project, capsys):
    (project / "data" / "camvid" / "train" / "a.png").write_text("corrupted")
    out = project / "build" / "prepared"
    argv = ["prepare", "--data", str(project / "data" / "camvid"), "--out", str(out)]
    code = main([*argv, "--data-version", str(project / "data.dvc")])
    assert code == 1
    assert "modified data/camvid/train/a.png" in capsys.readouterr().err
    assert not out.exists()


def test_without_dvc_installed_the_check_says_what_to_install(project, monkeypatch):
    monkeypatch.setitem(sys.modules, "dvc.repo", None)  # an import of it now fails
    with pytest.raises(DataVersionError, match=r"needs DVC: install codistill\[pipeline\]"):
        require_recorded_version(project / "data" / "camvid", RecordedVersion(project / "data.dvc"))


def test_a_symlink_loop_in_the_raw_data_is_named_in_one_line(project, capsys):
    loop = project / "data" / "camvid" / "train" / "loop.png"
    loop.symlink_to(loop.name)  # a link to itself
    (project / "data" / "camvid" / "up").symlink_to("..")  # a folder link, not a loop
    out = project / "build" / "prepared"
    argv = ["prepare", "--data", str(project / "data" / "camvid"), "--out", str(out)]
    assert main([*argv, "--data-version", str(project / "data.dvc")]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"symlink loop: {loop}; nothing was read")
    assert not out.exists()


def test_a_dvc_file_outside_a_dvc_repository_is_named(tmp_path):
    (tmp_path / "camvid").mkdir()
    (tmp_path / "data.dvc").write_text("outs:\n- md5: 0123.dir\n  path: camvid\n")
    with pytest.raises(DataVersionError, match=r"data\.dvc: not inside a DVC repository$"):
        require_recorded_version(tmp_path / "camvid", RecordedVersion(tmp_path / "data.dvc"))


def test_why_prepare_does_not_depend_on_the_data_folder_even_with_the_source_frozen(project):
    """A dependency on data/ links data.dvc in ``dvc dag``, and lets edits be re-recorded.

    ``dvc repro`` records an unchecked edit as the data's new version before any stage runs,
    frozen or not. If a DVC release stops doing so, this fails, and prepare can depend on the
    folder.
    """
    dvc = str(Path(sys.executable).parent / "dvc")
    _run([dvc, "freeze", "data.dvc"], project)
    (project / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: cat data/camvid/train/a.png > out.txt\n"
        "    deps: [data/camvid]\n    outs: [out.txt]\n"
    )
    _run([dvc, "repro", "-q"], project)
    dag = subprocess.run([dvc, "dag", "--dot"], cwd=project, capture_output=True, text=True)
    assert re.search(r'"data\.dvc"\s*->\s*"prepare"', dag.stdout), dag.stdout  # linked
    recorded = (project / "data.dvc").read_text()
    assert "frozen: true" in recorded
    (project / "data" / "camvid" / "train" / "a.png").write_text("an edit no gate has seen")
    _run([dvc, "repro", "-q"], project)
    assert (project / "data.dvc").read_text() != recorded  # re-recorded despite the freeze
