package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// soapCall is what the interceptor needs to know about a request before vcsim sees it.
type soapCall struct {
	method string
	this   types.ManagedObjectReference
	body   []byte // the method element, for methods the lab answers itself
}

// parseSOAP finds the method element inside the envelope's Body and its _this argument.
func parseSOAP(envelope []byte) (*soapCall, error) {
	var m struct {
		This types.ManagedObjectReference `xml:"_this"`
	}
	name, err := decodeMethod(envelope, &m)
	if err != nil {
		return nil, err
	}
	return &soapCall{method: name, this: m.This, body: envelope}, nil
}

// decodeMethod decodes the first element inside the envelope's Body into v (matching child
// elements by local name) and returns that element's name, the SOAP method.
func decodeMethod(envelope []byte, v interface{}) (string, error) {
	dec := xml.NewDecoder(bytes.NewReader(envelope))
	inBody := false
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if !inBody {
			inBody = se.Name.Local == "Body"
			continue
		}
		return se.Name.Local, dec.DecodeElement(v, &se)
	}
}

// Methods that never change a VM: no reconcile after them.
var readOnly = map[string]bool{
	"RetrieveServiceContent": true, "RetrieveProperties": true, "RetrievePropertiesEx": true,
	"ContinueRetrievePropertiesEx": true, "WaitForUpdates": true, "WaitForUpdatesEx": true,
	"CheckForUpdates": true, "CreateFilter": true, "DestroyPropertyFilter": true,
	"CreateContainerView": true, "DestroyView": true, "QueryChangedDiskAreas": true,
	"Login": true, "Logout": true, "CurrentTime": true, "SessionIsActive": true,
	"CreatePropertyCollector": true, "DestroyPropertyCollector": true, "Fetch": true,
	"FindByUuid": true, "FindByInventoryPath": true, "FindChild": true, "FindAllByUuid": true,
	"QueryPerf": true, "ValidateCredentialsInGuest": true,
}

// Methods allowed without a session, as on ESXi/vCenter. vcsim also lets property reads
// through without one; real hosts do not, so the lab refuses them.
var noSession = map[string]bool{
	"RetrieveServiceContent": true, "Login": true, "LoginByToken": true,
	"LoginExtensionByCertificate": true, "CloneSession": true,
}

// Blocking calls must not hold the lab lock, or one waiting client would stall all others.
var blocking = map[string]bool{"WaitForUpdates": true, "WaitForUpdatesEx": true}

// serveSOAP sits in front of vcsim's ServeSDK: it counts calls, applies injected faults,
// answers the methods vcsim lacks (QueryChangedDiskAreas), enforces sessions, and after a
// call that may have changed a VM reconciles the lab's disk state with vcsim's objects.
func (l *Lab) serveSOAP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		l.svc.ServeSDK(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	call, err := parseSOAP(body)
	if err != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		l.svc.ServeSDK(w, r)
		return
	}
	l.counters.soap(call.method)

	fault := l.faults.match("soap", call.method)
	if fault != nil && fault.Kind == "delay" {
		sleepMs(fault.DelayMs)
	}

	if !blocking[call.method] {
		l.mu.Lock()
		defer l.mu.Unlock()
	}

	cookie := ""
	if c, err := r.Cookie(soap.SessionCookieName); err == nil {
		cookie = c.Value
	}
	if fault != nil && fault.Kind == "sessionExpire" && cookie != "" {
		l.terminateSession(cookie)
	}
	// ServiceInstance.content is readable without a session (pyvmomi fetches it to log in).
	anonymous := noSession[call.method] || (call.method == "Fetch" && call.this.Type == "ServiceInstance")
	if !anonymous && !l.sessionValid(cookie) {
		writeFault(w, "The session is not authenticated.", &types.NotAuthenticated{
			NoPermission: types.NoPermission{Object: call.this, PrivilegeId: "System.View"},
		})
		return
	}
	if fault != nil && fault.Kind == "taskInProgress" {
		task := simulator.CreateTask(call.this, call.method, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			return nil, nil
		})
		writeFault(w, "The operation is not allowed in the current state.", &types.TaskInProgress{
			VimFault: types.VimFault{}, Task: task.Self,
		})
		return
	}

	if fault != nil && fault.Kind == "noPermission" {
		l.denySOAP(w, call) // privileges.go
		return
	}

	if fault != nil && fault.Kind == "fileFault" {
		writeFault(w, "Error caused by file "+call.method+" (injected)", &types.FileFault{File: "injected"})
		return
	}

	switch call.method {
	case "QueryChangedDiskAreas":
		l.queryChangedDiskAreas(w, call)
		return
	case "CreateSnapshot_Task":
		if fault != nil && fault.Kind == "snapshotCreateFail" {
			l.failSnapshot(w, call)
			return
		}
		if fault != nil && fault.Kind == "quiesceFault" && wantsQuiesce(call) {
			l.failQuiesce(w, call) // snapfaults.go
			return
		}
	case "RemoveSnapshot_Task":
		if fault != nil && fault.Kind == "consolidationNeeded" {
			l.consolidateLater(call)
		}
	case "ConsolidateVMDisks_Task":
		l.consolidateDisks(w, call)
		return
	}

	// Let vcsim answer into a buffer, so hooks can run before the client sees the reply.
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := l.serveVcsim(r, call.method)
	resp := rec.Body.Bytes()

	if !blocking[call.method] && !readOnly[call.method] {
		l.reconcileAll()
		if call.method == "CreateVM_Task" || call.method == "ReconfigVM_Task" {
			l.materializeNewDisks()
		}
		if call.method == "RemoveSnapshot_Task" {
			l.fixSnapshotTaskEntity(resp)
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(resp)
}

var taskRe = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)

