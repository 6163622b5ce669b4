package main

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// materializeNewDisks gives every disk that a SOAP CreateVM_Task or ReconfigVM_Task created
// on a VM the lab does not manage (a restore's new VM) the files ESXi creates on VMFS for a
// VirtualDisk added with fileOperation "create": a text descriptor whose extent line names
// "<disk>-flat.vmdk", and that flat file, sparse, of the disk's full capacity. vcsim leaves
// both files empty. Such disks are plain files afterwards: /folder PUT replaces the flat
// file's bytes and /folder GET serves them, as on a host.
func (l *Lab) materializeNewDisks() {
	for _, entity := range simulator.Map.All("VirtualMachine") {
		sv, ok := entity.(*simulator.VirtualMachine)
		if !ok || l.byRef[sv.Self.Value] != nil || sv.Config == nil {
			continue
		}
		for _, dev := range sv.Config.Hardware.Device {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			b, ok := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			if !ok {
				continue
			}
			if err := l.materializeDisk(vd, b); err != nil {
				logf("new disk %s: %v", b.FileName, err)
			}
		}
	}
}

func (l *Lab) materializeDisk(vd *types.VirtualDisk, b *types.VirtualDiskFlatVer2BackingInfo) error {
	var p object.DatastorePath
	if !p.FromString(b.FileName) {
		return nil
	}
	info, ok := l.datastores[p.Datastore]
	if !ok {
		return nil
	}
	dir := info.dir
	descPath := filepath.Join(dir, filepath.FromSlash(p.Path))
	if st, err := os.Stat(descPath); err != nil || st.Size() > 0 {
		return nil // not vcsim's empty placeholder: already a real descriptor
	}
	capacity := vd.CapacityInBytes
	if capacity == 0 {
		capacity = vd.CapacityInKB * 1024
	}
	if b.Uuid == "" {
		b.Uuid = newVMwareUUID()
	}
	kind := "eagerZeroedThick"
	if b.ThinProvisioned != nil && *b.ThinProvisioned {
		kind = "thin"
	}
	stem := strings.TrimSuffix(p.Path, ".vmdk")
	d := &disk{key: vd.Key, stem: stem, capacity: capacity, kind: kind, uuid: b.Uuid,
		chain: []*layer{{desc: p.Path, data: stem + "-flat.vmdk"}}}
	if err := os.Truncate(filepath.Join(dir, filepath.FromSlash(stem+"-flat.vmdk")), capacity); err != nil {
		return err
	}
	return os.WriteFile(descPath, []byte(descriptor(d, 0)), 0o644)
}
