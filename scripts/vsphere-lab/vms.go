package main

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

type diskSpec struct {
	Capacity int64  `json:"capacity"`
	Type     string `json:"type"`
	// FlatName names the base data file (in the VM's directory) instead of
	// "<disk>-flat.vmdk": only the descriptor's extent line says which file holds the data.
	FlatName string `json:"flatName"`
	// Extent makes the base descriptor claim another extent (see extentKinds).
	Extent string `json:"extent"`
	// Encrypted sets backing.keyId (and the VM's config.keyId), as VM encryption does.
	Encrypted bool `json:"encrypted"`
	// Datastore holds this disk's files ("": the VM's home datastore), e.g. a disk on
	// another datastore than the VM's configuration.
	Datastore string `json:"datastore"`
	// MultiWriter shares the disk between VMs (backing.sharing "sharingMultiWriter", as
	// for Oracle RAC or a cluster file system); vSphere cannot snapshot such a disk.
	MultiWriter bool `json:"multiWriter"`
}

type vmSpec struct {
	Name    string     `json:"name"`
	Disks   []diskSpec `json:"disks"`
	PowerOn *bool      `json:"powerOn"`
	CBT     bool       `json:"cbt"`
	// Version is the virtual hardware version ("vmx-13" when empty); CBT needs vmx-7+.
	Version string `json:"version"`
	// Datacenter is "DC0" (default) or the nested "DC 1+ü" (topology.go); Datastore the VM's
	// home datastore (default: the datacenter's); VApp puts the VM into DC0's vApp, where
	// it has no parent folder, only parentVApp.
	Datacenter string `json:"datacenter"`
	Datastore  string `json:"datastore"`
	VApp       bool   `json:"vapp"`
	// Template marks the VM as a template (powered off: templates cannot run or be
	// snapshotted).
	Template bool `json:"template"`
}

