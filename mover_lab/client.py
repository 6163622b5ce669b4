"""The lab's control client: start/stop through scripts/lab, then JSON calls on /lab/."""

from __future__ import annotations

import contextlib
import json
import ssl
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
_UNVERIFIED = ssl._create_unverified_context()
LAUNCHER = ROOT / "scripts" / "lab"


class LabError(RuntimeError):
    """A control API call failed; status is the HTTP status (0 if the lab did not answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"lab: HTTP {status}: {message}")
        self.status = status
        self.message = message


@dataclass
class Lab:
    """A running lab. Create it with Lab.start(dir); every method is one control API call."""

    url: str
    control: str
    user: str
    password: str
    host: str
    port: int
    pid: int
    dir: Path
    log: Path
    thumbprint: str | None = None    # SHA-256 of the certificate of a lab started with tls

    @classmethod
    def start(cls, dir: Path, port: int = 0, race: bool = False, tls: bool = False) -> Lab:
        """Build the lab if needed, start it in the background, return once it answers.

        ``tls`` serves HTTPS with a fresh self-signed certificate (``thumbprint``)."""
        cmd = [str(LAUNCHER), "start", "--dir", str(dir), "--port", str(port)]
        if race:
            cmd.append("--race")
        if tls:
            cmd.append("--tls")
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
        info = json.loads(out)
        return cls(
            url=info["url"],
            control=info["control"],
            user=info["user"],
            password=info["password"],
            host=info.get("host", "127.0.0.1"),
            port=int(info["port"]),
            pid=int(info["pid"]),
            dir=Path(info["dir"]),
            log=Path(info["log"]),
            thumbprint=info.get("thumbprint"),
        )

    def stop(self) -> None:
        """Stop the lab (SIGTERM, then SIGKILL); safe to call twice."""
        subprocess.run([str(LAUNCHER), "stop", "--dir", str(self.dir)], check=True)

    # -- plumbing -------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        query: dict[str, Any] | None = None,
    ) -> bytes:
        url = self.control + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if raw is None and data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            # The control API of a TLS lab has the lab's self-signed certificate.
            with urllib.request.urlopen(req, timeout=300, context=_UNVERIFIED) as resp:
                return cast(bytes, resp.read())
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                text = json.loads(text)["error"]
            raise LabError(e.code, text) from None
        except urllib.error.URLError as e:
            raise LabError(0, str(e.reason)) from None

    def _json(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return json.loads(self._call(method, path, body, **kw))

    @staticmethod
    def _q(name: str) -> str:
        return urllib.parse.quote(name, safe="")

    # -- VMs and disks ---------------------------------------------------------------------

    def create_vm(
        self, name: str, disks: list[dict[str, Any]], power_on: bool = True, cbt: bool = False,
        **placement: Any,
    ) -> dict[str, Any]:
        """Create a vcsim VM in DC0; disks are {"capacity": bytes, "type": "thin"|...,
        "datastore": name}. ``placement``: datacenter="DC 1+ü" (the nested one),
        datastore=<home datastore>, vapp=True (in DC0's vApp); see docs/lab.md."""
        spec = {"name": name, "disks": disks, "powerOn": power_on, "cbt": cbt, **placement}
        return cast(dict[str, Any], self._json("POST", "/vms", spec))

    def delete_vm(self, name: str) -> None:
        self._call("DELETE", f"/vms/{self._q(name)}")

    def vm(self, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/vms/{self._q(name)}"))

    def _disk(self, vm: str, key: int) -> str:
        return f"/vms/{self._q(vm)}/disks/{key}"

    def write(self, vm: str, key: int, offset: int, data: bytes, untracked: bool = False) -> None:
        """Simulate a guest write into the live disk (recorded for CBT and allocation).

        ``untracked=True`` is the lossy-CBT fault: the bytes are written (and allocated) but
        CBT does not record the change, so an incremental that trusts CBT misses them."""
        query: dict[str, Any] = {"offset": offset}
        if untracked:
            query["untracked"] = "true"
        self._call("PUT", self._disk(vm, key), raw=data, query=query)

    def load(self, vm: str, key: int, path: Path | str, offset: int = 0) -> int:
        """Write the data regions of a local (sparse) file into the disk; returns bytes."""
        body = {"path": str(Path(path).resolve()), "offset": offset}
        return int(self._json("POST", self._disk(vm, key) + "/load", body)["written"])

    def read_live(self, vm: str, key: int, offset: int, length: int) -> bytes:
        return self._call("GET", self._disk(vm, key), query={"offset": offset, "length": length})

    def live_sha256(self, vm: str, key: int) -> str:
        return str(self._json("GET", self._disk(vm, key) + "/sha256")["sha256"])

    def lock_disk(self, vm: str, key: int, seconds: float) -> None:
        """Another reader holds the disk open for ``seconds``: /folder answers 500 "Failed
        to lock the file" for its files meanwhile."""
        self._json("POST", f"{self._disk(vm, key)}/lock", {"seconds": seconds})

    def reset_cbt(self, vm: str, key: int) -> dict[str, Any]:
        """Start a new CBT epoch on the disk: earlier change IDs then raise FileFault."""
        return cast(dict[str, Any], self._json("POST", self._disk(vm, key) + "/cbt-reset"))

    def resize(self, vm: str, key: int, capacity: int) -> dict[str, Any]:
        body = {"capacity": capacity}
        return cast(dict[str, Any], self._json("POST", self._disk(vm, key) + "/resize", body))

    def snapshots(self, vm: str) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._json("GET", f"/vms/{self._q(vm)}/snapshots"))

    def snapshot_history(self, vm: str) -> list[dict[str, Any]]:
        path = f"/vms/{self._q(vm)}/snapshot-history"
        return cast(list[dict[str, Any]], self._json("GET", path))

    # -- configuration, faults, counters -------------------------------------------------

    def config(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/config"))

    def configure(self, **fields: Any) -> dict[str, Any]:
        """Partial update: maxAreasPerReply, granularity, snapshotDigests."""
        return cast(dict[str, Any], self._json("PUT", "/config", fields))

    def inject(
        self,
        target: str,
        kind: str,
        count: int | None = None,
        rate: float | None = None,
        match: str | None = None,
        delay_ms: int | None = None,
        after_bytes: int | None = None,
    ) -> str:
        """Add a fault rule (see docs/lab.md); returns its id."""
        rule: dict[str, Any] = {"target": target, "kind": kind}
        for k, v in (
            ("count", count),
            ("rate", rate),
            ("match", match),
            ("delayMs", delay_ms),
            ("afterBytes", after_bytes),
        ):
            if v is not None:
                rule[k] = v
        return str(self._json("POST", "/faults", rule)["id"])

    def faults(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self._json("GET", "/faults"))

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def counters(self) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", "/counters"))

    def reads(self) -> dict[str, dict[str, int]]:
        """/folder reads in flight: ``{"peak": {host_moref: n, "*": n}, "now": {...}}``,
        per ESXi host of the VM read and over all ("*"); peaks since reset_counters."""
        return cast(dict[str, dict[str, int]], self._json("GET", "/reads"))

    def reset_counters(self) -> None:
        self._call("DELETE", "/counters")

    def folder_url(self, path: str, ds: str = "LocalDS_0", dc: str = "DC0") -> str:
        """URL of a datastore file on /folder, e.g. folder_url("vm1/vm1-flat.vmdk")."""
        query = urllib.parse.urlencode({"dcPath": dc, "dsName": ds})
        return f"http://{self.host}:{self.port}/folder/{urllib.parse.quote(path)}?{query}"

    def connect(self) -> Any:
        """A pyvmomi ServiceInstance logged in to the lab (see connect())."""
        return connect(self)


def connect(lab: Lab, user: str | None = None, password: str | None = None) -> Any:
    """Log in to the lab with unmodified pyvmomi over plain HTTP; returns the ServiceInstance.

    pyvmomi is imported lazily so the client itself stays stdlib-only.
    """
    from pyVim.connect import SmartConnect

    return SmartConnect(  # type: ignore[no-untyped-call]
        host=lab.host,
        port=lab.port,
        protocol="http",
        user=lab.user if user is None else user,
        pwd=lab.password if password is None else password,
    )
