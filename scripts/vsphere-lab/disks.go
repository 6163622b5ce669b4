package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// layer is one link of a disk's chain, as ESXi keeps it on VMFS: a descriptor file and a data
// file. The data file is a sparse file of the disk's full capacity in which only the extents
// written while this layer was the top of the chain hold data; 'written' lists them. Reading
// a view of the disk walks the chain from its top down, so a frozen layer (one a snapshot
// points at) never changes while the guest keeps writing into the layer above it.
type layer struct {
	desc    string // datastore-relative descriptor, e.g. "vm1/vm1-000001.vmdk"
	data    string // datastore-relative data file, e.g. "vm1/vm1-000001-delta.vmdk"
	f       *os.File
	written *extentSet
}

// disk is one virtual disk of a lab VM: its chain of layers (base first, live top last) and
// its CBT state.
type disk struct {
	key      int32
	stem     string // "vm1/vm1" or "vm1/vm1_1": names of the base and delta files derive from it
	capacity int64
	kind     string // "thin" or "eagerZeroedThick"
	uuid     string
	chain    []*layer
	deltas   int // delta files created so far, numbers the next one (vm1-000001, ...)
	cbt      cbtState
}

const zeroBufSize = 1 << 20

var zeroBuf = make([]byte, zeroBufSize)

func (d *disk) top() *layer { return d.chain[len(d.chain)-1] }

// openLayer creates (or opens) the data file of a layer and sizes it to the capacity; a
// truncate only sets the size, so the file stays sparse.
func openLayer(root, desc, data string, capacity int64, descText string) (*layer, error) {
	p := filepath.Join(root, data)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.Truncate(capacity); err != nil {
		f.Close()
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, desc), []byte(descText), 0o644); err != nil {
		f.Close()
		return nil, err
	}
	return &layer{desc: desc, data: data, f: f, written: &extentSet{}}, nil
}

