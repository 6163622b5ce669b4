"""Session expiry in the middle of a vSphere task: the task is polled on after a re-login,
never started a second time."""

from __future__ import annotations

from collections.abc import Callable

from mover.vsphere import inventory, snapshots, tasks
from mover.vsphere.address import ServerAddress, TlsPolicy
from mover.vsphere.session import Credentials, Session
from mover_lab import Lab


def test_expiry_while_polling_a_snapshot_task_creates_one_snapshot(
        lab: Lab, unique_name: Callable[[str], str],
        matrix: Callable[[str, str], None]) -> None:
    name = unique_name("vm")
    lab.create_vm(name, [{"capacity": 1 << 24, "type": "thin"}], cbt=True)
    session = Session(ServerAddress.parse(lab.url), Credentials(lab.user, lab.password),
                      TlsPolicy())
    session.login()
    vm = inventory.find_vm(session, name)
    lab.inject("soap", "sessionExpire", count=1, match="Fetch")   # the first task.info read
    snapshot = tasks.run_task(
        session, lambda: vm.CreateSnapshot_Task(name="mover-x", description=snapshots.TAG,
                                                memory=False, quiesce=False), "creating")
    assert [f["fired"] for f in lab.faults()] == [1]
    assert session.logins == 2
    assert [s["name"] for s in lab.snapshots(name)] == ["mover-x"]   # one, not two nested
    snapshots.remove(session, snapshot, "mover-x")
    assert lab.snapshots(name) == []
    session.logout()
    matrix("session expiry while polling a snapshot task", "re-login, same task; one snapshot")
