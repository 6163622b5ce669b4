package main

import (
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

// Snapshot behaviour of real hosts that vcsim lacks (docs/lab.md, "Faults"):
//
//   - quiesceFault: a CreateSnapshot_Task with quiesce=true ends in ApplicationQuiesceFault
//     (VMware Tools could not quiesce the guest: a VSS writer failed, a freeze timed out);
//     a crash-consistent one (quiesce=false) succeeds, though it counts against the rule.
//   - consolidationNeeded: a RemoveSnapshot_Task removes the snapshot from the tree but
//     leaves its delta unmerged, and the VM reports runtime.consolidationNeeded, as when
//     ESXi cannot consolidate (a lock held by a backup appliance, a full datastore). The
//     VM keeps running on the delta until ConsolidateVMDisks_Task merges it.
func init() {
	faultKinds["soap"]["quiesceFault"] = true
	faultKinds["soap"]["consolidationNeeded"] = true
}

// wantsQuiesce reads CreateSnapshot_Task's quiesce argument.
func wantsQuiesce(call *soapCall) bool {
	var req struct {
		Quiesce bool `xml:"quiesce"`
	}
	_, err := decodeMethod(call.body, &req)
	return err == nil && req.Quiesce
}

// failQuiesce answers CreateSnapshot_Task with a task that ends in ApplicationQuiesceFault
// and leaves no snapshot, as ESXi does when the guest cannot be quiesced.
func (l *Lab) failQuiesce(w http.ResponseWriter, call *soapCall) {
	task := simulator.CreateTask(call.this, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.ApplicationQuiesceFault{}
	})
	ref := task.Run()
	writeResponse(w, &methods.CreateSnapshot_TaskBody{
		Res: &types.CreateSnapshot_TaskResponse{Returnval: ref},
	})
}

// snapshotOwner is the lab VM a snapshot belongs to (nil if none).
func (l *Lab) snapshotOwner(ref types.ManagedObjectReference) *labVM {
	for _, vm := range l.vms {
		for _, s := range vm.snaps {
			if s.ref == ref {
				return vm
			}
		}
	}
	return nil
}

// consolidateLater marks the VM owning the snapshot a RemoveSnapshot_Task names: its
// next reconcile leaves the removed snapshot's delta in place (lab.go).
func (l *Lab) consolidateLater(call *soapCall) {
	if vm := l.snapshotOwner(call.this); vm != nil {
		vm.keepDeltas = true
	}
}

// setConsolidationNeeded sets runtime.consolidationNeeded as vSphere reports it.
func (l *Lab) setConsolidationNeeded(vm *labVM, needed bool) {
	if sv := l.simVM(vm); sv != nil {
		simulator.Map.Update(sv, []types.PropertyChange{
			{Name: "runtime.consolidationNeeded", Val: needed},
		})
		sv.Runtime.ConsolidationNeeded = types.NewBool(needed)
	}
}

// consolidateDisks answers ConsolidateVMDisks_Task: every delta left by a removal that
// did not consolidate is merged into its parent, as ESXi does, and the flag clears.
func (l *Lab) consolidateDisks(w http.ResponseWriter, call *soapCall) {
	vm := l.byRef[call.this.Value]
	task := simulator.CreateTask(call.this, "consolidateDisks", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		if vm == nil {
			return nil, nil
		}
		for _, d := range vm.disks {
			for _, frozen := range vm.unmerged[d.key] {
				idx := d.layerIndex(frozen)
				if idx < 0 || idx+1 >= len(d.chain) {
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
		vm.unmerged = nil
		l.setConsolidationNeeded(vm, false)
		if sv := l.simVM(vm); sv != nil {
			l.applyBackings(vm, sv)
		}
		return nil, nil
	})
	ref := task.Run()
	writeResponse(w, &methods.ConsolidateVMDisks_TaskBody{
		Res: &types.ConsolidateVMDisks_TaskResponse{Returnval: ref},
	})
}
