package main

import (
	"crypto/sha256"
	"os"
	"path"
	"path/filepath"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
)

// nvramSize is the size of the BIOS NVRAM file ESXi writes beside the .vmx at first power-on.
const nvramSize = 8684

// writeNVRAM fills the VM's NVRAM file (<vmx dir>/<name>.nvram, which vcsim creates empty)
// with bytes of the size and magic ("MRVN") of a real one, derived from the VM's name, so
// that a backup that saves it and a restore that puts it back can be checked byte for byte.
func (l *Lab) writeNVRAM(sv *simulator.VirtualMachine) error {
	var p object.DatastorePath
	p.FromString(sv.Config.Files.VmPathName)
	rel := path.Join(path.Dir(p.Path), sv.Name+".nvram")
	data := make([]byte, 0, nvramSize+sha256.Size)
	data = append(data, "MRVN"...)
	seed := sha256.Sum256([]byte("lab-nvram " + sv.Name))
	for len(data) < nvramSize {
		data = append(data, seed[:]...)
		seed = sha256.Sum256(seed[:])
	}
	dir := l.datastorePath("")
	if info, ok := l.datastores[p.Datastore]; ok { // the VM's home datastore, wherever it is
		dir = info.dir
	}
	return os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), data[:nvramSize], 0o644)
}