// createVM creates a real vcsim VM (through vcsim's own CreateVM_Task, in process) with a SCSI
// controller and the requested disks, then takes over its disk files as layered disks.
func (l *Lab) createVM(spec vmSpec) (*labVM, error) {
	// Inventory names come escaped ("/" is %2f, "\\" %5c): a VM name never holds them raw.
	// "[" would end the datastore path's datastore part early in vcsim's own parser.
	if spec.Name == "" || strings.ContainsAny(spec.Name, "/\\[") {
		return nil, fmt.Errorf("invalid VM name %q", spec.Name)
	}
	dcKey := spec.Datacenter
	if dcKey == "" {
		dcKey = defaultDCKey
	}
	if spec.VApp {
		dcKey += "/" + vappName
	}
	place := l.dcs[dcKey]
	if place == nil || (spec.VApp && place.vapp == nil) {
		return nil, fmt.Errorf("no datacenter %q for a VM (vapp=%v)", spec.Datacenter, spec.VApp)
	}
	home := spec.Datastore
	if home == "" {
		home = place.defaultDS
	}
	for _, name := range append([]string{home}, diskDatastores(spec.Disks)...) {
		if info, ok := l.datastores[name]; !ok || info.dc != place.path {
			return nil, fmt.Errorf("datastore %q is not in datacenter %q", name, place.path)
		}
	}
	if l.vms[spec.Name] != nil {
		return nil, fmt.Errorf("VM %q exists", spec.Name)
	}
	for i, d := range spec.Disks {
		if d.Capacity <= 0 || d.Capacity%512 != 0 {
			return nil, fmt.Errorf("disk %d: capacity must be a positive multiple of 512", i)
		}
		switch d.Type {
		case "":
			spec.Disks[i].Type = "thin"
		case "thin", "eagerZeroedThick":
		default:
			return nil, fmt.Errorf("disk %d: type must be thin or eagerZeroedThick", i)
		}
		if _, ok := extentKinds[d.Extent]; !ok {
			return nil, fmt.Errorf("disk %d: unknown extent %q", i, d.Extent)
		}
		if strings.ContainsAny(d.FlatName, "/\\\"") || (d.FlatName != "" && !strings.HasSuffix(d.FlatName, ".vmdk")) {
			return nil, fmt.Errorf("disk %d: flatName must be a file name ending in .vmdk", i)
		}
	}
	pool := place.pool
	if pool == nil {
		finder := find.NewFinder(l.client, false)
		dc, err := finder.Datacenter(bg, place.path)
		if err != nil {
			return nil, err
		}
		finder.SetDatacenter(dc)
		pools, err := finder.ResourcePoolList(bg, "*")
		if err != nil || len(pools) == 0 {
			return nil, fmt.Errorf("no resource pool: %v", err)
		}
		pool = pools[0]
	}

	ctrl := &types.ParaVirtualSCSIController{VirtualSCSIController: types.VirtualSCSIController{
		SharedBus: types.VirtualSCSISharingNoSharing,
		VirtualController: types.VirtualController{
			BusNumber:     0,
			VirtualDevice: types.VirtualDevice{Key: 1000},
		},
	}}
	changes := []types.BaseVirtualDeviceConfigSpec{
		&types.VirtualDeviceConfigSpec{Operation: types.VirtualDeviceConfigSpecOperationAdd, Device: ctrl},
	}
	for i, d := range spec.Disks {
		dsName := d.Datastore
		if dsName == "" {
			dsName = home
		}
		ds := l.datastores[dsName].ref
		unit := int32(i)
		if unit >= 7 { // unit 7 is the SCSI controller itself
			unit++
		}
		disk := &types.VirtualDisk{
			VirtualDevice: types.VirtualDevice{
				Key:           int32(2000 + i),
				ControllerKey: 1000,
				UnitNumber:    &unit,
				Backing: &types.VirtualDiskFlatVer2BackingInfo{
					VirtualDeviceFileBackingInfo: types.VirtualDeviceFileBackingInfo{
						FileName: fmt.Sprintf("[%s]", dsName), Datastore: &ds,
					},
					DiskMode:        string(types.VirtualDiskModePersistent),
					ThinProvisioned: types.NewBool(spec.Disks[i].Type == "thin"),
					EagerlyScrub:    types.NewBool(spec.Disks[i].Type == "eagerZeroedThick"),
				},
			},
			CapacityInKB:    d.Capacity / 1024,
			CapacityInBytes: d.Capacity,
		}
		changes = append(changes, &types.VirtualDeviceConfigSpec{
			Operation:     types.VirtualDeviceConfigSpecOperationAdd,
			FileOperation: types.VirtualDeviceConfigSpecFileOperationCreate,
			Device:        disk,
		})
	}
	version := spec.Version
	if version == "" {
		version = "vmx-13"
	}
	cs := types.VirtualMachineConfigSpec{
		Name:         spec.Name,
		GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherGuest64),
		Version:      version,
		NumCPUs:      1,
		MemoryMB:     256,
		Files:        &types.VirtualMachineFileInfo{VmPathName: fmt.Sprintf("[%s]", home)},
		DeviceChange: changes,
	}
	var task *object.Task
	var err error
	if spec.VApp {
		task, err = place.vapp.CreateChildVM(bg, cs, place.host)
	} else {
		task, err = place.vmFolder.CreateVM(bg, cs, pool, place.host)
	}
	if err != nil {
		return nil, err
	}
	info, err := task.WaitForResult(bg, nil)
	if err != nil {
		return nil, err
	}
	ref := info.Result.(types.ManagedObjectReference)
	sv := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if err := l.writeNVRAM(sv); err != nil {
		return nil, err
	}

	vm := &labVM{name: spec.Name, ref: ref, power: types.VirtualMachinePowerStatePoweredOff}
	encrypted := false
	for _, dev := range sv.Config.Hardware.Device {
		vd, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		b := vd.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		var p object.DatastorePath
		p.FromString(b.FileName)
		stem := strings.TrimSuffix(p.Path, ".vmdk")
		i := int(vd.Key - 2000)
		ds := spec.Disks[i]
		info, ok := l.datastores[p.Datastore]
		if !ok {
			return nil, fmt.Errorf("disk %d: vcsim put it on unknown datastore %q", i, p.Datastore)
		}
		d := &disk{key: vd.Key, stem: stem, capacity: ds.Capacity,
			kind: ds.Type, uuid: newVMwareUUID(), extent: ds.Extent,
			ds: p.Datastore, dsRef: info.ref, root: info.dir, multiWriter: ds.MultiWriter}
		if ds.Encrypted {
			d.keyID = labKey(spec.Name, vd.Key)
			encrypted = true
		}
		flat := stem + "-flat.vmdk"
		if ds.FlatName != "" {
			flat = path.Join(path.Dir(stem), ds.FlatName)
		}
		if err := os.MkdirAll(filepath.Join(d.root, filepath.Dir(stem)), 0o755); err != nil {
			return nil, err
		}
		base, err := openLayer(d.root, stem+".vmdk", flat, d.capacity, "")
		if err != nil {
			return nil, err
		}
		d.chain = []*layer{base}
		if err := d.writeDescriptors(d.root); err != nil {
			return nil, err
		}
		vm.disks = append(vm.disks, d)
	}
	if encrypted {
		// An encrypted disk needs an encrypted VM home on vSphere: config.keyId is set too.
		sv.Config.KeyId = labKey(spec.Name, 0)
	}
	if spec.VApp {
		// On vSphere a vApp's VM has no parent folder, only parentVApp (vcsim files it in
		// the datacenter's VM folder and keeps the reference for its own bookkeeping: the
		// lab puts it back before it destroys the VM).
		vm.vappFolder = sv.Parent
		sv.Parent = nil
		vappRef := place.vapp.Reference()
		sv.ParentVApp = &vappRef
	}
	l.vms[vm.name] = vm
	l.byRef[ref.Value] = vm
	l.reconcile(vm)

	vmo := object.NewVirtualMachine(l.client, ref)
	if spec.CBT {
		t, err := vmo.Reconfigure(bg, types.VirtualMachineConfigSpec{ChangeTrackingEnabled: types.NewBool(true)})
		if err == nil {
			err = t.Wait(bg)
		}
		if err != nil {
			return nil, err
		}
		l.reconcile(vm) // powered off: tracking is active at once
	}
	if spec.Template {
		if err := vmo.MarkAsTemplate(bg); err != nil {
			return nil, err
		}
		return vm, nil
	}
	if spec.PowerOn == nil || *spec.PowerOn {
		t, err := vmo.PowerOn(bg)
		if err == nil {
			err = t.Wait(bg)
		}
		if err != nil {
			return nil, err
		}
		l.reconcile(vm)
	}
	return vm, nil
}

