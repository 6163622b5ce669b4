"""The lab's object store: a one-node Ceph cluster with a RADOS Gateway (docs/lab.md).

Run by ``scripts/objectstore`` (which installs the Debian packages first); standard library
only. One monitor, one OSD (BlueStore on a sparse file in the state directory), one gateway
on 127.0.0.1, cephx keys in one keyring, no manager (I/O needs none), no systemd, no cephadm.

    objectstore.py start --dir DIR [--port PORT]   one JSON object on stdout, progress on stderr
    objectstore.py stop --dir DIR                  idempotent

``start`` on a directory whose daemons are running prints the same JSON again; on a
directory whose daemons are gone (a reboot, ``stop``) it starts them on the existing data.
Every daemon runs in the foreground of its own session, so its pid is the one we recorded;
``stop`` signals only pids whose command line names this directory's ceph.conf.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

OSD_SIZE = 8 << 30          # sparse: BlueStore allocates what it writes
DAEMONS = ("mon", "osd")   # then the gateways: "rgw" (client.rgw.a), "rgw.b", "rgw.c", ...
USER = "mover"

CONF = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {dir}/keyring
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
log to stderr = false
err to stderr = true
client mount timeout = 30
rados mon op timeout = 30
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 10
paxos propose interval = 0.05
paxos min wait = 0.01
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false

[mon]
mon data = {dir}/mon/$id

[osd]
osd data = {dir}/osd/$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = {osd_size}
bluestore block db create = false
bluestore block wal create = false
osd memory target = 939524096
bluestore cache autotune = false
bluestore cache size = 134217728
osd op num shards = 2
osd op num threads per shard = 1

"""

GATEWAY = """
[client.rgw.{id}]
rgw data = {dir}/rgw
rgw frontends = beast endpoint=127.0.0.1:{port}
rgw thread pool size = 64
rgw enable usage log = false
rgw dns name = 127.0.0.1
"""