// fixSnapshotTaskEntity points a RemoveSnapshot_Task's info.entity at the VM: vcsim sets the
// snapshot there, which is not a ManagedEntity, and pyvmomi then fails to read task.info.
func (l *Lab) fixSnapshotTaskEntity(resp []byte) {
	m := taskRe.FindSubmatch(resp)
	if m == nil {
		return
	}
	ref := types.ManagedObjectReference{Type: "Task", Value: string(m[1])}
	task, ok := simulator.Map.Get(ref).(*simulator.Task)
	if !ok || task.Info.Entity == nil || task.Info.Entity.Type != "VirtualMachineSnapshot" {
		return
	}
	for _, vm := range l.vms {
		for _, s := range vm.history {
			if s.ref == *task.Info.Entity {
				vmRef := vm.ref
				simulator.Map.Update(task, []types.PropertyChange{
					{Name: "info.entity", Val: vmRef},
					{Name: "info.entityName", Val: vm.name},
				})
				return
			}
		}
	}
}

// failSnapshot answers CreateSnapshot_Task with a task that ends in error and leaves no
// snapshot behind, as when ESXi cannot create the delta disks.
func (l *Lab) failSnapshot(w http.ResponseWriter, call *soapCall) {
	task := simulator.CreateTask(call.this, "createSnapshot", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, &types.FileFault{File: "injected snapshot failure"}
	})
	ref := task.Run()
	writeResponse(w, &methods.CreateSnapshot_TaskBody{
		Res: &types.CreateSnapshot_TaskResponse{Returnval: ref},
	})
}

// sessionValid asks vcsim's SessionManager whether the cookie names a live session.
func (l *Lab) sessionValid(cookie string) bool {
	if cookie == "" {
		return false
	}
	res, err := methods.SessionIsActive(bg, l.client, &types.SessionIsActive{
		This: *l.client.ServiceContent.SessionManager, SessionID: cookie, UserName: l.user,
	})
	return err == nil && res.Returnval
}

func (l *Lab) terminateSession(cookie string) {
	_, _ = methods.TerminateSession(bg, l.client, &types.TerminateSession{
		This: *l.client.ServiceContent.SessionManager, SessionId: []string{cookie},
	})
}

const envelopeHead = xml.Header + `<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/"` +
	` xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"` +
	` xmlns:xsd="http://www.w3.org/2001/XMLSchema"` +
	` xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`

const envelopeTail = `</soapenv:Body></soapenv:Envelope>`

// writeResponse encodes a methods.*Body's Res the way vcsim does: the response element in
// the urn:vim25 namespace, inside a soapenv envelope.
func writeResponse(w http.ResponseWriter, body interface{}) {
	res := reflect.ValueOf(body).Elem().FieldByName("Res")
	var out bytes.Buffer
	out.WriteString(envelopeHead)
	e := xml.NewEncoder(&out)
	start := xml.StartElement{Name: xml.Name{Local: res.Elem().Type().Name()},
		Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"}}}
	if err := e.EncodeElement(res.Interface(), start); err != nil {
		logf("encode response: %v", err)
	}
	_ = e.Flush()
	out.WriteString(envelopeTail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes())
}

// writeFault encodes a vim fault as vcsim does for its own: HTTP 500, ServerFaultCode, and
// the detail element named "<Type>Fault" with xsi:type, which pyvmomi maps to vim.fault.*.
func writeFault(w http.ResponseWriter, msg string, fault types.BaseMethodFault) {
	kind := reflect.TypeOf(fault).Elem().Name()
	var detail bytes.Buffer
	e := xml.NewEncoder(&detail)
	start := xml.StartElement{Name: xml.Name{Local: kind + "Fault"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
		{Name: xml.Name{Local: "xsi:type"}, Value: kind},
	}}
	if err := e.EncodeElement(fault, start); err != nil {
		logf("encode fault: %v", err)
	}
	_ = e.Flush()
	var out bytes.Buffer
	out.WriteString(envelopeHead)
	fmt.Fprintf(&out, "<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>%s</faultstring><detail>",
		xmlEscape(msg))
	out.Write(detail.Bytes())
	out.WriteString("</detail></soapenv:Fault>")
	out.WriteString(envelopeTail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(out.Bytes())
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
