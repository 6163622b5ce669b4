package main

import (
	"net/http"

	"github.com/vmware/govmomi/vim25/types"
)

// A user without a privilege, as a fault switch (docs/lab.md, "Faults"):
//
//   - folder status403: /folder answers 403 Forbidden, as ESXi and vCenter do for a
//     valid session whose user lacks Datastore.Browse on the datastore (an expired or
//     missing session is 401);
//   - soap noPermission: the matched method fails with vim.fault.NoPermission naming the
//     privilege vSphere's API reference requires for it, and the object.
func init() {
	faultKinds["folder"]["status403"] = true
	faultKinds["soap"]["noPermission"] = true
}

// requiredPrivilege is the privilege the vSphere API reference lists for a method.
var requiredPrivilege = map[string]string{
	"CreateSnapshot_Task":     "VirtualMachine.State.CreateSnapshot",
	"RemoveSnapshot_Task":     "VirtualMachine.State.RemoveSnapshot",
	"ConsolidateVMDisks_Task": "VirtualMachine.State.RemoveSnapshot",
	"QueryChangedDiskAreas":   "VirtualMachine.Provisioning.DiskRandomRead",
	"ReconfigVM_Task":         "VirtualMachine.Config.ChangeTracking",
}

func (l *Lab) denySOAP(w http.ResponseWriter, call *soapCall) {
	priv, ok := requiredPrivilege[call.method]
	if !ok {
		priv = "System.Read"
	}
	writeFault(w, "Permission to perform this operation was denied.", &types.NoPermission{
		Object: call.this, PrivilegeId: priv,
	})
}

func denyFolder(w http.ResponseWriter) {
	http.Error(w, "Forbidden: the user lacks the privilege to access this file", http.StatusForbidden)
}
