package main

import (
	"crypto/rand"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// cbtState is the Changed Block Tracking state of one disk.
//
// A change ID is "<epoch>/<seq>": the epoch (16 hex pairs, VMware's UUID layout) changes
// whenever tracking is (re)started, so IDs from an earlier epoch are refused. seq counts
// generations: guest writes are recorded in generation 'cur', and change ID "<epoch>/N"
// names the state that contains every generation below N. A snapshot closes the current
// generation (cur++) and carries "<epoch>/cur"; the changes between two IDs A and B are
// the union of the generations in [A, B).
type cbtState struct {
	active bool
	epoch  string
	cur    int64
	gens   map[int64]*extentSet
}

// start begins a fresh epoch, forgetting every earlier change.
func (c *cbtState) start() {
	c.active = true
	c.epoch = newVMwareUUID()
	c.cur = 1
	c.gens = map[int64]*extentSet{}
}

func (c *cbtState) stop() {
	*c = cbtState{}
}

func (c *cbtState) record(start, end int64) {
	if !c.active {
		return
	}
	g := c.gens[c.cur]
	if g == nil {
		g = &extentSet{}
		c.gens[c.cur] = g
	}
	g.add(start, end)
}

// changeID is the ID of the live disk, "" while tracking is not active.
func (c *cbtState) changeID() string {
	if !c.active {
		return ""
	}
	return fmt.Sprintf("%s/%d", c.epoch, c.cur)
}

// closeGeneration is called at snapshot time; it returns the snapshot's change ID.
func (c *cbtState) closeGeneration() string {
	if !c.active {
		return ""
	}
	c.cur++
	return c.changeID()
}

// changedSince returns the bytes written in generations [from, to).
func (c *cbtState) changedSince(from, to int64) *extentSet {
	s := &extentSet{}
	for g := from; g < to; g++ {
		if e := c.gens[g]; e != nil {
			s.addSet(e)
		}
	}
	return s
}

var changeIDRe = regexp.MustCompile(`^((?:[0-9a-f]{2} ){7}[0-9a-f]{2}-(?:[0-9a-f]{2} ){7}[0-9a-f]{2})/([0-9]+)$`)

// parseChangeID splits a change ID into epoch and sequence number.
func parseChangeID(id string) (string, int64, bool) {
	m := changeIDRe.FindStringSubmatch(id)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return m[1], n, true
}

// newVMwareUUID renders 16 random bytes the way VMware prints disk and CBT UUIDs:
// "52 de c0 d9 3e 4d 58 a8-62 9a 1c 61 7e 2b 83 58".
func newVMwareUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	parts := make([]string, 16)
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02x", x)
	}
	return strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
}
