package cli

import (
	"net"
	"strings"
	"testing"
)

// TestImageRmPinned: "image rm" refuses an image a workspace is pinned to,
// naming it; --force removes it; "image prune" then keeps its blobs (and
// says so), and the workspace still starts with no registry to reach.
func TestImageRmPinned(t *testing.T) {
	w := secretsCLI(t)
	w.want(t, 0, "Created", "create", "pinned", "--image", specAlpine, "--profile", "tiny", "--disk-size", "300M")
	w.want(t, 1, "workspace pinned is pinned to it", "image", "rm", specAlpine)
	w.want(t, 0, "alpine", "image", "list")
	w.want(t, 0, "removed "+specAlpine, "image", "rm", "--force", specAlpine)
	out := w.want(t, 0, "freed", "image", "prune")
	if !strings.Contains(out, "kept docker.io/library/alpine@sha256:") || !strings.Contains(out, "workspace pinned is pinned to it") {
		t.Fatalf("prune does not say what it kept: %q", out)
	}
	// No registry: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	t.Setenv("MICROAGENT_REGISTRY_MIRRORS", "docker.io=http://"+ln.Addr().String())
	w.want(t, 0, "", "start", "pinned")
	w.want(t, 0, "hi", "exec", "pinned", "--", "echo", "hi")
	w.want(t, 0, "Deleted pinned", "delete", "pinned", "--yes", "--force")
	// Nothing pinned any more: prune keeps nothing.
	if out := w.want(t, 0, "freed", "image", "prune"); strings.Contains(out, "kept") {
		t.Fatalf("prune after the delete: %q", out)
	}
}
