package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vmware/govmomi/vim25/types"
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
	// extent is what the base descriptor's extent line claims ("" = a VMFS flat file);
	// other values make the descriptor say SESPARSE, an RDM, vsan:// or vvol:// while the
	// lab keeps serving the data file, so clients can be tested on what they refuse.
	extent string
	keyID  *types.CryptoKeyId // set: the disk is encrypted (backing.keyId)
	// ds is the datastore holding the disk's files (not always the VM's home datastore),
	// root its directory.
	ds    string
	dsRef types.ManagedObjectReference
	root  string
	// multiWriter: backing.sharing is "sharingMultiWriter"
	multiWriter bool
}

// path is a layer file's datastore path as vSphere prints it: "[ds] vm/vm.vmdk".
func (d *disk) path(rel string) string { return fmt.Sprintf("[%s] %s", d.ds, rel) }

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

// extentKinds maps a disk spec's "extent" to the createType and extent line ESXi writes for
// such a disk ("%s" is the data file's base name, "%d" the capacity in sectors).
var extentKinds = map[string][2]string{
	"":                   {"vmfs", `RW %d VMFS "%s"`},
	"SESPARSE":           {"seSparse", `RW %d SESPARSE "%s"`},
	"VMFSSPARSE":         {"vmfsSparse", `RW %d VMFSSPARSE "%s"`},
	"VMFSRDM":            {"vmfsRawDeviceMap", `RW %d VMFSRDM "%s"`},
	"VMFSPASSTHROUGHRDM": {"vmfsPassthroughRawDeviceMap", `RW %d VMFSPASSTHROUGHRDM "%s"`},
	"vsan":               {"vmfs", `RW %d VMFS "vsan://52b1c2d3e4f5a6b7-%.0s8c9d0e1f2a3b4c5d"`},
	"vvol":               {"vmfs", `RW %d VMFS "vvol://rfc4122.4d6f0a1c-lab0-4000-8000-000000000001/naa.6000%.0s1"`},
}

// cid is a layer's content ID as descriptors print it (8 hex digits), stable per file name.
func cid(desc string) string {
	h := fnv.New32a()
	h.Write([]byte(desc))
	return fmt.Sprintf("%08x", h.Sum32()|1)
}

// descriptor renders the VMDK text descriptor of chain[idx] as ESXi writes it on VMFS: a
// base disk's extent is its flat file ("RW <sectors> VMFS "name-flat.vmdk""), a delta's its
// sparse file with the parent's CID and file name. The lab itself never parses it back.
func descriptor(d *disk, idx int) string {
	l := d.chain[idx]
	var b strings.Builder
	b.WriteString("# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n")
	fmt.Fprintf(&b, "CID=%s\n", cid(l.desc))
	sectors := d.capacity / 512
	if idx == 0 {
		kind := extentKinds[d.extent]
		fmt.Fprintf(&b, "parentCID=ffffffff\ncreateType=\"%s\"\n\n# Extent description\n", kind[0])
		fmt.Fprintf(&b, kind[1]+"\n", sectors, filepath.Base(l.data))
	} else {
		parent := d.chain[idx-1]
		fmt.Fprintf(&b, "parentCID=%s\ncreateType=\"vmfsSparse\"\nparentFileNameHint=\"%s\"\n\n",
			cid(parent.desc), filepath.Base(parent.desc))
		fmt.Fprintf(&b, "# Extent description\nRW %d VMFSSPARSE \"%s\"\n", sectors, filepath.Base(l.data))
	}
	if d.keyID != nil {
		fmt.Fprintf(&b, "\n# The Disk Data Base\n#DDB\n\nencryption.keySafe = \"vmware:key/list/(pair/(fqid/<VMWARE-NULL>/%s/%s,HMAC-SHA-256,lab))\"\n",
			d.keyID.ProviderId.Id, d.keyID.KeyId)
		b.WriteString("encryption.data = \"lab-ciphertext-header\"\n")
	} else {
		b.WriteString("\n# The Disk Data Base\n#DDB\n\n")
	}
	cylinders := sectors / (255 * 63)
	if cylinders > 65535 {
		cylinders = 65535
	}
	fmt.Fprintf(&b, "ddb.adapterType = \"lsilogic\"\nddb.deletable = \"true\"\n")
	fmt.Fprintf(&b, "ddb.geometry.cylinders = \"%d\"\nddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n", cylinders)
	fmt.Fprintf(&b, "ddb.longContentID = \"%s%s%s%s\"\n", cid(l.desc), cid(l.data), cid(d.uuid), cid(d.stem))
	if idx == 0 && d.kind == "thin" {
		b.WriteString("ddb.thinProvisioned = \"1\"\n")
	}
	fmt.Fprintf(&b, "ddb.uuid = \"%s\"\nddb.virtualHWVersion = \"13\"\n", d.uuid)
	return b.String()
}

// writeDescriptors (re)writes the descriptor of every layer: after creation, a snapshot, a
// consolidation (a delta's parent changed) and a resize (the extent's sector count).
func (d *disk) writeDescriptors(root string) error {
	for i, l := range d.chain {
		if err := os.WriteFile(filepath.Join(root, l.desc), []byte(descriptor(d, i)), 0o644); err != nil {
			return err
		}
	}
	return nil
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
	d.chain = append(d.chain, l)
	return frozen, d.writeDescriptors(root)
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
	return src, d.writeDescriptors(root)
}

// grow extends every layer file of the disk to the new capacity; the descriptors' extent
// lines then say the new size, as after ESXi extends a disk.
func (d *disk) grow(root string, capacity int64) error {
	for _, l := range d.chain {
		if err := l.f.Truncate(capacity); err != nil {
			return err
		}
	}
	d.capacity = capacity
	return d.writeDescriptors(root)
}

// close releases the files of every layer and removes them.
func (d *disk) remove(root string) {
	for _, l := range d.chain {
		l.f.Close()
		os.Remove(filepath.Join(root, l.data))
		os.Remove(filepath.Join(root, l.desc))
	}
}
