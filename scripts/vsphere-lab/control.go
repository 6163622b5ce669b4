package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// serveControl is the lab's own JSON API under /lab/ (documented in docs/lab.md). Every
// call that touches VM state holds the lab lock, like SOAP calls do.
func (l *Lab) serveControl(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(strings.TrimPrefix(r.URL.Path, "/lab"), "/"), "/")
	route := r.Method + " " + parts[0]
	switch {
	case route == "GET config":
		l.mu.Lock()
		defer l.mu.Unlock()
		writeJSON(w, 200, l.cfg)
	case route == "PUT config":
		l.mu.Lock()
		defer l.mu.Unlock()
		c := l.cfg
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil {
			httpErr(w, 400, err)
			return
		}
		if c.Granularity < 512 || c.Granularity%512 != 0 || c.MaxAreasPerReply < 1 {
			httpErr(w, 400, fmt.Errorf("granularity must be a multiple of 512, maxAreasPerReply >= 1"))
			return
		}
		if c.FolderConnectionBps < 0 || c.FolderTotalBps < 0 {
			httpErr(w, 400, fmt.Errorf("folderConnectionBps and folderTotalBps must be >= 0"))
			return
		}
		if c.FolderMaxRequests < 0 {
			httpErr(w, 400, fmt.Errorf("folderMaxRequests must be >= 0"))
			return
		}
		l.cfg = c
		l.link.set(c.FolderConnectionBps, c.FolderTotalBps)
		l.limits.max.Store(c.FolderMaxRequests)
		writeJSON(w, 200, l.cfg)
	case route == "POST faults":
		var f faultRule
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			httpErr(w, 400, err)
			return
		}
		id, err := l.faults.add(f)
		if err != nil {
			httpErr(w, 400, err)
			return
		}
		writeJSON(w, 200, map[string]string{"id": id})
	case route == "GET faults":
		writeJSON(w, 200, l.faults.list())
	case route == "DELETE faults":
		l.faults.clear()
		writeJSON(w, 200, map[string]bool{"ok": true})
	case route == "GET counters":
		writeJSON(w, 200, l.counters.snapshot())
	case route == "GET reads":
		writeJSON(w, 200, l.reads.snapshot())
	case route == "DELETE counters":
		l.reads.reset()
		l.counters.reset()
		writeJSON(w, 200, map[string]bool{"ok": true})
	case parts[0] == "vms":
		l.mu.Lock()
		defer l.mu.Unlock()
		l.serveVMs(w, r, parts[1:])
	default:
		httpErr(w, 404, fmt.Errorf("no such lab call: %s %s", r.Method, r.URL.Path))
	}
}

func (l *Lab) serveVMs(w http.ResponseWriter, r *http.Request, parts []string) {
	if len(parts) == 0 || parts[0] == "" {
		switch r.Method {
		case http.MethodPost:
			var spec vmSpec
			if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
				httpErr(w, 400, err)
				return
			}
			vm, err := l.createVM(spec)
			if err != nil {
				httpErr(w, 400, err)
				return
			}
			writeJSON(w, 200, l.vmJSON(vm))
		case http.MethodGet:
			names := []string{}
			for n := range l.vms {
				names = append(names, n)
			}
			writeJSON(w, 200, names)
		default:
			httpErr(w, 405, fmt.Errorf("method not allowed"))
		}
		return
	}
	l.reconcileAll() // pick up anything vcsim did since (e.g. a VM destroyed over SOAP)
	vm := l.vm(parts[0])
	if vm == nil {
		httpErr(w, 404, fmt.Errorf("no lab VM %q", parts[0]))
		return
	}
	rest := parts[1:]
	switch {
	case len(rest) == 0 && r.Method == http.MethodGet:
		writeJSON(w, 200, l.vmJSON(vm))
	case len(rest) == 0 && r.Method == http.MethodDelete:
		if err := l.destroyVM(vm); err != nil {
			httpErr(w, 500, err)
			return
		}
		writeJSON(w, 200, map[string]bool{"ok": true})
	case len(rest) == 1 && rest[0] == "snapshots" && r.Method == http.MethodGet:
		writeJSON(w, 200, l.snapshotsJSON(vm))
	case len(rest) == 1 && rest[0] == "snapshot-history" && r.Method == http.MethodGet:
		writeJSON(w, 200, l.historyJSON(vm))
	case len(rest) >= 2 && rest[0] == "disks":
		key, err := strconv.Atoi(rest[1])
		d := vm.disk(int32(key))
		if err != nil || d == nil {
			httpErr(w, 404, fmt.Errorf("no disk %q", rest[1]))
			return
		}
		l.serveDisk(w, r, vm, d, rest[2:])
	default:
		httpErr(w, 404, fmt.Errorf("no such lab call: %s %s", r.Method, r.URL.Path))
	}
}

