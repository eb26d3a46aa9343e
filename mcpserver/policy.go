package mcpserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path"
	"reflect"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/workspace"
	"github.com/microagent-dev/microagent/wsdir"
)

// Defaults of a policy that does not say (and of no policy at all).
const (
	DefaultMaxWorkspaces = 4
	DefaultMaxSnapshots  = 4
	DefaultMaxImageMiB   = 2048
	DefaultOwner         = "default"
)

// DefaultProfiles are the profiles an agent may use when the policy names
// none.
var DefaultProfiles = []string{"tiny", "small"}

// maxPolicyBytes bounds a policy file: it is a page of settings.
const maxPolicyBytes = 1 << 20

// Policy is what the operator lets an agent do through the server. The
// agent never sets any of it: every tool call is checked against it, and
// every workspace the server creates gets its network and secrets from it.
type Policy struct {
	// Source names where the policy came from, for refusals ("" for the
	// defaults).
	Source string `yaml:"-"`
	// Owner tells this server's workspaces from other servers' (the
	// manifest's createdBy is "mcp:" + Owner).
	Owner string `yaml:"owner"`
	// Images are path.Match patterns over the normalized reference
	// (docker.io/library/alpine:3.20); empty allows every image.
	Images []string `yaml:"images"`
	// MaxWorkspaces is the most workspaces of this owner at once.
	MaxWorkspaces int `yaml:"max_workspaces"`
	// MaxSnapshots is the most snapshots one workspace keeps: each holds
	// a copy of its RAM and disk on the host.
	MaxSnapshots int `yaml:"max_snapshots"`
	// MaxImageMiB caps an image's download (manifest, config and
	// compressed layers), checked before its layers are fetched.
	MaxImageMiB int `yaml:"max_image_mib"`
	// Profiles an agent may name (default DefaultProfiles).
	Profiles []string `yaml:"profiles"`
	// MaxMemoryMiB, MaxCPUs and MaxDiskMiB cap one workspace (default:
	// the largest allowed profile's).
	MaxMemoryMiB int `yaml:"max_memory_mib"`
	MaxCPUs      int `yaml:"max_cpus"`
	MaxDiskMiB   int `yaml:"max_disk_mib"`
	// Network is applied to every workspace the server creates.
	Network NetworkPolicy `yaml:"network"`
	// Secrets (NAME: scheme:ref) are materialized in every workspace the
	// server creates; SecretsOnDemand are fetched over the secrets socket.
	Secrets         map[string]string `yaml:"secrets"`
	SecretsOnDemand map[string]string `yaml:"secrets_on_demand"`
	// SecretsAudit keeps each workspace's secrets audit log.
	SecretsAudit bool `yaml:"secrets_audit"`
	// TouchOthers lets the agent see and act on workspaces it did not
	// create through a server of this owner.
	TouchOthers bool `yaml:"touch_others"`

	network vmm.Network
	decls   secrets.Declarations
}

// NetworkPolicy is the network of every workspace the server creates, in
// the terms of "microagent create"'s flags.
type NetworkPolicy struct {
	// Mode is user (default) or isolated.
	Mode string `yaml:"mode"`
	// Egress is all (default) or none.
	Egress string `yaml:"egress"`
	// EgressAllow limits the way out to these names (HOST or .DOMAIN).
	EgressAllow []string `yaml:"egress_allow"`
	// EgressAllowCIDR opens ranges the user network closes by default.
	EgressAllowCIDR []string `yaml:"egress_allow_cidr"`
	// HostAccess opens the host's loopback at 10.0.2.2 (HostPorts: only
	// those ports).
	HostAccess bool  `yaml:"host_access"`
	HostPorts  []int `yaml:"host_ports"`
	// DNS are the guest's nameservers instead of the network's.
	DNS []string `yaml:"dns"`
}

// LoadPolicy reads a YAML policy file. Unknown fields are errors, so a
// misspelt limit is never silently no limit.
func LoadPolicy(file string) (*Policy, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPolicyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", file, err)
	}
	if len(b) > maxPolicyBytes {
		return nil, fmt.Errorf("policy %s: larger than %d bytes", file, maxPolicyBytes)
	}
	return ParsePolicy(file, b)
}

// ParsePolicy reads a YAML policy; source names it in errors and refusals.
func ParsePolicy(source string, b []byte) (*Policy, error) {
	p := &Policy{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(p); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("policy %s: %v (fields: owner, images, max_workspaces, max_snapshots, max_image_mib, profiles, max_memory_mib, max_cpus, max_disk_mib, network, secrets, secrets_on_demand, secrets_audit, touch_others)", source, err)
	}
	p.Source = source
	if err := p.complete(); err != nil {
		return nil, fmt.Errorf("policy %s: %w", source, err)
	}
	return p, nil
}

