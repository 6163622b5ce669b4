package main

import (
	"errors"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/vim25/soap"
)

const folderPrefix = "/folder/"

// serveFolder is the datastore file transfer endpoint (/folder/<path>?dcPath=&dsName=).
// Unlike vcsim it requires a session cookie or Basic auth, as ESXi and vCenter do, and it
// serves files with Range support, counters and injected faults. Transfers do not take the
// lab lock: layer files a snapshot froze are never written while the snapshot exists.
func (l *Lab) serveFolder(w http.ResponseWriter, r *http.Request) {
	if !l.folderAuth(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	rel := path.Clean(strings.TrimPrefix(r.URL.Path, folderPrefix))
	ds := r.URL.Query().Get("dsName")
	if ds == "" {
		ds = l.dsName
	}
	info, ok := l.datastores[ds]
	// vCenter finds the datastore in the datacenter dcPath names (its inventory path, as
	// the API spells the names); a wrong one is 404. ESXi ignores it: an absent dcPath is
	// accepted, so a client of a single host works.
	dc := r.URL.Query().Get("dcPath")
	if !ok || (dc != "" && dc != info.dc) || strings.HasPrefix(rel, "..") || rel == "." {
		http.NotFound(w, r)
		return
	}
	dir := info.dir
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// Uploads: vcsim's handler writes the file.
		l.svc.ServeDatastore(w, r)
		return
	}
	l.counters.folderRequest(rel)
	if l.limits.refuse(w, dir, rel) { // hostlimits.go: a lock or too many transfers
		return
	}
	defer l.limits.leave()
	leave := l.reads.enter(l.folderHost(rel))
	defer leave()
	fault := l.faults.match("folder", rel)
	if fault != nil {
		switch fault.Kind {
		case "delay":
			sleepMs(fault.DelayMs)
		case "status503":
			http.Error(w, "injected: service unavailable", http.StatusServiceUnavailable)
			return
		case "status500":
			http.Error(w, "injected: internal error", http.StatusInternalServerError)
			return
		case "status403":
			denyFolder(w) // privileges.go
			return
		}
	}
	f, err := os.Open(filepath.Join(dir, filepath.FromSlash(rel)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.IsDir() {
		http.NotFound(w, r)
		return
	}
	cw := &countingWriter{ResponseWriter: w, lab: l, rel: rel, limit: -1, pace: l.link.request(),
		leave: leave}
	if fault != nil && fault.Kind == "reset" {
		cw.limit = fault.AfterBytes
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(cw, r, "", st.ModTime(), f)
}

// folderAuth accepts a live SOAP session cookie or Basic auth with the lab's credentials.
func (l *Lab) folderAuth(r *http.Request) bool {
	if u, p, ok := r.BasicAuth(); ok {
		return u == l.user && p == l.password
	}
	c, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	return l.sessionValid(c.Value)
}

var errReset = errors.New("injected connection reset")

// countingWriter counts body bytes sent and, for the "reset" fault, aborts the connection
// after limit bytes of the body: the client gets the headers and a short body.
type countingWriter struct {
	http.ResponseWriter
	lab   *Lab
	rel   string
	limit int64 // -1: no reset
	sent  int64
	dead  bool
	error bool // status >= 300: error bodies are not data, not counted
	pace  *pacer
	leave func() // the read gauge's exit, before the body's last bytes (concurrency.go)
}

func (c *countingWriter) WriteHeader(status int) {
	c.error = status >= 300
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) count(n int) {
	if !c.error {
		c.lab.counters.folderBytes(c.rel, int64(n))
	}
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.dead {
		return 0, errReset
	}
	if c.limit >= 0 && c.sent+int64(len(p)) > c.limit {
		n, _ := c.ResponseWriter.Write(p[:c.limit-c.sent])
		c.sent += int64(n)
		c.count(n)
		c.abort()
		return n, errReset
	}
	if !c.error {
		c.pace.wait(int64(len(p)))
	}
	if c.leave != nil && c.lastWrite(len(p)) {
		c.leave()
	}
	n, err := c.ResponseWriter.Write(p)
	c.sent += int64(n)
	c.count(n)
	return n, err
}

// abort flushes what was written so far and closes the TCP connection under the server.
func (c *countingWriter) abort() {
	c.dead = true
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	hj, ok := c.ResponseWriter.(http.Hijacker)
	if !ok {
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	_ = buf.Flush()
	_ = conn.Close()
}