func (l *Lab) serveDisk(w http.ResponseWriter, r *http.Request, vm *labVM, d *disk, rest []string) {
	q := r.URL.Query()
	op := r.Method + " " + strings.Join(rest, "/")
	switch op {
	case "PUT ":
		off, err := strconv.ParseInt(q.Get("offset"), 10, 64)
		if err != nil {
			httpErr(w, 400, fmt.Errorf("offset: %v", err))
			return
		}
		data, err := io.ReadAll(r.Body)
		if err != nil {
			httpErr(w, 400, err)
			return
		}
		// untracked=true is the lossy-CBT fault: the guest's bytes land on the disk (and in
		// its allocation map, so "*" still sees them) but CBT does not record the change,
		// as with the ESXi bugs of VMware KB 2090639 and KB 2136854.
		tracked := q.Get("untracked") != "true"
		if err := d.writeTracked(off, data, tracked); err != nil {
			httpErr(w, 400, err)
			return
		}
		writeJSON(w, 200, map[string]int64{"offset": off, "length": int64(len(data))})
	case "POST lock":
		var req struct {
			Seconds float64 `json:"seconds"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Seconds < 0 {
			httpErr(w, 400, fmt.Errorf("want {\"seconds\": N >= 0}"))
			return
		}
		l.limits.lock(d, time.Duration(req.Seconds*float64(time.Second)))
		writeJSON(w, 200, map[string]float64{"seconds": req.Seconds})
	case "GET ":
		off, err1 := strconv.ParseInt(q.Get("offset"), 10, 64)
		n, err2 := strconv.ParseInt(q.Get("length"), 10, 64)
		if err1 != nil || err2 != nil || off < 0 || n < 0 || off+n > d.capacity || n > 256<<20 {
			httpErr(w, 400, fmt.Errorf("need 0 <= offset, offset+length <= capacity, length <= 256 MiB"))
			return
		}
		buf := make([]byte, n)
		if err := d.readView(len(d.chain)-1, buf, off); err != nil {
			httpErr(w, 500, err)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(buf)
	case "GET sha256":
		writeJSON(w, 200, map[string]interface{}{"sha256": d.viewSHA256(len(d.chain) - 1), "size": d.capacity})
	case "POST load":
		var req struct {
			Path   string `json:"path"`
			Offset int64  `json:"offset"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			httpErr(w, 400, err)
			return
		}
		n, err := loadSparse(d, req.Path, req.Offset)
		if err != nil {
			httpErr(w, 400, err)
			return
		}
		writeJSON(w, 200, map[string]int64{"written": n})
	case "POST cbt-reset":
		if d.cbt.active {
			d.cbt.start()
		}
		l.applyBackings(vm, l.simVM(vm))
		writeJSON(w, 200, l.vmJSON(vm))
	case "POST resize":
		var req struct {
			Capacity int64 `json:"capacity"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			httpErr(w, 400, err)
			return
		}
		if req.Capacity < d.capacity || req.Capacity%512 != 0 {
			httpErr(w, 400, fmt.Errorf("capacity can only grow, in multiples of 512"))
			return
		}
		if err := d.grow(d.root, req.Capacity); err != nil {
			httpErr(w, 500, err)
			return
		}
		if d.cbt.active {
			d.cbt.start() // we treat a resize as a tracking reset
		}
		l.applyBackings(vm, l.simVM(vm))
		writeJSON(w, 200, l.vmJSON(vm))
	default:
		httpErr(w, 404, fmt.Errorf("no such disk call: %s", op))
	}
}

const (
	seekData = 3 // SEEK_DATA on Linux
	seekHole = 4 // SEEK_HOLE on Linux
)

// loadSparse copies only the data regions of a local file into the disk at offset, so a
// sparse image stays thin on the datastore and in CBT's allocation map.
func loadSparse(d *disk, p string, offset int64) (int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if offset < 0 || offset+st.Size() > d.capacity {
		return 0, fmt.Errorf("file of %d bytes at offset %d does not fit the disk (%d)", st.Size(), offset, d.capacity)
	}
	buf := make([]byte, 4<<20)
	var total, pos int64
	for pos < st.Size() {
		start, err := f.Seek(pos, seekData)
		if err != nil {
			break // ENXIO: no data after pos
		}
		end, err := f.Seek(start, seekHole)
		if err != nil {
			end = st.Size()
		}
		for o := start; o < end; {
			c := end - o
			if c > int64(len(buf)) {
				c = int64(len(buf))
			}
			if _, err := f.ReadAt(buf[:c], o); err != nil && err != io.EOF {
				return total, err
			}
			if err := d.write(offset+o, buf[:c]); err != nil {
				return total, err
			}
			o += c
			total += c
		}
		pos = end
	}
	return total, nil
}

func (l *Lab) snapshotsJSON(vm *labVM) []map[string]interface{} {
	out := []map[string]interface{}{}
	for _, s := range vm.snaps {
		disks := []map[string]interface{}{}
		for _, d := range vm.disks {
			idx := d.layerIndex(s.frozen[d.key])
			if idx < 0 {
				continue
			}
			disks = append(disks, map[string]interface{}{
				"key":      d.key,
				"file":     d.path(d.chain[idx].desc),
				"changeId": nullable(s.changeIDs[d.key]),
				"parent":   idx > 0,
			})
		}
		out = append(out, map[string]interface{}{
			"name": s.name, "description": s.desc, "moref": s.ref.Value,
			"createTime": s.created.UTC().Format(time.RFC3339Nano), "disks": disks,
		})
	}
	return out
}

func (l *Lab) historyJSON(vm *labVM) []map[string]interface{} {
	out := []map[string]interface{}{}
	for _, s := range vm.history {
		disks := []map[string]interface{}{}
		for _, d := range vm.disks {
			if _, ok := s.frozen[d.key]; !ok {
				continue
			}
			disks = append(disks, map[string]interface{}{
				"key": d.key, "changeId": nullable(s.changeIDs[d.key]), "sha256": s.digests[d.key],
			})
		}
		out = append(out, map[string]interface{}{
			"name": s.name, "description": s.desc, "moref": s.ref.Value,
			"created": s.created.UTC().Format(time.RFC3339Nano), "removed": s.removed, "disks": disks,
		})
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func httpErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
