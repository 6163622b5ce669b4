package main

import (
	"fmt"
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/types"
)

type qcdaRequest struct {
	This        types.ManagedObjectReference  `xml:"_this"`
	Snapshot    *types.ManagedObjectReference `xml:"snapshot"`
	DeviceKey   int32                         `xml:"deviceKey"`
	StartOffset int64                         `xml:"startOffset"`
	ChangeID    string                        `xml:"changeId"`
}

// queryChangedDiskAreas answers QueryChangedDiskAreas, which vcsim lacks, with the semantics
// of the vSphere API reference (see docs/lab.md). Caller holds l.mu.
func (l *Lab) queryChangedDiskAreas(w http.ResponseWriter, call *soapCall) {
	var req qcdaRequest
	if _, err := decodeMethod(call.body, &req); err != nil {
		writeFault(w, err.Error(), &types.InvalidRequest{})
		return
	}
	info, fault, msg := l.changedAreas(&req)
	if fault != nil {
		writeFault(w, msg, fault)
		return
	}
	writeResponse(w, &methods.QueryChangedDiskAreasBody{
		Res: &types.QueryChangedDiskAreasResponse{Returnval: *info},
	})
}

func invalidArg(prop string) types.BaseMethodFault {
	return &types.InvalidArgument{InvalidProperty: prop}
}

func (l *Lab) changedAreas(req *qcdaRequest) (*types.DiskChangeInfo, types.BaseMethodFault, string) {
	vm := l.byRef[req.This.Value]
	if vm == nil {
		if _, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine); ok {
			return nil, &types.FileFault{File: req.This.Value},
				"Change tracking is not supported for this VM in the lab (create it via /lab/vms)."
		}
		return nil, &types.ManagedObjectNotFound{Obj: req.This}, "managed object not found"
	}
	d := vm.disk(req.DeviceKey)
	if d == nil {
		return nil, invalidArg("deviceKey"), "A specified parameter was not correct: deviceKey"
	}
	if !d.cbt.active {
		f := d.path(d.top().desc)
		return nil, &types.FileFault{File: f},
			fmt.Sprintf("Error caused by file %s: change tracking is not active on this disk", f)
	}
	if req.Snapshot == nil && vm.power != types.VirtualMachinePowerStatePoweredOff {
		return nil, invalidArg("snapshot"), "A specified parameter was not correct: snapshot"
	}
	idx, snap := vm.viewIndex(d, req.Snapshot)
	if idx < 0 {
		return nil, invalidArg("snapshot"), "A specified parameter was not correct: snapshot"
	}
	if req.StartOffset < 0 || req.StartOffset >= d.capacity {
		return nil, invalidArg("startOffset"), "A specified parameter was not correct: startOffset"
	}
	diskFile := d.path(d.chain[idx].desc)
	fileFault := func(why string) (*types.DiskChangeInfo, types.BaseMethodFault, string) {
		return nil, &types.FileFault{File: diskFile}, fmt.Sprintf("Error caused by file %s: %s", diskFile, why)
	}

	// The change ID of the view the query is about: the snapshot's, or the live disk's.
	toID := d.cbt.changeID()
	to := d.cbt.cur + 1 // the live view includes the generation being written
	if snap != nil {
		toID = snap.changeIDs[d.key]
		epoch, seq, ok := parseChangeID(toID)
		if !ok || epoch != d.cbt.epoch {
			return fileFault("the snapshot has no valid change ID (tracking was reset or inactive)")
		}
		to = seq
	}
	_ = toID

	gran := l.cfg.Granularity
	var areas *extentSet
	if req.ChangeID == "*" {
		if d.kind == "eagerZeroedThick" {
			areas = &extentSet{ext: []extent{{0, d.capacity}}}
		} else {
			areas = d.allocated(idx).rounded(gran, d.capacity)
		}
	} else {
		epoch, from, ok := parseChangeID(req.ChangeID)
		if !ok {
			return fileFault("malformed change ID")
		}
		if epoch != d.cbt.epoch || from < 1 || from > to {
			return fileFault("the change ID is not valid for this disk (tracking was reset)")
		}
		areas = d.cbt.changedSince(from, to).rounded(gran, d.capacity)
	}

	// One window per reply: at most maxAreasPerReply areas; a truncated reply ends where
	// its last area ends, a complete one runs to the end of the disk.
	res := &types.DiskChangeInfo{StartOffset: req.StartOffset}
	clipped := areas.clip(req.StartOffset, d.capacity)
	limit := l.cfg.MaxAreasPerReply
	if limit > 0 && len(clipped) > limit {
		clipped = clipped[:limit]
		res.Length = clipped[len(clipped)-1].end - req.StartOffset
	} else {
		res.Length = d.capacity - req.StartOffset
	}
	for _, e := range clipped {
		res.ChangedArea = append(res.ChangedArea, types.DiskChangeExtent{Start: e.start, Length: e.end - e.start})
	}
	return res, nil, ""
}
