package main

import (
	"fmt"
	"math/rand"
	"strings"
	"sync"
	"time"
)

// faultRule is one injected fault. It fires on requests of its target ("folder" or "soap")
// whose /folder path or SOAP method contains Match, either Count times or with probability
// Rate on each request.
type faultRule struct {
	ID         string  `json:"id"`
	Target     string  `json:"target"`
	Kind       string  `json:"kind"`
	Count      *int    `json:"count,omitempty"`
	Rate       float64 `json:"rate,omitempty"`
	Match      string  `json:"match,omitempty"`
	DelayMs    int     `json:"delayMs,omitempty"`
	AfterBytes int64   `json:"afterBytes,omitempty"`
	Remaining  *int    `json:"remaining,omitempty"`
	Fired      int     `json:"fired"`
}

var faultKinds = map[string]map[string]bool{
	"folder": {"status503": true, "status500": true, "reset": true, "delay": true},
	"soap":   {"sessionExpire": true, "snapshotCreateFail": true, "taskInProgress": true, "fileFault": true, "delay": true},
}

// faultSet has its own lock: /folder transfers do not take the lab lock.
type faultSet struct {
	mu    sync.Mutex
	rules []*faultRule
	next  int
	rnd   *rand.Rand
}

func (f *faultSet) add(r faultRule) (string, error) {
	kinds, ok := faultKinds[r.Target]
	if !ok {
		return "", fmt.Errorf("target must be folder or soap")
	}
	if !kinds[r.Kind] {
		return "", fmt.Errorf("unknown %s fault kind %q", r.Target, r.Kind)
	}
	if r.Rate < 0 || r.Rate > 1 {
		return "", fmt.Errorf("rate must be within 0..1")
	}
	if r.Count == nil && r.Rate == 0 {
		one := 1
		r.Count = &one
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	r.ID = fmt.Sprintf("f%d", f.next)
	if r.Count != nil {
		n := *r.Count
		r.Remaining = &n
	}
	f.rules = append(f.rules, &r)
	return r.ID, nil
}

// match returns a copy of the first rule that fires for this request, nil if none does.
func (f *faultSet) match(target, name string) *faultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rnd == nil {
		f.rnd = rand.New(rand.NewSource(time.Now().UnixNano()))
	}
	for _, r := range f.rules {
		if r.Target != target || !strings.Contains(name, r.Match) {
			continue
		}
		if r.Remaining != nil {
			if *r.Remaining <= 0 {
				continue
			}
			*r.Remaining--
		} else if f.rnd.Float64() >= r.Rate {
			continue
		}
		r.Fired++
		c := *r
		return &c
	}
	return nil
}

func (f *faultSet) list() []faultRule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]faultRule, 0, len(f.rules))
	for _, r := range f.rules {
		c := *r
		if r.Remaining != nil {
			n := *r.Remaining
			c.Remaining = &n
		}
		out = append(out, c)
	}
	return out
}

func (f *faultSet) clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

func sleepMs(ms int) {
	if ms > 0 {
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
}

// counters count SOAP calls by method and /folder requests and body bytes by path.
type counters struct {
	mu     sync.Mutex
	soapN  map[string]int
	folder map[string]*folderCount
}

type folderCount struct {
	Requests int   `json:"requests"`
	Bytes    int64 `json:"bytes"`
}

func (c *counters) soap(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.soapN == nil {
		c.soapN = map[string]int{}
	}
	c.soapN[method]++
}

func (c *counters) folderRequest(p string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entry(p).Requests++
}

func (c *counters) folderBytes(p string, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entry(p).Bytes += n
}

func (c *counters) entry(p string) *folderCount {
	if c.folder == nil {
		c.folder = map[string]*folderCount{}
	}
	e := c.folder[p]
	if e == nil {
		e = &folderCount{}
		c.folder[p] = e
	}
	return e
}

func (c *counters) snapshot() map[string]interface{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	soap := map[string]int{}
	for k, v := range c.soapN {
		soap[k] = v
	}
	folder := map[string]folderCount{}
	for k, v := range c.folder {
		folder[k] = *v
	}
	return map[string]interface{}{"soap": soap, "folder": folder}
}

func (c *counters) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.soapN = nil
	c.folder = nil
}