def gateway(n: int) -> tuple[str, str]:
    """Daemon name (for pids/) and Ceph id of gateway ``n`` (0-based)."""
    letter = chr(ord("a") + n)
    return ("rgw" if n == 0 else f"rgw.{letter}"), letter


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"objectstore: {time.monotonic() - _T0:5.1f} s {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.conf = directory / "ceph.conf"
        self.state = directory / "objectstore.json"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def endpoints(self) -> list[str]:
        if not self.state.exists():
            return []
        info = json.loads(self.state.read_text())
        return list(info.get("endpoints") or [info["endpoint"]])

    def daemons(self) -> list[str]:
        """Every daemon of this directory, in start order."""
        return [*DAEMONS, *(gateway(n)[0] for n in range(max(1, len(self.endpoints()))))]

    # -- processes ------------------------------------------------------------------------

    def pid(self, daemon: str) -> int | None:
        """The recorded pid of ``daemon`` if that process is alive and is ours."""
        proc = self.procs.get(daemon)
        if proc is not None:               # started by this run: no guessing
            return proc.pid if proc.poll() is None else None
        try:
            pid = int((self.dir / "pids" / daemon).read_text())
            proc_dir = Path(f"/proc/{pid}")
            for _ in range(20):
                if proc_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    return None            # exited, not yet reaped
                # Empty for a moment while a process execs (the kernel sets the argument
                # area after closing the close-on-exec descriptors): ask again.
                cmdline = proc_dir.joinpath("cmdline").read_bytes()
                if cmdline:
                    return pid if str(self.conf).encode() in cmdline else None
                time.sleep(0.05)
        except (FileNotFoundError, ValueError, ProcessLookupError, IndexError):
            return None
        return None

    def spawn(self, daemon: str, argv: list[str]) -> int:
        out = open(self.dir / "log" / f"{daemon}.out", "ab")  # noqa: SIM115 (child owns it)
        proc = subprocess.Popen([*argv, "-f", "-c", str(self.conf)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
        out.close()
        self.procs[daemon] = proc
        (self.dir / "pids" / daemon).write_text(str(proc.pid))
        return proc.pid

    def write_state(self, info: dict[str, object]) -> None:
        """``objectstore.json``: the JSON ``start`` prints, with the S3 secret: owner only."""
        temp = self.state.with_suffix(".tmp")
        temp.write_text(json.dumps(info))
        temp.chmod(0o600)
        temp.replace(self.state)

    def ceph(self, *args: str, timeout: float = 60) -> str:
        return run(["ceph", "-c", str(self.conf), "--connect-timeout", "20", *args],
                   timeout=timeout)

    # -- start ----------------------------------------------------------------------------

    def start(self, port: int, gateways: int = 1) -> dict[str, object]:
        self.dir.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "log", "pids", "rgw", "mon", "osd"):
            (self.dir / sub).mkdir(exist_ok=True)
        if self.state.exists() and all(self.pid(d) for d in self.daemons()):
            info: dict[str, object] = json.loads(self.state.read_text())
            if all(answers(e) for e in self.endpoints()):
                log(f"already running in {self.dir}")
                return public(info)
        began = time.monotonic()
        if port and self.state.exists() and \
                json.loads(self.state.read_text())["endpoint"] != f"http://127.0.0.1:{port}":
            log(f"--port {port} ignored: {self.dir} keeps the port it was created with")
        if gateways != 1 and self.state.exists() and len(self.endpoints()) != gateways:
            log(f"--gateways {gateways} ignored: {self.dir} keeps the gateways it was "
                "created with")
        if self.conf.exists() and not self.state.exists():
            self.stop()
            raise SystemExit(f"objectstore: {self.dir} holds a cluster whose creation did "
                             "not finish: remove the directory and start again")
        if not self.conf.exists():
            self.bootstrap(port, gateways)
        info = json.loads(self.state.read_text())
        self.run_daemons()
        endpoint = str(info["endpoint"])
        for url in self.endpoints():
            wait_for(lambda url=url: answers(url), 90, f"the gateway at {url}", self)
        if not info.get("user_created"):
            self.create_user(info)
        info["pid"] = self.pid("rgw")
        self.write_state(info)
        log(f"ready in {time.monotonic() - began:.1f} s: {endpoint}")
        return public(info)

    def bootstrap(self, port: int, gateways: int) -> None:
        log(f"creating a one-node cluster in {self.dir}")
        fsid = str(uuid.uuid4())
        ports = [port or free_port()] + [free_port() for _ in range(gateways - 1)]
        self.conf.with_suffix(".tmp").write_text(
            CONF.format(fsid=fsid, dir=self.dir, mon_port=free_port(), osd_size=OSD_SIZE)
            + "".join(GATEWAY.format(id=gateway(n)[1], dir=self.dir, port=p)
                      for n, p in enumerate(ports)))
        keyring = str(self.dir / "keyring")
        run(["ceph-authtool", "--create-keyring", keyring, "--gen-key", "-n", "mon.",
             "--cap", "mon", "allow *"])
        for name, caps in [
            ("client.admin", ["mon", "allow *", "osd", "allow *", "mgr", "allow *"]),
            ("osd.0", ["mon", "allow profile osd", "osd", "allow *", "mgr", "allow profile osd"]),
            *((f"client.rgw.{gateway(n)[1]}", ["mon", "allow rw", "osd", "allow rwx",
                                               "mgr", "allow rw"]) for n in range(gateways)),
        ]:
            cap_args = [a for i in range(0, len(caps), 2) for a in ("--cap", *caps[i:i + 2])]
            run(["ceph-authtool", keyring, "--gen-key", "-n", name, *cap_args])
        tmp_conf = str(self.conf.with_suffix(".tmp"))
        monmap = str(self.dir / "monmap")
        mon_host = next(line.split("=", 1)[1].strip()
                        for line in self.conf.with_suffix(".tmp").read_text().splitlines()
                        if line.startswith("mon host"))
        run(["monmaptool", "--create", "--fsid", fsid, "--addv", "a", f"[{mon_host}]", monmap])
        run(["ceph-mon", "-c", tmp_conf, "--mkfs", "-i", "a", "--monmap", monmap,
             "--keyring", keyring])
        self.conf.with_suffix(".tmp").rename(self.conf)   # bootstrap done up to here
        self.spawn("mon", ["ceph-mon", "-i", "a"])
        osd_uuid = str(uuid.uuid4())
        self.ceph("osd", "new", osd_uuid, "0")
        (self.dir / "osd" / "0").mkdir(exist_ok=True)
        run(["ceph-osd", "-c", str(self.conf), "-i", "0", "--mkfs", "--osd-uuid", osd_uuid])
        self.write_state({
            "endpoint": f"http://127.0.0.1:{ports[0]}",
            "endpoints": [f"http://127.0.0.1:{p}" for p in ports],
            "access_key": "MOVER" + secrets.token_hex(8).upper(),
            "secret_key": secrets.token_urlsafe(30),
            "pid": None, "dir": str(self.dir), "user_created": False,
        })

    def run_daemons(self) -> None:
        for daemon in self.daemons():   # pid files of daemons gone (a reboot): forget them
            if not self.pid(daemon):
                (self.dir / "pids" / daemon).unlink(missing_ok=True)
        if not self.pid("mon"):
            log("starting the monitor")
            self.spawn("mon", ["ceph-mon", "-i", "a"])
        if not self.pid("osd"):
            log("starting the OSD")
            self.spawn("osd", ["ceph-osd", "-i", "0"])
        wait_for(lambda: '"num_up_osds":1' in self.ceph("osd", "stat", "-f", "json")
                 .replace(" ", ""), 60, "the OSD to come up", self)
        for n in range(len(self.endpoints())):
            daemon, letter = gateway(n)
            if not self.pid(daemon):
                log(f"starting gateway {letter}")
                self.spawn(daemon, ["radosgw", "-n", f"client.rgw.{letter}"])

    def create_user(self, info: dict[str, object]) -> None:
        args = ["radosgw-admin", "-c", str(self.conf), "-n", "client.admin"]
        existing = subprocess.run([*args, "user", "info", f"--uid={USER}"],
                                  capture_output=True, timeout=60)
        if existing.returncode != 0:
            run([*args, "user", "create", f"--uid={USER}", "--display-name=mover lab",
                 f"--access-key={info['access_key']}", f"--secret-key={info['secret_key']}"])
        info["user_created"] = True

    # -- stop -----------------------------------------------------------------------------

    def stop(self) -> None:
        names = {path.name for path in (self.dir / "pids").glob("*")}
        for daemon in sorted(names - set(DAEMONS)) + [d for d in reversed(DAEMONS)
                                                      if d in names]:
            pid = self.pid(daemon)
            if pid is None:
                (self.dir / "pids" / daemon).unlink(missing_ok=True)
                continue
            log(f"stopping {daemon} (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.pid(daemon):
                time.sleep(0.1)
            if self.pid(daemon):
                os.kill(pid, signal.SIGKILL)
            (self.dir / "pids" / daemon).unlink(missing_ok=True)

    def tail_logs(self) -> str:
        lines = []
        for path in sorted((self.dir / "log").glob("*")):
            text = path.read_text(errors="replace").splitlines()[-8:]
            lines += [f"--- {path}", *text]
        return "\n".join(lines)


def public(info: dict[str, object]) -> dict[str, object]:
    """The JSON ``start`` prints: ``endpoints`` only when there are several gateways."""
    shown = {k: v for k, v in info.items() if k != "user_created"}
    endpoints = info.get("endpoints")
    if not isinstance(endpoints, list) or len(endpoints) < 2:
        shown.pop("endpoints", None)
    return shown


def run(argv: list[str], timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"objectstore: {' '.join(argv[:3])} failed "
                         f"({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2) as reply:
            return bool(reply.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def wait_for(check: object, seconds: float, what: str, cluster: Cluster) -> None:
    """Poll ``check`` until it is true; fail at once (with the logs) if a daemon that was
    started has exited, as one does when its port is taken."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except SystemExit:
            pass
        dead = [d for d, proc in cluster.procs.items() if proc.poll() is not None]
        if dead:
            raise SystemExit(f"objectstore: {', '.join(dead)} exited while waiting for "
                             f"{what}\n{cluster.tail_logs()}")
        time.sleep(0.2)
    raise SystemExit(f"objectstore: timed out after {seconds:.0f} s waiting for {what}\n"
                     f"{cluster.tail_logs()}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/objectstore")
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--gateways", type=int, default=1, choices=range(1, 9),
                        help="gateways on the one cluster (two sites or machines), each "
                             "on its own port; only when the directory is created")
    args = parser.parse_args()
    cluster = Cluster(args.dir.absolute())
    if args.command == "stop":
        cluster.stop()
        return
    try:
        info = cluster.start(args.port, args.gateways)
    except BaseException:
        cluster.stop()   # a failed start leaves nothing running
        raise
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
