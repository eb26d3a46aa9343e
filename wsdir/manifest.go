package wsdir

import (
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// ManifestVersion is the version of manifest.json this package writes. A
// manifest with a higher version was written by a newer microagent and is
// refused rather than misread.
const ManifestVersion = 1

// Manifest is what a workspace is: its image, pinned to a digest, and its
// resources. It is written at create (and by a start that adds secret
// declarations), atomically.
type Manifest struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	// Image is the image the workspace boots, pinned at create.
	Image ImageRef `json:"image"`
	// Resources size the VM and its writable disk.
	Resources Resources `json:"resources"`
	// Profile is the resource profile named at create ("" for the default).
	Profile string `json:"profile,omitempty"`
	// Backend names the VMM backend the workspace runs on (vmm.Lookup);
	// empty in manifests written before backends were recorded: the
	// default backend.
	Backend string `json:"backend,omitempty"`
	// KernelPath is the user's own kernel, if one was given at create.
	KernelPath string `json:"kernelPath,omitempty"`
	// Created is when the workspace was created.
	Created time.Time `json:"created"`
	// CreatedBy marks a workspace made by a program acting for someone
	// else ("microagent serve mcp" writes "mcp:OWNER"), so that program can
	// keep to its own workspaces; empty for the CLI's.
	CreatedBy string `json:"createdBy,omitempty"`
	// Declarations hold what later features declare for the workspace
	// (secrets, mounts, network policy), keyed by feature. They are kept
	// as they are when the manifest is rewritten.
	Declarations map[string]json.RawMessage `json:"declarations,omitempty"`
}

// ImageRef names the image of a workspace.
type ImageRef struct {
	// Ref is the reference as the user gave it.
	Ref string `json:"ref"`
	// Resolved is the canonical reference stored in the image store.
	Resolved string `json:"resolved"`
	// Digest is the manifest digest the workspace is pinned to.
	Digest string `json:"digest"`
	// Pinned is Resolved's repository at Digest: what every start boots.
	Pinned string `json:"pinned"`
}

// Resources size a workspace.
type Resources struct {
	MemoryMiB int `json:"memoryMiB"`
	CPUs      int `json:"cpus"`
	// DiskBytes is the size of the writable disk.
	DiskBytes int64 `json:"diskBytes"`
}

// ReadManifest reads and checks manifest.json.
func (w *Dir) ReadManifest() (*Manifest, error) {
	b, err := os.ReadFile(w.ManifestPath())
	if err != nil {
		if os.IsNotExist(err) {
			return nil, NotFound(w.Name)
		}
		return nil, &Error{Name: w.Name, Err: err}
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("workspace %s: manifest %s is corrupt (%v): delete the workspace and create it again", w.Name, w.ManifestPath(), err)
	}
	if m.Version > ManifestVersion {
		return nil, fmt.Errorf("workspace %s: manifest version %d is newer than this microagent understands (%d): upgrade microagent", w.Name, m.Version, ManifestVersion)
	}
	if m.Version < 1 || m.Name != w.Name {
		return nil, fmt.Errorf("workspace %s: manifest %s is not a valid workspace manifest (version %d, name %q)", w.Name, w.ManifestPath(), m.Version, m.Name)
	}
	return &m, nil
}

// WriteManifest replaces the manifest at path atomically.
func WriteManifest(path string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFileAtomic(path, append(b, '\n')); err != nil {
		return &Error{Name: m.Name, Op: "write manifest", Err: err}
	}
	return nil
}
