package main

import (
	"sync"
	"time"
)

// throttle limits /folder bodies like a real host: a rate per request (a keep-alive
// connection carries one request at a time, so this is the per-connection rate) and a rate
// for all transfers together (the host's link). Both are virtual clocks: a write of n bytes
// books n/rate seconds after the clock's previous booking (or now, if that lies in the
// past), and the writer sleeps until the later of its two bookings ends.
type throttle struct {
	mu      sync.Mutex
	perConn int64 // bytes/s, 0 = unlimited
	total   int64
	link    time.Time // when the shared link is free again
}

func (t *throttle) set(perConn, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.perConn, t.total = perConn, total
}

// request returns the pacer of one /folder response.
func (t *throttle) request() *pacer { return &pacer{t: t} }

type pacer struct {
	t    *throttle
	next time.Time // when this request's own budget is free again
}

// burst is how far behind a clock may fall: idle time is not saved up beyond this.
const burst = 10 * time.Millisecond

func book(clock *time.Time, now time.Time, n, rate int64) time.Time {
	if clock.Before(now.Add(-burst)) {
		*clock = now.Add(-burst)
	}
	*clock = clock.Add(time.Duration(n * int64(time.Second) / rate))
	return *clock
}

// wait blocks until n more body bytes may be sent.
func (p *pacer) wait(n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.t.mu.Lock()
	perConn, total := p.t.perConn, p.t.total
	now := time.Now()
	until := now
	if total > 0 {
		until = book(&p.t.link, now, n, total)
	}
	p.t.mu.Unlock()
	if perConn > 0 {
		if own := book(&p.next, now, n, perConn); own.After(until) {
			until = own
		}
	}
	if d := time.Until(until); d > 0 {
		time.Sleep(d)
	}
}