// DefaultPolicy is the policy of a server started without --policy: no
// secrets, the default network, at most DefaultMaxWorkspaces workspaces,
// profiles tiny and small, only its own workspaces.
func DefaultPolicy() *Policy {
	p := &Policy{}
	if err := p.complete(); err != nil {
		panic(err) // the defaults are valid by construction
	}
	return p
}

// complete checks the policy and fills in its defaults.
func (p *Policy) complete() error {
	if p.Owner == "" {
		p.Owner = DefaultOwner
	}
	if !secrets.ValidName(p.Owner) {
		return fmt.Errorf("owner %q: use letters, digits and _ only", p.Owner)
	}
	for _, pat := range p.Images {
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("images: pattern %q: %v", pat, err)
		}
	}
	if p.MaxWorkspaces < 0 {
		return fmt.Errorf("max_workspaces %d: must be at least 1", p.MaxWorkspaces)
	}
	if p.MaxWorkspaces == 0 {
		p.MaxWorkspaces = DefaultMaxWorkspaces
	}
	if p.MaxSnapshots < 0 {
		return fmt.Errorf("max_snapshots %d: must be at least 1", p.MaxSnapshots)
	}
	if p.MaxSnapshots == 0 {
		p.MaxSnapshots = DefaultMaxSnapshots
	}
	if p.MaxImageMiB < 0 {
		return fmt.Errorf("max_image_mib %d: must be at least 1", p.MaxImageMiB)
	}
	if p.MaxImageMiB == 0 {
		p.MaxImageMiB = DefaultMaxImageMiB
	}
	if len(p.Profiles) == 0 {
		p.Profiles = slices.Clone(DefaultProfiles)
	}
	var largest guestboot.Resources
	for _, pr := range p.Profiles {
		r, ok := guestboot.Profiles[pr]
		if !ok {
			return fmt.Errorf("profiles: unknown profile %q (there are %s)", pr, strings.Join(profileNames(), ", "))
		}
		largest.MemoryMiB = max(largest.MemoryMiB, r.MemoryMiB)
		largest.CPUs = max(largest.CPUs, r.CPUs)
		largest.DiskBytes = max(largest.DiskBytes, r.DiskBytes)
	}
	if p.MaxMemoryMiB < 0 || p.MaxCPUs < 0 || p.MaxDiskMiB < 0 {
		return errors.New("max_memory_mib, max_cpus and max_disk_mib must not be negative")
	}
	if p.MaxMemoryMiB == 0 {
		p.MaxMemoryMiB = largest.MemoryMiB
	}
	if p.MaxCPUs == 0 {
		p.MaxCPUs = largest.CPUs
	}
	if p.MaxDiskMiB == 0 {
		p.MaxDiskMiB = int(largest.DiskBytes >> 20)
	}
	n, err := p.Network.resolve()
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	p.network = n
	for _, group := range []struct {
		field    string
		m        map[string]string
		onDemand bool
	}{{"secrets", p.Secrets, false}, {"secrets_on_demand", p.SecretsOnDemand, true}} {
		names := make([]string, 0, len(group.m))
		for k := range group.m {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			d, err := secrets.ParseDecl(k + "=" + group.m[k])
			if err != nil {
				return fmt.Errorf("%s: %s: %w", group.field, k, err)
			}
			d.OnDemand = group.onDemand
			if err := p.decls.Add(d); err != nil {
				return fmt.Errorf("%s: %w", group.field, err)
			}
		}
	}
	return nil
}