// labKey is the key a lab key provider "lab-kms" would hand out for a VM (key 0) or disk.
func labKey(vm string, key int32) *types.CryptoKeyId {
	return &types.CryptoKeyId{KeyId: fmt.Sprintf("%s-%d", vm, key),
		ProviderId: &types.KeyProviderId{Id: "lab-kms"}}
}

// destroyVM powers the VM off and destroys it through vcsim, then drops its files.
func (l *Lab) destroyVM(vm *labVM) error {
	vmo := object.NewVirtualMachine(l.client, vm.ref)
	if sv := l.simVM(vm); sv != nil {
		if sv.Parent == nil {
			sv.Parent = vm.vappFolder
		}
		if sv.Runtime.PowerState == types.VirtualMachinePowerStatePoweredOn {
			if t, err := vmo.PowerOff(bg); err == nil {
				_ = t.Wait(bg)
			}
		}
		// Destroying a VM destroys its snapshots: a later call on one of them must get
		// ManagedObjectNotFound, as on ESXi (vcsim would keep them and then panic).
		var snaps []types.ManagedObjectReference
		if sv.Snapshot != nil {
			snaps = snapshotRefs(sv.Snapshot.RootSnapshotList, snaps)
		}
		t, err := vmo.Destroy(bg)
		if err == nil {
			err = t.Wait(bg)
		}
		if err != nil {
			return err
		}
		for _, ref := range snaps {
			simulator.Map.Remove(ref)
		}
	}
	l.forget(vm)
	return nil
}

func snapshotRefs(tree []types.VirtualMachineSnapshotTree, out []types.ManagedObjectReference) []types.ManagedObjectReference {
	for _, node := range tree {
		out = append(out, node.Snapshot)
		out = snapshotRefs(node.ChildSnapshotList, out)
	}
	return out
}

// vmJSON renders what GET /lab/vms/{name} returns.
func (l *Lab) vmJSON(vm *labVM) map[string]interface{} {
	sv := l.simVM(vm)
	out := map[string]interface{}{"name": vm.name, "moref": vm.ref.Value}
	if sv != nil {
		out["instanceUuid"] = sv.Config.InstanceUuid
		out["uuid"] = sv.Config.Uuid
		out["powerState"] = string(sv.Runtime.PowerState)
	}
	active := false
	disks := []map[string]interface{}{}
	for _, d := range vm.disks {
		active = active || d.cbt.active
		var chain []string
		for _, ly := range d.chain {
			chain = append(chain, d.path(ly.desc))
		}
		disks = append(disks, map[string]interface{}{
			"key":       d.key,
			"file":      d.path(d.top().desc),
			"baseFile":  d.path(d.chain[0].desc),
			"flatFile":  path.Clean(d.chain[0].data),
			"chain":     chain,
			"uuid":      d.uuid,
			"capacity":  d.capacity,
			"type":      d.kind,
			"changeId":  nullable(d.cbt.changeID()),
			"encrypted": d.keyID != nil,
			"extent":    d.extent,
			"datastore": d.ds,
		})
	}
	out["disks"] = disks
	out["cbt"] = map[string]bool{"enabled": vm.cbtEnabled, "active": active}
	return out
}

func nullable(s string) interface{} {
	if s == "" {
		return nil
	}
	return s
}

func diskDatastores(disks []diskSpec) []string {
	var out []string
	for _, d := range disks {
		if d.Datastore != "" {
			out = append(out, d.Datastore)
		}
	}
	return out
}
