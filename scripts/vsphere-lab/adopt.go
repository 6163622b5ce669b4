package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// adoptInventory turns every VM vcsim's model created at start-up (DC0_H0_VM0, DC0_C0_RP0_VM1,
// ...) into a lab VM: its disks become layered disks with CBT, descriptors and frozen
// snapshot images, exactly like a VM made through /lab/vms. Without it those VMs kept
// vcsim's own semantics (no CBT, snapshots that freeze nothing, a RemoveSnapshot_Task whose
// info pyvmomi cannot read), so a vSphere client pointed at the lab met two different
// kinds of VM, and only one of them was ESXi's. Runs once, before the lab serves.
func (l *Lab) adoptInventory() error {
	var svms []*simulator.VirtualMachine
	for _, e := range simulator.Map.All("VirtualMachine") {
		svms = append(svms, e.(*simulator.VirtualMachine))
	}
	sort.Slice(svms, func(i, j int) bool { return svms[i].Name < svms[j].Name })
	for _, sv := range svms {
		if l.vms[sv.Name] != nil {
			continue
		}
		vm, err := l.adopt(sv)
		if err != nil {
			return fmt.Errorf("adopt %s: %w", sv.Name, err)
		}
		logf("adopted inventory VM %s (%s, %d disks)", vm.name, vm.ref.Value, len(vm.disks))
	}
	return nil
}

// adopt takes over the disk files of one vcsim VM. Each flat disk on the lab's datastore
// gets a fresh, empty (sparse) base layer of its capacity and a VMFS descriptor; disks on
// other datastores are left to vcsim (the lab keeps layers on one datastore only).
func (l *Lab) adopt(sv *simulator.VirtualMachine) (*labVM, error) {
	vm := &labVM{name: sv.Name, ref: sv.Self, power: sv.Runtime.PowerState}
	vm.cbtEnabled = sv.Config.ChangeTrackingEnabled != nil && *sv.Config.ChangeTrackingEnabled
	for _, dev := range sv.Config.Hardware.Device {
		vd, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		if !ok {
			continue
		}
		var p object.DatastorePath
		if !p.FromString(b.FileName) || p.Datastore != l.dsName || !strings.HasSuffix(p.Path, ".vmdk") {
			continue
		}
		capacity := vd.CapacityInBytes
		if capacity == 0 {
			capacity = vd.CapacityInKB * 1024
		}
		if capacity <= 0 || capacity%512 != 0 {
			continue
		}
		kind := "thin"
		if b.EagerlyScrub != nil && *b.EagerlyScrub {
			kind = "eagerZeroedThick"
		}
		uuid := b.Uuid
		if uuid == "" {
			uuid = newVMwareUUID()
		}
		stem := strings.TrimSuffix(p.Path, ".vmdk")
		if err := os.MkdirAll(filepath.Join(l.root, filepath.Dir(stem)), 0o755); err != nil {
			return nil, err
		}
		d := &disk{key: vd.Key, stem: stem, capacity: capacity, kind: kind, uuid: uuid,
			ds: l.dsName, dsRef: l.dsRef, root: l.root}
		base, err := openLayer(l.root, stem+".vmdk", stem+"-flat.vmdk", capacity, "")
		if err != nil {
			return nil, err
		}
		d.chain = []*layer{base}
		if err := d.writeDescriptors(l.root); err != nil {
			return nil, err
		}
		if vm.cbtEnabled {
			d.cbt.start()
		}
		vm.disks = append(vm.disks, d)
	}
	l.vms[vm.name] = vm
	l.byRef[vm.ref.Value] = vm
	l.reconcile(vm)
	return vm, nil
}
