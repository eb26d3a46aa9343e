package workspace

import (
	"errors"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/wsdir"
)

// The workspace's state on disk is package wsdir's; these names keep this
// package's API whole for its callers.

// Dir is the folder of the state directory that holds the workspaces.
const Dir = wsdir.Workspaces

// MaxNameLen is the longest workspace name.
const MaxNameLen = wsdir.MaxNameLen

// ManifestVersion is the version of manifest.json this microagent writes.
const ManifestVersion = wsdir.ManifestVersion

type (
	// State is a workspace's lifecycle state.
	State = wsdir.State
	// Manifest is what a workspace is (see wsdir.Manifest).
	Manifest = wsdir.Manifest
	// ImageRef names the image of a workspace.
	ImageRef = wsdir.ImageRef
	// Resources size a workspace.
	Resources = wsdir.Resources
	// SecretsConfig is what a workspace declares about secrets.
	SecretsConfig = wsdir.SecretsConfig
	// NetworkConfig is a workspace's network as its manifest keeps it.
	NetworkConfig = wsdir.NetworkConfig
	// Port is one published port.
	Port = wsdir.Port
	// Snapshot describes a saved moment of a workspace.
	Snapshot = wsdir.Snapshot
	// Error is a failure of an operation on one workspace.
	Error = wsdir.Error
)

// The states (see wsdir.State).
const (
	Created  = wsdir.Created
	Starting = wsdir.Starting
	Running  = wsdir.Running
	Halting  = wsdir.Halting
	Halted   = wsdir.Halted
	Failed   = wsdir.Failed
	Paused   = wsdir.Paused
)

// Errors of this package; test for them with errors.Is.
var (
	ErrInvalidName      = wsdir.ErrInvalidName
	ErrNotFound         = wsdir.ErrNotFound
	ErrExists           = wsdir.ErrExists
	ErrBusy             = wsdir.ErrBusy
	ErrRunning          = wsdir.ErrRunning
	ErrNotRunning       = wsdir.ErrNotRunning
	ErrPaused           = wsdir.ErrPaused
	ErrSnapshotNotFound = wsdir.ErrSnapshotNotFound
	ErrInvalidTag       = wsdir.ErrInvalidTag
	// ErrSecretDecl: a secret declaration given to Create or Start is
	// malformed, or names a secret (or env file) already declared.
	ErrSecretDecl = errors.New("invalid secret declaration")
)

// ValidateName checks a workspace name (see wsdir.ValidateName).
func ValidateName(name string) error { return wsdir.ValidateName(name) }

// ValidateTag checks a snapshot tag (see wsdir.ValidateTag).
func ValidateTag(tag string) error { return wsdir.ValidateTag(tag) }

// NewNetworkConfig describes n as a manifest keeps it.
func NewNetworkConfig(n vmm.Network) NetworkConfig { return wsdir.NewNetworkConfig(n) }

// wsDir is one workspace's folder, with this package's operations on it.
type wsDir struct{ *wsdir.Dir }

func newWS(h home.Home, name string) *wsDir { return &wsDir{wsdir.New(h, name)} }

// open finds an existing workspace by name.
func open(h home.Home, name string) (*wsDir, error) {
	d, err := wsdir.Open(h, name)
	if err != nil {
		return nil, err
	}
	return &wsDir{d}, nil
}
