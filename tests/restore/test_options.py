"""The small parsers and pure helpers of restores: --listen, --network-map, where the NVRAM
file is, and the config summary."""

from __future__ import annotations

import pytest

from mover.errors import UsageError
from mover.jobs.serve import ServeSettings, listen_address, uri
from mover.jobs.vmrestore import network_map
from mover.vsphere.vmconfig import NvramPathRefused, nvram_file, summary


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:10809", ("127.0.0.1", 10809)),
    ("[::1]:10810", ("::1", 10810)),
    ("localhost:1", ("localhost", 1)),
], ids=["v4", "v6", "name"])
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert listen_address(text) == expected


@pytest.mark.parametrize("text", ["10809", ":10809", "host:", "host:0", "host:65536", "h:x"])
def test_bad_listen_addresses_are_refused(text: str) -> None:
    with pytest.raises(UsageError, match="HOST:PORT"):
        listen_address(text)


def test_export_uris() -> None:
    from pathlib import Path
    assert uri(ServeSettings(Path("r"), "b", 2000, socket=Path("/run/x.sock"))) == (
        "nbd+unix:///?socket=/run/x.sock")
    assert uri(ServeSettings(Path("r"), "b", 2000, host="::1", port=10809)) == (
        "nbd://[::1]:10809")


def test_network_map() -> None:
    assert network_map(["VM Network=DR", "a=b=c"]) == (("VM Network", "DR"), ("a", "b=c"))
    for bad in ("nothing", "=x", "x="):
        with pytest.raises(UsageError, match="OLD=NEW"):
            network_map([bad])


@pytest.mark.parametrize(("config", "expected"), [
    ({"files": {"vmPathName": "[ds1] web/web.vmx"}}, ("ds1", "web/web.nvram")),
    ({"files": {"vmPathName": "[ds1] web/web.vmx"},
      "extraConfig": [{"key": "nvram", "value": "other.nvram"}]}, ("ds1", "web/other.nvram")),
    ({"files": {"vmPathName": "[ds1] web/web.vmx"},
      "extraConfig": [{"key": "nvram", "value": "[ds1] web/keep.nvram"}]},
     ("ds1", "web/keep.nvram")),
    ({"files": {}}, None),
], ids=["default", "extra-config-name", "extra-config-datastore-path", "no-vmx"])
def test_nvram_file(config: dict[str, object], expected: tuple[str, str] | None) -> None:
    assert nvram_file(config) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [
    "../other/other.nvram", "[ds2] web/web.nvram", "[ds1] other/other.nvram",
    "[ds1] web/../other/other.nvram", "sub/web.nvram", "/vmfs/volumes/ds1/web/web.nvram",
    "web.vmx", "[ds1] web/web-flat.vmdk", "[nonsense",
], ids=["dotdot", "other-datastore", "other-directory", "dotdot-in-datastore-path",
        "subdirectory", "absolute", "not-nvram", "a-disk", "bad-datastore-path"])
def test_nvram_file_outside_the_vm_directory_is_refused(value: str) -> None:
    config = {"files": {"vmPathName": "[ds1] web/web.vmx"},
              "extraConfig": [{"key": "nvram", "value": value}]}
    with pytest.raises(NvramPathRefused, match=r"not a \.nvram file in the VM.s directory"):
        nvram_file(config)


def test_summary_lists_disks_and_nics() -> None:
    config = {"guestId": "ubuntu64Guest", "firmware": "efi", "version": "vmx-19",
              "hardware": {"numCPU": 2, "memoryMB": 4096, "device": [
                  {"_vimtype": "vim.vm.device.ParaVirtualSCSIController", "key": 1000},
                  {"_vimtype": "vim.vm.device.VirtualDisk", "key": 2000, "controllerKey": 1000,
                   "unitNumber": 0, "capacityInBytes": 1 << 30,
                   "backing": {"fileName": "[ds] w/w.vmdk", "thinProvisioned": True}},
                  {"_vimtype": "vim.vm.device.VirtualVmxnet3", "key": 4000,
                   "macAddress": "00:50:56:00:00:01",
                   "backing": {"deviceName": "VM Network"}}]}}
    assert summary(config) == {
        "guest_id": "ubuntu64Guest", "firmware": "efi", "version": "vmx-19", "cpus": 2,
        "memory_mb": 4096,
        "disks": [{"key": 2000, "controller": 1000, "unit": 0, "capacity": 1 << 30,
                   "file": "[ds] w/w.vmdk", "thin": True}],
        "nics": [{"key": 4000, "type": "VirtualVmxnet3", "mac": "00:50:56:00:00:01",
                  "network": "VM Network"}]}
