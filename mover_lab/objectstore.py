"""The lab's object store (Ceph RGW through scripts/objectstore, docs/lab.md): start, stop,
and the AWS SDK variables that point mover (or any S3 client) at it."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "objectstore"


class ObjectStoreError(RuntimeError):
    """The object store did not start; the message is the script's verdict, and ``log``
    holds all it printed (with the daemons' last log lines)."""

    def __init__(self, message: str, log: Path) -> None:
        super().__init__(f"{message} (all of it: {log})")
        self.log = log


@dataclass(frozen=True)
class ObjectStore:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    dir: Path
    endpoints: tuple[str, ...] = ()   # every gateway, ``endpoint`` first

    @classmethod
    def start(cls, dir: Path, port: int = 0, gateways: int = 1,
              timeout: float = 600) -> ObjectStore:
        """Start (or find running) the object store of ``dir``; installs Ceph if needed.
        ``gateways`` (when ``dir`` is new): that many RGWs on the one cluster, standing for
        two sites or machines."""
        dir.mkdir(parents=True, exist_ok=True)
        log = dir / "start.err"
        try:
            proc = subprocess.run([str(LAUNCHER), "start", "--dir", str(dir), "--port",
                                   str(port), "--gateways", str(gateways)],
                                  capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.write_text(str(exc))
            raise ObjectStoreError(f"scripts/objectstore start failed: {exc}", log) from exc
        log.write_text(proc.stderr)
        if proc.returncode != 0:
            verdicts = [line for line in proc.stderr.splitlines()
                        if line.startswith("objectstore:")]
            raise ObjectStoreError(f"scripts/objectstore start exited {proc.returncode}: "
                                   f"{verdicts[-1] if verdicts else proc.stderr[-500:]}", log)
        info = json.loads(proc.stdout)
        return cls(endpoint=info["endpoint"], access_key=info["access_key"],
                   secret_key=info["secret_key"], pid=int(info["pid"]), dir=Path(info["dir"]),
                   endpoints=tuple(info.get("endpoints") or [info["endpoint"]]))

    def stop(self) -> None:
        """Stop every daemon of this object store; safe to call twice."""
        subprocess.run([str(LAUNCHER), "stop", "--dir", str(self.dir)], check=True,
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)

    def environment(self, region: str = "us-east-1", gateway: int = 0) -> dict[str, str]:
        """The AWS SDK variables that name this store through gateway ``gateway`` (for
        ``os.environ`` or a worker's environment); mover reads nothing else."""
        return {"AWS_ENDPOINT_URL": self.endpoints[gateway], "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": region}
