package main

import (
	"context"
	"log"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

// config holds the knobs tests change at run time through PUT /lab/config.
type config struct {
	MaxAreasPerReply int   `json:"maxAreasPerReply"`
	Granularity      int64 `json:"granularity"`
	SnapshotDigests  bool  `json:"snapshotDigests"`
	// /folder throttle, like a real host's NFC/HTTP limits: bytes per second per request
	// (one request at a time per keep-alive connection, so per connection) and for all
	// /folder transfers together; 0 is unlimited.
	FolderConnectionBps int64 `json:"folderConnectionBps"`
	FolderTotalBps      int64 `json:"folderTotalBps"`
	// FolderMaxRequests: concurrent /folder GETs the host serves; more get 503 (0 = no
	// limit; hostlimits.go)
	FolderMaxRequests int64 `json:"folderMaxRequests"`
}

func defaultConfig() config {
	return config{MaxAreasPerReply: 2000, Granularity: 64 << 10}
}

// Lab is the state the lab keeps next to vcsim's inventory.
//
// mu serialises every SOAP call (except the blocking WaitForUpdates family) and every control
// call: vcsim serialises property results after releasing object locks, so without one big
// lock our hooks and vcsim's encoder would race on the same VM objects.
type Lab struct {
	mu sync.Mutex

	svc    *simulator.Service
	client *vim25.Client // in-process client: calls vcsim without HTTP and without mu

	user, password string
	dc, dsName     string
	dsRef          types.ManagedObjectReference
	root           string // directory of datastore dsName

	cfg   config
	vms   map[string]*labVM // by name
	byRef map[string]*labVM // by moref value

	datastores map[string]dsInfo  // by name: directory, datacenter (topology.go)
	dcs        map[string]*dcInfo // where createVM puts VMs, by spec.Datacenter

	faults   faultSet
	counters counters
	reads    readGauge // /folder reads in flight per host (concurrency.go)
	link     throttle
	limits   hostLimits
}

// labVM is the lab's side of a VM it created: disks with their layer chains, CBT state and
// the snapshots it has seen, reconciled with vcsim's object after every mutating call.
type labVM struct {
	name       string
	ref        types.ManagedObjectReference
	disks      []*disk
	cbtEnabled bool
	power      types.VirtualMachinePowerState
	snaps      []*snapRec // existing snapshots, oldest first
	history    []*snapRec // every snapshot ever created
	// vappFolder is vcsim's parent of a VM in a vApp, hidden from clients (vms.go)
	vappFolder *types.ManagedObjectReference
	// keepDeltas: the next removal leaves its delta unmerged (fault consolidationNeeded);
	// unmerged lists, per disk, the frozen layers whose delta above still waits for
	// ConsolidateVMDisks_Task (snapfaults.go)
	keepDeltas bool
	unmerged   map[int32][]*layer
}

type snapRec struct {
	ref       types.ManagedObjectReference
	name      string
	desc      string
	created   time.Time
	removed   bool
	frozen    map[int32]*layer
	changeIDs map[int32]string
	digests   map[int32]*string
}

func logf(format string, args ...interface{}) { log.Printf(format, args...) }

func (l *Lab) vm(name string) *labVM { return l.vms[name] }

func (vm *labVM) disk(key int32) *disk {
	for _, d := range vm.disks {
		if d.key == key {
			return d
		}
	}
	return nil
}

// simVM is vcsim's object for the VM, nil once it was destroyed.
func (l *Lab) simVM(vm *labVM) *simulator.VirtualMachine {
	o, _ := simulator.Map.Get(vm.ref).(*simulator.VirtualMachine)
	return o
}

// reconcileAll runs after every SOAP call that may have changed a VM: it turns what vcsim
// did (snapshots created or removed, power cycles, CBT flag flips, destroys) into layer
// and CBT changes, then rewrites the disk backings vcsim shows.
func (l *Lab) reconcileAll() {
	for _, vm := range l.vms {
		l.reconcile(vm)
	}
}

func (l *Lab) reconcile(vm *labVM) {
	sv := l.simVM(vm)
	if sv == nil {
		l.forget(vm)
		return
	}
	stun := false
	if sv.Runtime.PowerState != vm.power {
		stun = true
		vm.power = sv.Runtime.PowerState
	}

	// Snapshots vcsim has now, in creation order.
	var current []types.VirtualMachineSnapshotTree
	if sv.Snapshot != nil {
		var walk func([]types.VirtualMachineSnapshotTree)
		walk = func(ts []types.VirtualMachineSnapshotTree) {
			for _, t := range ts {
				current = append(current, t)
				walk(t.ChildSnapshotList)
			}
		}
		walk(sv.Snapshot.RootSnapshotList)
	}
	sort.Slice(current, func(i, j int) bool { return current[i].Id < current[j].Id })
	present := map[types.ManagedObjectReference]bool{}
	for _, t := range current {
		present[t.Snapshot] = true
	}
	known := map[types.ManagedObjectReference]bool{}
	var kept []*snapRec
	var gone []*snapRec
	for _, s := range vm.snaps {
		known[s.ref] = true
		if present[s.ref] {
			kept = append(kept, s)
		} else {
			gone = append(gone, s)
		}
	}
	var fresh []types.VirtualMachineSnapshotTree
	for _, t := range current {
		if !known[t.Snapshot] {
			fresh = append(fresh, t)
		}
	}
	if len(gone) > 0 || len(fresh) > 0 {
		stun = true
	}

	enabled := sv.Config.ChangeTrackingEnabled != nil && *sv.Config.ChangeTrackingEnabled
	if enabled != vm.cbtEnabled {
		vm.cbtEnabled = enabled
		for _, d := range vm.disks {
			d.cbt.stop()
		}
		// ESXi turns tracking on at once for a powered-off VM; a running VM needs a
		// stun/unstun cycle (snapshot create or remove, power cycle) first.
		if enabled && vm.power == types.VirtualMachinePowerStatePoweredOff {
			stun = true
		}
	}
	if stun && vm.cbtEnabled {
		for _, d := range vm.disks {
			if !d.cbt.active {
				d.cbt.start()
			}
		}
	}

	// Removed snapshots: merge the delta above each one's frozen layer into it.
	vm.snaps = kept
	keep := vm.keepDeltas
	vm.keepDeltas = false
	for _, s := range gone {
		s.removed = true
		if keep {
			if vm.unmerged == nil {
				vm.unmerged = map[int32][]*layer{}
			}
			for _, d := range vm.disks {
				if f := s.frozen[d.key]; f != nil {
					vm.unmerged[d.key] = append(vm.unmerged[d.key], f)
				}
			}
			l.setConsolidationNeeded(vm, true)
			continue
		}
		for _, d := range vm.disks {
			idx := d.layerIndex(s.frozen[d.key])
			if idx < 0 {
				continue
			}
			merged, err := d.consolidate(d.root, idx)
			if err != nil {
				logf("consolidate %s: %v", d.stem, err)
				continue
			}
			for _, o := range vm.snaps {
				if o.frozen[d.key] == merged {
					o.frozen[d.key] = d.chain[idx]
				}
			}
		}
	}

	// New snapshots: freeze the top layer of every disk; the guest moves to a new delta.
	for _, t := range fresh {
		s := &snapRec{ref: t.Snapshot, name: t.Name, desc: t.Description, created: t.CreateTime,
			frozen: map[int32]*layer{}, changeIDs: map[int32]string{}, digests: map[int32]*string{}}
		for _, d := range vm.disks {
			frozen, err := d.freeze(d.root)
			if err != nil {
				logf("freeze %s: %v", d.stem, err)
				continue
			}
			s.frozen[d.key] = frozen
			s.changeIDs[d.key] = d.cbt.closeGeneration()
			if l.cfg.SnapshotDigests {
				sum := d.viewSHA256(d.layerIndex(frozen))
				s.digests[d.key] = &sum
			}
		}
		if so, ok := simulator.Map.Get(t.Snapshot).(*simulator.VirtualMachineSnapshot); ok {
			// vcsim copied vm.Config shallowly: give the snapshot its own device objects
			// before the live VM's backings move on.
			so.Config.Hardware.Device = copyDevices(so.Config.Hardware.Device)
		}
		vm.snaps = append(vm.snaps, s)
		vm.history = append(vm.history, s)
	}
	l.applyBackings(vm, sv)
}

// copyDevices gives disks their own VirtualDisk and backing structs; other devices are
// never changed by the lab and stay shared.
func copyDevices(devs []types.BaseVirtualDevice) []types.BaseVirtualDevice {
	out := make([]types.BaseVirtualDevice, len(devs))
	for i, dev := range devs {
		if d, ok := dev.(*types.VirtualDisk); ok {
			c := *d
			out[i] = &c
		} else {
			out[i] = dev
		}
	}
	return out
}

// backing builds the backing ESXi shows for the view whose top is chain[idx]: the file of
// that layer, its parent chain, the disk UUID and (for the top only) the change ID.
func (l *Lab) backing(d *disk, idx int, changeID string) *types.VirtualDiskFlatVer2BackingInfo {
	ds := d.dsRef
	b := &types.VirtualDiskFlatVer2BackingInfo{
		VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
			FileName:  d.path(d.chain[idx].desc),
			Datastore: &ds,
		},
		DiskMode:        string(types.VirtualDiskModePersistent),
		ThinProvisioned: types.NewBool(d.kind == "thin"),
		EagerlyScrub:    types.NewBool(d.kind == "eagerZeroedThick"),
		WriteThrough:    types.NewBool(false),
		Split:           types.NewBool(false),
		DigestEnabled:   types.NewBool(false),
		Uuid:            d.uuid,
		ChangeId:        changeID,
		KeyId:           d.keyID,
	}
	if d.multiWriter {
		b.Sharing = string(types.VirtualDiskSharingSharingMultiWriter)
	}
	if idx > 0 {
		b.Parent = l.backing(d, idx-1, "")
	}
	return b
}

