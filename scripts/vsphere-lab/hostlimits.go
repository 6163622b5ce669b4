package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// hostLimits are the /folder refusals of a loaded host (docs/lab.md, "Host limits"):
//
//   - a host serves so many datastore transfers at once; beyond folderMaxRequests
//     (config, 0 = unlimited) concurrent GETs it answers 503 Service Unavailable;
//   - while another tool holds a disk open (an NFC reader, a backup appliance's HotAdd),
//     reading its files answers 500 Internal Server Error with a lock message, for as
//     long as the lock is held (POST /lab/vms/{name}/disks/{key}/lock {"seconds": N}).
type hostLimits struct {
	active atomic.Int64 // /folder GETs in flight
	max    atomic.Int64

	mu     sync.Mutex
	locked map[string]time.Time // datastore directory + "/" + file -> held until
}

// enter counts a GET in; false when the host is at its limit (the caller answers 503 and
// must not call leave).
func (h *hostLimits) enter() bool {
	n := h.active.Add(1)
	if max := h.max.Load(); max > 0 && n > max {
		h.active.Add(-1)
		return false
	}
	return true
}

func (h *hostLimits) leave() { h.active.Add(-1) }

// lock holds every file of d (each layer's descriptor and data) for the given time.
func (h *hostLimits) lock(d *disk, hold time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.locked == nil {
		h.locked = map[string]time.Time{}
	}
	until := time.Now().Add(hold)
	for _, ly := range d.chain {
		h.locked[d.root+"/"+ly.desc] = until
		h.locked[d.root+"/"+ly.data] = until
	}
}

func (h *hostLimits) isLocked(dir, rel string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	until, ok := h.locked[dir+"/"+rel]
	if ok && time.Now().After(until) {
		delete(h.locked, dir+"/"+rel)
		return false
	}
	return ok
}

// refuse answers a /folder GET the host cannot serve now; true if it did. A caller that
// gets false must call leave when done.
func (h *hostLimits) refuse(w http.ResponseWriter, dir, rel string) bool {
	if h.isLocked(dir, rel) {
		http.Error(w, "Failed to lock the file: it is opened by another reader (NFC)",
			http.StatusInternalServerError)
		return true
	}
	if !h.enter() {
		http.Error(w, "Service Unavailable: too many concurrent datastore transfers",
			http.StatusServiceUnavailable)
		return true
	}
	return false
}
