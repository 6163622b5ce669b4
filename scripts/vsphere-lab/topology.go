package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// The inventory a real vCenter grows and vcsim's model lacks (docs/lab.md, "Topology"). Names
// are as the API returns them: vSphere escapes "%", "/" and "\" in inventory names as %25,
// %2f and %5c, so a datastore a user named "100%" is "100%25" to every client.
const (
	outerFolder  = "Europe"
	innerFolder  = "Zürich 100%25"
	nestedDC     = "DC 1+ü"
	nestedHost   = "dc1-esx01"
	awkwardDS    = "Datastore 1+100%25 ü" // the nested datacenter's VM home datastore
	secondDS     = "LocalDS_1"            // a second datastore on the same host
	vappName     = "vApp 1"
	defaultDCKey = "DC0"
)

// dcInfo is where createVM puts a VM of one datacenter: the VM folder, the host and pool
// (nil: vcsim picks, as for DC0's cluster), the home datastore and the vApp.
type dcInfo struct {
	name      string
	path      string // inventory path below the root folder, as /folder's dcPath wants it
	vmFolder  *object.Folder
	host      *object.HostSystem
	pool      *object.ResourcePool
	vapp      *object.VirtualApp
	defaultDS string
}

// dsInfo is one datastore the lab serves on /folder.
type dsInfo struct {
	dir string
	dc  string // inventory path of its datacenter
	ref types.ManagedObjectReference
}

// buildTopology adds to vcsim's model: folders Europe/Zürich 100%25 holding a second
// datacenter "DC 1+ü" with a standalone host and two datastores, and a vApp in DC0 on the
// standalone host DC0_H0. Runs once, before the lab serves.
func (l *Lab) buildTopology(dsRoot string) error {
	finder := find.NewFinder(l.client, false)
	dc0, err := finder.Datacenter(bg, defaultDCKey)
	if err != nil {
		return err
	}
	f0, err := dc0.Folders(bg)
	if err != nil {
		return err
	}
	finder.SetDatacenter(dc0)
	h0, err := finder.HostSystem(bg, "DC0_H0")
	if err != nil {
		return err
	}
	p0, err := h0.ResourcePool(bg)
	if err != nil {
		return err
	}
	vapp, err := p0.CreateVApp(bg, vappName, types.DefaultResourceConfigSpec(),
		types.VAppConfigSpec{}, f0.VmFolder)
	if err != nil {
		return fmt.Errorf("vApp: %w", err)
	}
	l.dcs = map[string]*dcInfo{defaultDCKey: {name: defaultDCKey, path: defaultDCKey,
		vmFolder: f0.VmFolder, vapp: vapp, defaultDS: l.dsName}}
	l.dcs[defaultDCKey+"/"+vappName] = &dcInfo{name: defaultDCKey, path: defaultDCKey,
		vmFolder: f0.VmFolder, host: h0, pool: p0, vapp: vapp, defaultDS: l.dsName}

	root := object.NewRootFolder(l.client)
	outer, err := root.CreateFolder(bg, outerFolder)
	if err != nil {
		return err
	}
	inner, err := outer.CreateFolder(bg, innerFolder)
	if err != nil {
		return err
	}
	dc1, err := inner.CreateDatacenter(bg, nestedDC)
	if err != nil {
		return err
	}
	f1, err := dc1.Folders(bg)
	if err != nil {
		return err
	}
	task, err := f1.HostFolder.AddStandaloneHost(bg, types.HostConnectSpec{HostName: nestedHost}, true, nil, nil)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(bg, nil)
	if err != nil {
		return err
	}
	h1 := object.NewHostSystem(l.client, info.Result.(types.ManagedObjectReference))
	p1, err := h1.ResourcePool(bg)
	if err != nil {
		return err
	}
	dss, err := h1.ConfigManager().DatastoreSystem(bg)
	if err != nil {
		return err
	}
	for i, name := range []string{awkwardDS, secondDS} {
		dir := filepath.Join(dsRoot, fmt.Sprintf("dc1-ds%d", i))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if _, err := dss.CreateLocalDatastore(bg, name, dir); err != nil {
			return fmt.Errorf("datastore %s: %w", name, err)
		}
	}
	path := strings.Join([]string{outerFolder, innerFolder, nestedDC}, "/")
	l.dcs[nestedDC] = &dcInfo{name: nestedDC, path: path, vmFolder: f1.VmFolder, host: h1,
		pool: p1, defaultDS: awkwardDS}
	return nil
}

// indexDatastores records every datastore's directory and datacenter (after the topology
// is built; fixed from then on).
func (l *Lab) indexDatastores() {
	l.datastores = map[string]dsInfo{}
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		dc := ""
		for p := ds.Parent; p != nil; {
			o := simulator.Map.Get(*p)
			if o == nil {
				break
			}
			if d, ok := o.(*simulator.Datacenter); ok {
				dc = l.inventoryPath(d.Self)
				break
			}
			p = o.(mo.Entity).Entity().Parent
		}
		l.datastores[ds.Name] = dsInfo{dir: ds.Info.GetDatastoreInfo().Url, dc: dc, ref: ds.Self}
	}
}

// inventoryPath is an entity's path of names below the root folder ("Europe/.../DC 1+ü").
func (l *Lab) inventoryPath(ref types.ManagedObjectReference) string {
	rootRef := l.client.ServiceContent.RootFolder
	var parts []string
	for cur := &ref; cur != nil && *cur != rootRef; {
		o, ok := simulator.Map.Get(*cur).(mo.Entity)
		if !ok {
			break
		}
		parts = append([]string{o.Entity().Name}, parts...)
		cur = o.Entity().Parent
	}
	return strings.Join(parts, "/")
}
