package main

import (
	"fmt"
	"net/http"
	"strings"
)

// serveLayers answers GET /lab/layers?file=[ds] path.vmdk with the chain of layers under
// that descriptor, base first, each with its data file and the extents written while it was
// the top of the chain:
//
//	{"capacity": N, "layers": [{"desc": "vm/vm.vmdk", "data": "vm/vm-flat.vmdk",
//	  "written": [[start, end], ...]}, ...]}
//
// A real host keeps this in the delta files themselves (the grain directory of a
// vmfsSparse or seSparse file) and VDDK reads it there; the lab's delta files are plain
// sparse files, so scripts/vddk-standin asks here to apply the layers in order and to
// answer NBD block status as VDDK's QueryAllocatedBlocks would. It takes the /folder
// credentials (session cookie or Basic auth), as the datastore files do.
func (l *Lab) serveLayers(w http.ResponseWriter, r *http.Request) {
	if !l.folderAuth(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="VMware HTTP server"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	file := r.URL.Query().Get("file")
	prefix := fmt.Sprintf("[%s] ", l.dsName)
	if !strings.HasPrefix(file, prefix) {
		httpErr(w, 404, fmt.Errorf("file %q is not on datastore %s", file, l.dsName))
		return
	}
	desc := strings.TrimPrefix(file, prefix)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, vm := range l.vms {
		for _, d := range vm.disks {
			for idx, layer := range d.chain {
				if layer.desc != desc {
					continue
				}
				out := []map[string]interface{}{}
				for _, below := range d.chain[:idx+1] {
					written := [][2]int64{}
					for _, e := range below.written.ext {
						written = append(written, [2]int64{e.start, e.end})
					}
					out = append(out, map[string]interface{}{
						"desc": below.desc, "data": below.data, "written": written})
				}
				writeJSON(w, 200, map[string]interface{}{"capacity": d.capacity, "layers": out})
				return
			}
		}
	}
	httpErr(w, 404, fmt.Errorf("no disk layer has descriptor %q", file))
}
