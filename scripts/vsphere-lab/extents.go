package main

import "sort"

// extent is a half-open byte range [start, end).
type extent struct {
	start, end int64
}

// extentSet is a sorted list of disjoint, non-adjacent extents. It records which bytes of a
// disk layer were written (allocation) and which bytes changed in a CBT generation.
type extentSet struct {
	ext []extent
}

// add merges [start, end) into the set, coalescing overlapping and adjacent extents so the
// set stays small however many small writes hit the same region.
func (s *extentSet) add(start, end int64) {
	if end <= start {
		return
	}
	// First extent whose end reaches start (adjacent counts: it will be merged).
	i := sort.Search(len(s.ext), func(i int) bool { return s.ext[i].end >= start })
	j := i
	for j < len(s.ext) && s.ext[j].start <= end {
		if s.ext[j].start < start {
			start = s.ext[j].start
		}
		if s.ext[j].end > end {
			end = s.ext[j].end
		}
		j++
	}
	merged := extent{start, end}
	s.ext = append(s.ext[:i], append([]extent{merged}, s.ext[j:]...)...)
}

// addSet merges every extent of o into s.
func (s *extentSet) addSet(o *extentSet) {
	for _, e := range o.ext {
		s.add(e.start, e.end)
	}
}

// clip returns the parts of the set inside [start, end), in order.
func (s *extentSet) clip(start, end int64) []extent {
	var out []extent
	i := sort.Search(len(s.ext), func(i int) bool { return s.ext[i].end > start })
	for ; i < len(s.ext) && s.ext[i].start < end; i++ {
		e := s.ext[i]
		if e.start < start {
			e.start = start
		}
		if e.end > end {
			e.end = end
		}
		out = append(out, e)
	}
	return out
}

// bytes is the number of bytes covered by the set.
func (s *extentSet) bytes() int64 {
	var n int64
	for _, e := range s.ext {
		n += e.end - e.start
	}
	return n
}

// rounded returns a copy with every extent widened to multiples of gran (clamped to limit),
// as CBT reports changes at its tracking granularity, not at write granularity.
func (s *extentSet) rounded(gran, limit int64) *extentSet {
	out := &extentSet{}
	for _, e := range s.ext {
		a := e.start / gran * gran
		b := (e.end + gran - 1) / gran * gran
		if b > limit {
			b = limit
		}
		out.add(a, b)
	}
	return out
}

// clone returns an independent copy.
func (s *extentSet) clone() *extentSet {
	return &extentSet{ext: append([]extent(nil), s.ext...)}
}