func (l *Lab) applyBackings(vm *labVM, sv *simulator.VirtualMachine) {
	set := func(devs []types.BaseVirtualDevice, pick func(d *disk) (int, string)) {
		for i, dev := range devs {
			vd, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			d := vm.disk(vd.Key)
			if d == nil {
				continue
			}
			idx, cid := pick(d)
			if idx < 0 {
				continue
			}
			c := *vd // fresh struct: a serialiser may still hold the old one
			c.Backing = l.backing(d, idx, cid)
			c.CapacityInBytes = d.capacity
			c.CapacityInKB = d.capacity / 1024
			devs[i] = &c
		}
	}
	set(sv.Config.Hardware.Device, func(d *disk) (int, string) {
		return len(d.chain) - 1, d.cbt.changeID()
	})
	for _, s := range vm.snaps {
		so, ok := simulator.Map.Get(s.ref).(*simulator.VirtualMachineSnapshot)
		if !ok {
			continue
		}
		set(so.Config.Hardware.Device, func(d *disk) (int, string) {
			return d.layerIndex(s.frozen[d.key]), s.changeIDs[d.key]
		})
	}
}

// forget drops a destroyed VM's state and files.
func (l *Lab) forget(vm *labVM) {
	for _, d := range vm.disks {
		d.remove(d.root)
	}
	delete(l.vms, vm.name)
	delete(l.byRef, vm.ref.Value)
}

// snapshotIndex finds the view index of disk d as seen by snapshot ref (or the live top).
func (vm *labVM) viewIndex(d *disk, snap *types.ManagedObjectReference) (int, *snapRec) {
	if snap == nil {
		return len(d.chain) - 1, nil
	}
	for _, s := range vm.snaps {
		if s.ref == *snap {
			return d.layerIndex(s.frozen[d.key]), s
		}
	}
	return -1, nil
}

func (l *Lab) datastorePath(rel string) string { return filepath.Join(l.root, rel) }

var bg = context.Background()
