package main

import (
	"net/http"
	"net/http/httptest"
)

// serveVcsim lets vcsim answer into a recorder, so hooks can run before the client sees
// the reply. vcsim 0.24.2 panics on a Fetch of an unset property (VirtualMachine.snapshot
// of a VM without snapshots, the root folder's parent); a real host answers an empty
// FetchResponse, which pyvmomi reads as None. vcsim releases its object lock with defer, so
// recovering here leaves no lock held.
func (l *Lab) serveVcsim(r *http.Request, method string) (rec *httptest.ResponseRecorder) {
	rec = httptest.NewRecorder()
	defer func() {
		if p := recover(); p != nil {
			if method != "Fetch" {
				panic(p)
			}
			rec = httptest.NewRecorder()
			rec.Header().Set("Content-Type", "text/xml; charset=utf-8")
			rec.WriteHeader(http.StatusOK)
			_, _ = rec.WriteString(envelopeHead + `<FetchResponse xmlns="urn:vim25"></FetchResponse>` + envelopeTail)
		}
	}()
	l.svc.ServeSDK(rec, r)
	return rec
}