func (n NetworkPolicy) resolve() (vmm.Network, error) {
	mode, err := vmm.ParseNetworkMode(orDefault(n.Mode, "user"))
	if err != nil {
		return vmm.Network{}, fmt.Errorf("mode: %v", err)
	}
	v := vmm.Network{Mode: mode, HostAccess: n.HostAccess || len(n.HostPorts) > 0, HostPorts: n.HostPorts}
	switch orDefault(n.Egress, "all") {
	case "all":
	case "none":
		v.EgressNone = true
	default:
		return v, fmt.Errorf("egress %q: use all or none", n.Egress)
	}
	for _, s := range n.EgressAllowCIDR {
		c, err := netip.ParsePrefix(s)
		if err != nil {
			return v, fmt.Errorf("egress_allow_cidr %q: not an address range: give one as ADDRESS/BITS, e.g. 192.168.1.0/24", s)
		}
		v.AllowCIDRs = append(v.AllowCIDRs, c)
	}
	for _, s := range n.EgressAllow {
		a, err := vmm.ParseAllowName(s)
		if err != nil {
			return v, fmt.Errorf("egress_allow: %v", err)
		}
		v.AllowNames = append(v.AllowNames, a)
	}
	for _, s := range n.DNS {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return v, fmt.Errorf("dns %q: not an IP address", s)
		}
		v.DNS = append(v.DNS, ip)
	}
	return v, v.Validate()
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func profileNames() []string {
	var out []string
	for k := range guestboot.Profiles {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// CreatedBy is the manifest mark of this policy's workspaces.
func (p *Policy) CreatedBy() string { return "mcp:" + p.Owner }

// PolicyError is a tool call the policy refused; Field is the policy line
// that refused it.
type PolicyError struct {
	Field  string
	Source string
	Msg    string
}

func (e *PolicyError) Error() string {
	src := "the default policy: serve mcp was started without --policy"
	if e.Source != "" {
		src = "policy file " + e.Source
	}
	return fmt.Sprintf("refused by policy %q (%s): %s", e.Field, src, e.Msg)
}

func (p *Policy) refuse(field, format string, args ...any) error {
	return &PolicyError{Field: field, Source: p.Source, Msg: fmt.Sprintf(format, args...)}
}

// checkImage refuses an image no pattern of the policy allows. Patterns
// are matched against the reference as given and as normalized, so
// "alpine:3.20" and "docker.io/library/alpine:3.20" are the same image.
func (p *Policy) checkImage(ref string) error {
	if len(p.Images) == 0 {
		return nil
	}
	forms := []string{ref}
	if c, err := image.CanonicalRef(ref); err == nil {
		forms = append(forms, c)
	}
	for _, pat := range p.Images {
		for _, f := range forms {
			if ok, _ := path.Match(pat, f); ok {
				return nil
			}
		}
	}
	return p.refuse("images", "image %q matches none of the allowed patterns %s: use an allowed image, or ask the operator to add it", ref, strings.Join(p.Images, ", "))
}

// resources resolves and checks a workspace's size.
func (p *Policy) resources(profile string, memMiB, cpus, diskMiB int) (guestboot.Resources, error) {
	if profile == "" {
		profile = guestboot.DefaultProfile
		if !slices.Contains(p.Profiles, profile) {
			profile = p.Profiles[0]
		}
	}
	if !slices.Contains(p.Profiles, profile) {
		return guestboot.Resources{}, p.refuse("profiles", "profile %q is not allowed: use one of %s", profile, strings.Join(p.Profiles, ", "))
	}
	r, err := guestboot.ResolveResources(profile, guestboot.Resources{MemoryMiB: memMiB, CPUs: cpus, DiskBytes: int64(diskMiB) << 20})
	if err != nil {
		return r, err
	}
	switch {
	case r.MemoryMiB > p.MaxMemoryMiB:
		return r, p.refuse("max_memory_mib", "%d MiB of memory asked, at most %d allowed", r.MemoryMiB, p.MaxMemoryMiB)
	case r.CPUs > p.MaxCPUs:
		return r, p.refuse("max_cpus", "%d CPUs asked, at most %d allowed", r.CPUs, p.MaxCPUs)
	case r.DiskBytes > int64(p.MaxDiskMiB)<<20:
		return r, p.refuse("max_disk_mib", "%d MiB of disk asked, at most %d allowed", r.DiskBytes>>20, p.MaxDiskMiB)
	}
	return r, nil
}

// looksLikeSecretRef reports whether s is a secret reference
// ("scheme:ref") or declaration ("NAME=scheme:ref") of a registered
// scheme: something only the operator may give.
func looksLikeSecretRef(s string) bool {
	if k, v, ok := strings.Cut(s, "="); ok && secrets.ValidName(k) {
		s = v
	}
	scheme, rest, ok := strings.Cut(s, ":")
	return ok && rest != "" && slices.Contains(secrets.Schemes(), scheme)
}

// checkInherited refuses a fork whose source has another network or other
// secrets than this policy gives the workspaces it creates (the fork
// would inherit them); published ports are not inherited and not compared.
func (p *Policy) checkInherited(src *workspace.Info) error {
	want := wsdir.NewNetworkConfig(p.network)
	var have wsdir.NetworkConfig
	if src.Network != nil {
		have = *src.Network
	}
	have.Publish, want.Publish = nil, nil
	if have.Mode == "" {
		have.Mode = want.Mode
	}
	if !reflect.DeepEqual(normalize(have), normalize(want)) {
		return p.refuse("network", "workspace %s has another network than this policy gives (%+v, the policy's %+v): a fork would keep it; fork one created under this policy", src.Name, have, want)
	}
	var decls secrets.Declarations
	if src.Secrets != nil {
		decls = src.Secrets.Declarations
	}
	if !reflect.DeepEqual(normalizeDecls(decls), normalizeDecls(p.decls)) {
		return p.refuse("secrets", "workspace %s has other secrets than this policy gives: a fork would keep them; fork one created under this policy", src.Name)
	}
	return nil
}

// normalize makes empty and nil lists alike for comparison.
func normalize(c wsdir.NetworkConfig) wsdir.NetworkConfig {
	b, _ := json.Marshal(c)
	var out wsdir.NetworkConfig
	json.Unmarshal(b, &out)
	return out
}

func normalizeDecls(d secrets.Declarations) string {
	b, _ := json.Marshal(d)
	return string(b)
}