// descriptor renders a minimal VMDK text descriptor, enough for a human poking at the
// datastore to see what a file is; nothing in the lab parses it back.
func descriptor(d *disk, dataFile, parentDesc string) string {
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n")
	if parentDesc == "" {
		b.WriteString("parentCID=ffffffff\ncreateType=\"vmfs\"\n\n")
		fmt.Fprintf(&b, "RW %d VMFS \"%s\"\n", d.capacity/512, filepath.Base(dataFile))
	} else {
		fmt.Fprintf(&b, "parentCID=fffffffe\nparentFileNameHint=\"%s\"\ncreateType=\"vmfsSparse\"\n\n",
			filepath.Base(parentDesc))
		fmt.Fprintf(&b, "RW %d VMFSSPARSE \"%s\"\n", d.capacity/512, filepath.Base(dataFile))
	}
	fmt.Fprintf(&b, "\nddb.uuid = \"%s\"\nddb.thinProvisioned = \"%d\"\n", d.uuid, boolInt(d.kind == "thin"))
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// write stores data at off in the live top layer and records it for allocation and CBT.
func (d *disk) write(off int64, data []byte) error { return d.writeTracked(off, data, true) }

// writeTracked is a guest write; tracked=false leaves CBT unaware of it (lossy CBT).
func (d *disk) writeTracked(off int64, data []byte, tracked bool) error {
	if off < 0 || off+int64(len(data)) > d.capacity {
		return fmt.Errorf("write [%d, %d) past capacity %d", off, off+int64(len(data)), d.capacity)
	}
	if len(data) == 0 {
		return nil
	}
	t := d.top()
	if _, err := t.f.WriteAt(data, off); err != nil {
		return err
	}
	t.written.add(off, off+int64(len(data)))
	if tracked {
		d.cbt.record(off, off+int64(len(data)))
	}
	return nil
}

// readView reads [off, off+len(buf)) of the view whose top is chain[topIdx]: each byte comes
// from the highest layer at or below topIdx that wrote it, zero if none did.
func (d *disk) readView(topIdx int, buf []byte, off int64) error {
	for i := range buf {
		buf[i] = 0
	}
	end := off + int64(len(buf))
	covered := &extentSet{}
	for li := topIdx; li >= 0; li-- {
		l := d.chain[li]
		for _, e := range l.written.clip(off, end) {
			// Only the parts of e that no higher layer already supplied.
			cur := e.start
			for _, c := range covered.clip(e.start, e.end) {
				if c.start > cur {
					if err := readAt(l.f, buf[cur-off:c.start-off], cur); err != nil {
						return err
					}
				}
				cur = c.end
			}
			if cur < e.end {
				if err := readAt(l.f, buf[cur-off:e.end-off], cur); err != nil {
					return err
				}
			}
			covered.add(e.start, e.end)
		}
	}
	return nil
}

func readAt(f *os.File, b []byte, off int64) error {
	_, err := f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return err
}

// allocated is the union of what the layers up to topIdx wrote: what "*" reports for thin
// disks (ESXi reports allocated grains of the snapshot's view).
func (d *disk) allocated(topIdx int) *extentSet {
	s := &extentSet{}
	for li := 0; li <= topIdx; li++ {
		s.addSet(d.chain[li].written)
	}
	return s
}

// layerIndex finds l in the chain, -1 if it is not there.
func (d *disk) layerIndex(l *layer) int {
	for i, c := range d.chain {
		if c == l {
			return i
		}
	}
	return -1
}

// viewSHA256 hashes the whole view up to topIdx. Holes are hashed from the shared zero
// buffer without touching the files, so a mostly empty 64 GiB disk hashes in moments.
func (d *disk) viewSHA256(topIdx int) string {
	h := sha256.New()
	alloc := d.allocated(topIdx)
	var pos int64
	buf := make([]byte, 1<<20)
	hashZeros := func(n int64) {
		for n > 0 {
			c := n
			if c > zeroBufSize {
				c = zeroBufSize
			}
			h.Write(zeroBuf[:c])
			n -= c
		}
	}
	for _, e := range alloc.ext {
		hashZeros(e.start - pos)
		for o := e.start; o < e.end; {
			c := e.end - o
			if c > int64(len(buf)) {
				c = int64(len(buf))
			}
			if err := d.readView(topIdx, buf[:c], o); err != nil {
				logf("sha256 read %s: %v", d.stem, err)
			}
			h.Write(buf[:c])
			o += c
		}
		pos = e.end
	}
	hashZeros(d.capacity - pos)
	return hex.EncodeToString(h.Sum(nil))
}

// freeze starts a new delta layer on top of the chain: the old top becomes read-only (a
// snapshot points at it) and the guest writes into the new delta from now on.
func (d *disk) freeze(root string) (*layer, error) {
	frozen := d.top()
	d.deltas++
	name := fmt.Sprintf("%s-%06d", d.stem, d.deltas)
	l, err := openLayer(root, name+".vmdk", name+"-delta.vmdk", d.capacity, "")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, l.desc),
		[]byte(descriptor(d, l.data, frozen.desc)), 0o644); err != nil {
		return nil, err
	}
	d.chain = append(d.chain, l)
	return frozen, nil
}

// consolidate merges the layer above chain[idx] into it and deletes the merged delta's
// files: what RemoveSnapshot does on ESXi for the snapshot whose frozen layer is chain[idx].
// It returns the layer that went away, so callers can repoint references to chain[idx].
func (d *disk) consolidate(root string, idx int) (*layer, error) {
	if idx+1 >= len(d.chain) {
		return nil, fmt.Errorf("no layer above %d", idx)
	}
	dst, src := d.chain[idx], d.chain[idx+1]
	buf := make([]byte, 1<<20)
	for _, e := range src.written.ext {
		for o := e.start; o < e.end; {
			c := e.end - o
			if c > int64(len(buf)) {
				c = int64(len(buf))
			}
			if err := readAt(src.f, buf[:c], o); err != nil {
				return nil, err
			}
			if _, err := dst.f.WriteAt(buf[:c], o); err != nil {
				return nil, err
			}
			o += c
		}
	}
	dst.written.addSet(src.written)
	src.f.Close()
	os.Remove(filepath.Join(root, src.data))
	os.Remove(filepath.Join(root, src.desc))
	d.chain = append(d.chain[:idx+1], d.chain[idx+2:]...)
	return src, nil
}

// grow extends every layer file of the disk to the new capacity.
func (d *disk) grow(capacity int64) error {
	for _, l := range d.chain {
		if err := l.f.Truncate(capacity); err != nil {
			return err
		}
	}
	d.capacity = capacity
	return nil
}

// close releases the files of every layer and removes them.
func (d *disk) remove(root string) {
	for _, l := range d.chain {
		l.f.Close()
		os.Remove(filepath.Join(root, l.data))
		os.Remove(filepath.Join(root, l.desc))
	}
}
