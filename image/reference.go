package image

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/microagent-dev/microagent/home"
)

// Environment variables that configure registry access. Each, when set and
// non-empty, replaces the matching key of <state>/config.json.
const (
	// EnvMirrors maps registries to mirrors:
	// "docker.io=http://127.0.0.1:5055,ghcr.io=https://m.example".
	EnvMirrors = "MICROAGENT_REGISTRY_MIRRORS"
	// EnvInsecure lists registries (host or host:port, comma separated)
	// that may be reached over plain http.
	EnvInsecure = "MICROAGENT_INSECURE_REGISTRIES"
)

// ConfigFile is the name of the settings file in the state directory.
const ConfigFile = "config.json"

// dockerHub is go-containerregistry's name for Docker Hub.
const dockerHub = name.DefaultRegistry // "index.docker.io"

// RegistryConfig says how registries are reached.
type RegistryConfig struct {
	// Mirrors maps a registry host (Docker Hub as "index.docker.io") to the
	// mirror that serves it.
	Mirrors map[string]Mirror
	// Insecure lists hosts (host or host:port) allowed over plain http.
	Insecure []string
}

// Mirror is where images of one registry are fetched from instead.
type Mirror struct {
	// Host is "host[:port]" of the mirror.
	Host string
	// HTTP is true for an http:// mirror.
	HTTP bool
}

// settings is the part of <state>/config.json this package reads; other
// keys belong to other packages and are ignored.
type settings struct {
	RegistryMirrors    map[string]string `json:"registry_mirrors"`
	InsecureRegistries []string          `json:"insecure_registries"`
}

// LoadRegistryConfig reads the mirror and insecure-registry settings from
// <state>/config.json and the environment (which wins, key by key: a set
// variable replaces the whole setting from the file). An http mirror that is
// neither a loopback address nor listed as insecure is an error.
func LoadRegistryConfig(h home.Home) (RegistryConfig, error) {
	var st settings
	cfgPath := h.Path(ConfigFile)
	data, err := os.ReadFile(cfgPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return RegistryConfig{}, fmt.Errorf("read settings %s: %w", cfgPath, err)
	default:
		if err := json.Unmarshal(data, &st); err != nil {
			return RegistryConfig{}, fmt.Errorf("settings %s: %v (fix or remove the file)", cfgPath, err)
		}
	}
	rc := RegistryConfig{Mirrors: map[string]Mirror{}}
	mirrorsFrom := cfgPath + " registry_mirrors"
	mirrors := st.RegistryMirrors
	if v := strings.TrimSpace(os.Getenv(EnvMirrors)); v != "" {
		mirrorsFrom = EnvMirrors
		mirrors = map[string]string{}
		for _, item := range strings.Split(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			k, m, ok := strings.Cut(item, "=")
			if !ok || strings.TrimSpace(k) == "" || strings.TrimSpace(m) == "" {
				return RegistryConfig{}, fmt.Errorf("%s: %q is not REGISTRY=MIRROR-URL (example: docker.io=http://127.0.0.1:5055)", EnvMirrors, item)
			}
			mirrors[strings.TrimSpace(k)] = strings.TrimSpace(m)
		}
	}
	rc.Insecure = st.InsecureRegistries
	if v := strings.TrimSpace(os.Getenv(EnvInsecure)); v != "" {
		rc.Insecure = nil
		for _, item := range strings.Split(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				rc.Insecure = append(rc.Insecure, item)
			}
		}
	}
	for reg, raw := range mirrors {
		m, err := parseMirror(raw)
		if err != nil {
			return RegistryConfig{}, fmt.Errorf("%s: mirror for %s: %w", mirrorsFrom, reg, err)
		}
		if m.HTTP && !rc.allowHTTP(m.Host) {
			return RegistryConfig{}, fmt.Errorf("%s: mirror %s for %s uses plain http, which is allowed only for loopback addresses and registries listed in %s or %s insecure_registries; use https or list %s there",
				mirrorsFrom, raw, reg, EnvInsecure, ConfigFile, m.Host)
		}
		rc.Mirrors[canonicalRegistry(reg)] = m
	}
	return rc, nil
}

