"""Lock files that tell a live server's files from a dead one's."""

from codistill.serving.ownership import hold, release, remove_if_abandoned


def test_a_lock_file_that_exists_is_never_taken_over(tmp_path):
    lock = tmp_path / "server.lock"
    fd = hold(lock)
    assert fd is not None and lock.is_file()
    assert hold(lock) is None  # held by this process
    release(fd, lock)
    lock.write_text("")  # left by a server that is gone: still not claimed by a new start
    assert hold(lock) is None
    assert [p.name for p in tmp_path.iterdir()] == ["server.lock"]  # no private name left


def test_a_held_lock_keeps_its_files_and_a_link_is_never_followed(tmp_path):
    removed = []
    lock = tmp_path / "live.lock"
    fd = hold(lock)
    assert not remove_if_abandoned(lock, lambda: removed.append("live"))
    target = tmp_path / "someone-elses-file"
    target.write_text("keep")
    link = tmp_path / "link.lock"
    link.symlink_to(target)
    assert not remove_if_abandoned(link, lambda: removed.append("link"))
    assert removed == [] and target.read_text() == "keep" and link.is_symlink()
    release(fd, lock)
    assert remove_if_abandoned(lock.with_name("gone.lock"), lambda: removed.append("x")) is False
    (tmp_path / "dead.lock").write_text("")
    assert remove_if_abandoned(tmp_path / "dead.lock", lambda: removed.append("dead"))
    assert removed == ["dead"] and not (tmp_path / "dead.lock").exists()
