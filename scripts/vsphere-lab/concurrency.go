package main

import (
	"strconv"
	"strings"
	"sync"
)

// readGauge counts /folder reads in flight, now and at most since the last reset, per ESXi
// host of the VM whose file is read (the host a real /folder or NFC read would load), and
// over all hosts. Real hosts throttle and refuse concurrent NFC/HTTP streams per host, so a
// worker must cap its reads per host across every VM of a job: this is how tests see it.
type readGauge struct {
	mu   sync.Mutex
	now  map[string]int
	peak map[string]int
}

// enter counts one read on host (and on "*", all hosts) until the returned func is first
// called (later calls do nothing). The /folder handler calls it before it writes the last
// bytes of the body: a client cannot have the whole reply, and start its next read, while
// this one is still counted.
func (g *readGauge) enter(host string) func() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.now == nil {
		g.now, g.peak = map[string]int{}, map[string]int{}
	}
	for _, k := range []string{host, "*"} {
		g.now[k]++
		if g.now[k] > g.peak[k] {
			g.peak[k] = g.now[k]
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.now[host]--
			g.now["*"]--
		})
	}
}

// snapshot: {"peak": {host: n, "*": n}, "now": {...}}.
func (g *readGauge) snapshot() map[string]map[string]int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := map[string]map[string]int{"peak": {}, "now": {}}
	for k, v := range g.peak {
		out["peak"][k] = v
	}
	for k, v := range g.now {
		out["now"][k] = v
	}
	return out
}

// reset forgets the peaks (reads in flight stay counted).
func (g *readGauge) reset() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.peak = map[string]int{}
	for k, v := range g.now {
		g.peak[k] = v
	}
}

// folderHost is the MoRef of the host running the VM whose directory holds rel ("" when the
// file is no lab VM's).
func (l *Lab) folderHost(rel string) string {
	name, _, _ := strings.Cut(rel, "/")
	l.mu.Lock()
	defer l.mu.Unlock()
	vm := l.vm(name)
	if vm == nil {
		return ""
	}
	sv := l.simVM(vm)
	if sv == nil || sv.Runtime.Host == nil {
		return ""
	}
	return sv.Runtime.Host.Value
}

// lastWrite: whether writing n more bytes completes the body (its Content-Length).
func (c *countingWriter) lastWrite(n int) bool {
	length, err := strconv.ParseInt(c.Header().Get("Content-Length"), 10, 64)
	return err == nil && c.sent+int64(n) >= length
}