// parseMirror accepts "http://host:port", "https://host" or a bare host
// (https).
func parseMirror(raw string) (Mirror, error) {
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Mirror{}, fmt.Errorf("%q is not a URL: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Mirror{}, fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return Mirror{}, fmt.Errorf("%q: give only scheme://host[:port] (no path, query or user)", raw)
	}
	if _, err := name.NewRegistry(u.Host); err != nil {
		return Mirror{}, fmt.Errorf("%q: %v", raw, err)
	}
	return Mirror{Host: u.Host, HTTP: u.Scheme == "http"}, nil
}

// canonicalRegistry maps Docker Hub's aliases to go-containerregistry's
// name for it.
func canonicalRegistry(reg string) string {
	reg = strings.ToLower(strings.TrimSpace(reg))
	switch reg {
	case "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return dockerHub
	}
	return reg
}

// allowHTTP reports whether plain http to host (host or host:port) is
// allowed: loopback addresses always, others only when listed as insecure.
func (rc RegistryConfig) allowHTTP(host string) bool {
	if isLoopback(host) {
		return true
	}
	bare := hostOnly(host)
	for _, h := range rc.Insecure {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == strings.ToLower(host) || h == strings.ToLower(bare) {
			return true
		}
	}
	return false
}

// hostOnly strips the port from host[:port] (IPv6 in brackets too).
func hostOnly(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		return h
	}
	return strings.Trim(host, "[]")
}

func isLoopback(host string) bool {
	h := hostOnly(host)
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// parseRef parses a user's image reference ("alpine", "ghcr.io/a/b:1",
// "x@sha256:...") into go-containerregistry's form and the canonical key
// the store records it under ("docker.io/library/alpine:latest").
func parseRef(ref string) (name.Reference, string, error) {
	r, err := name.ParseReference(strings.TrimSpace(ref))
	if err != nil {
		return nil, "", fmt.Errorf("invalid image reference %q: %v", ref, err)
	}
	return r, refKey(r), nil
}

// CanonicalRef is the canonical form of a user's image reference, as the
// store records it ("alpine" is "docker.io/library/alpine:latest"), for
// callers that match references against patterns.
func CanonicalRef(ref string) (string, error) {
	_, key, err := parseRef(ref)
	return key, err
}

// refKey is the canonical string of r: Docker Hub is written docker.io,
// and the tag or digest is always present.
func refKey(r name.Reference) string {
	reg := r.Context().RegistryStr()
	if reg == dockerHub {
		reg = "docker.io"
	}
	repo := reg + "/" + r.Context().RepositoryStr()
	if d, ok := r.(name.Digest); ok {
		return repo + "@" + d.DigestStr()
	}
	return repo + ":" + r.Identifier()
}

// source is where a reference is actually fetched from.
type source struct {
	ref    name.Reference // reference on the contacted registry
	host   string         // registry host contacted (the mirror when one applies)
	mirror bool
}

// resolveSource applies the mirror configuration to r.
func (rc RegistryConfig) resolveSource(r name.Reference) (source, error) {
	reg := r.Context().RegistryStr()
	var opts []name.Option
	host := reg
	m, mirrored := rc.Mirrors[canonicalRegistry(reg)]
	if mirrored {
		host = m.Host
		if m.HTTP {
			opts = append(opts, name.Insecure)
		}
	} else if rc.allowHTTP(reg) {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(host+"/"+r.Context().RepositoryStr(), opts...)
	if err != nil {
		return source{}, fmt.Errorf("image %s via %s: %v", refKey(r), host, err)
	}
	var out name.Reference
	if d, ok := r.(name.Digest); ok {
		out = repo.Digest(d.DigestStr())
	} else {
		out = repo.Tag(r.Identifier())
	}
	return source{ref: out, host: host, mirror: mirrored}, nil
}
