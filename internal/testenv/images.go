package testenv

import (
	"archive/tar"
	"debug/elf"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/compression"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/microagent-dev/microagent/internal/imagebuild"
)

// BusyboxPath is Debian's static busybox (package busybox-static).
const BusyboxPath = imagebuild.BusyboxPath

// DefaultPath is the PATH set in every fixture image's config.
const DefaultPath = imagebuild.DefaultPath

// Facts about every fixture image's root filesystem.
const (
	// PasswdContent is /etc/passwd.
	PasswdContent = imagebuild.PasswdContent
	// GroupContent is /etc/group.
	GroupContent = imagebuild.GroupContent
	// AgentUID and AgentGID are the ids of the "agent" user.
	AgentUID = 1000
	AgentGID = 1000
)

// Expectations for WhiteoutImage. Paths are absolute in the guest (or
// relative to the root of a flattened image without the leading slash).
const (
	// WhiteoutDeletedFile is created by layer 1 and deleted by layer 2 with a
	// ".wh." whiteout: it must be absent.
	WhiteoutDeletedFile = "/data/deleted.txt"
	// WhiteoutKeptFile sits beside it in layer 1 and must survive with
	// WhiteoutKeptContent.
	WhiteoutKeptFile    = "/data/kept.txt"
	WhiteoutKeptContent = "kept\n"
	// OpaqueDir is a directory of layer 1 that layer 2 replaces through an
	// opaque whiteout (".wh..wh..opq"): OpaqueHiddenFile and OpaqueHiddenDir
	// (from layer 1) must be absent, OpaqueNewFile (layer 2) present with
	// OpaqueNewContent.
	OpaqueDir        = "/opaque"
	OpaqueHiddenFile = "/opaque/old.txt"
	OpaqueHiddenDir  = "/opaque/olddir"
	OpaqueNewFile    = "/opaque/new.txt"
	OpaqueNewContent = "new\n"
	// SetuidFile (layer 3) has mode SetuidMode (04755).
	SetuidFile = "/special/setuid"
	SetuidMode = 0o4755
	// HardLinkName is a hard link to HardLinkTarget (layer 3); both have
	// HardLinkContent and share one inode.
	HardLinkTarget  = "/special/hardlink-target"
	HardLinkName    = "/special/hardlink"
	HardLinkContent = "linked\n"
	// SymlinkName is a symbolic link whose target is SymlinkTarget
	// (relative, resolving to HardLinkTarget).
	SymlinkName   = "/special/symlink"
	SymlinkTarget = "hardlink-target"
	// XattrFile carries the extended attribute XattrName=XattrValue (written
	// as a PAX SCHILY.xattr record).
	XattrFile  = "/special/xattr"
	XattrName  = "user.test"
	XattrValue = "hello"
	// CharDevice is a character device node CharDeviceMajor:CharDeviceMinor
	// (the numbers of /dev/null) with mode 0666.
	CharDevice      = "/special/null"
	CharDeviceMajor = 1
	CharDeviceMinor = 3
	// OwnedFile is owned by OwnedUID:OwnedGID with mode 0640.
	OwnedFile = "/special/owned"
	OwnedUID  = 1000
	OwnedGID  = 1000
)

// Expectations for UserImage.
const (
	// UserName is the image's config User.
	UserName = "agent"
	// UserWorkDir is the image's WorkingDir, owned by AgentUID:AgentGID.
	UserWorkDir = "/home/agent"
	// UserOutput is what running the image with its default entrypoint and
	// command prints.
	UserOutput = "entry-bar\n1000\n/home/agent\n"
)

// fixtureTime is the timestamp of every fixture file and image, so the
// images are identical (same digests) on every build.
var fixtureTime = imagebuild.FixedTime

var (
	fixtureMu     sync.Mutex
	fixtureImages = map[string]v1.Image{}
)

// RequireBusybox returns the path of a static busybox, skipping (or, under
// CI=true, failing) the test when there is none.
func RequireBusybox(t testing.TB) string {
	t.Helper()
	p := RequireTool(t, BusyboxPath)
	f, err := elf.Open(p)
	if err != nil {
		missing(t, fmt.Sprintf("%s is not an ELF binary (%v)", p, err), "busybox")
		return ""
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			missing(t, fmt.Sprintf("%s is dynamically linked; the guest needs the static one", p), "busybox")
		}
	}
	return p
}

// BusyboxImage returns the one-layer busybox image: the base root filesystem,
// Env PATH, Cmd ["/bin/sh"].
func BusyboxImage(t testing.TB) v1.Image {
	t.Helper()
	return fixture(t, "busybox", func() (v1.Image, error) {
		return imagebuild.Busybox()
	})
}

// WhiteoutImage returns the three-layer image described by the Whiteout*,
// Opaque*, Setuid*, HardLink*, Symlink*, Xattr*, CharDevice* and Owned*
// constants.
func WhiteoutImage(t testing.TB) v1.Image {
	t.Helper()
	return fixture(t, "whiteout", func() (v1.Image, error) {
		base, err := imagebuild.BaseEntries()
		if err != nil {
			return nil, err
		}
		layer1 := append(base,
			imagebuild.Dir("data", 0o755, 0, 0),
			imagebuild.File("data/deleted.txt", "deleted\n", 0o644, 0, 0),
			imagebuild.File("data/kept.txt", WhiteoutKeptContent, 0o644, 0, 0),
			imagebuild.Dir("opaque", 0o755, 0, 0),
			imagebuild.File("opaque/old.txt", "old\n", 0o644, 0, 0),
			imagebuild.Dir("opaque/olddir", 0o755, 0, 0),
			imagebuild.File("opaque/olddir/old2.txt", "old2\n", 0o644, 0, 0),
		)
		layer2 := []imagebuild.Entry{
			imagebuild.Dir("data", 0o755, 0, 0),
			imagebuild.File("data/.wh.deleted.txt", "", 0o600, 0, 0),
			imagebuild.Dir("opaque", 0o755, 0, 0),
			imagebuild.File("opaque/.wh..wh..opq", "", 0o600, 0, 0),
			imagebuild.File("opaque/new.txt", OpaqueNewContent, 0o644, 0, 0),
		}
		layer3 := []imagebuild.Entry{
			imagebuild.Dir("special", 0o755, 0, 0),
			imagebuild.File("special/setuid", "#!/bin/sh\necho setuid\n", SetuidMode, 0, 0),
			imagebuild.File("special/hardlink-target", HardLinkContent, 0o644, 0, 0),
			{Hdr: tar.Header{Typeflag: tar.TypeLink, Name: "special/hardlink", Linkname: "special/hardlink-target", Mode: 0o644}},
			imagebuild.Symlink("special/symlink", SymlinkTarget),
			{Hdr: tar.Header{Typeflag: tar.TypeReg, Name: "special/xattr", Mode: 0o644,
				PAXRecords: map[string]string{"SCHILY.xattr." + XattrName: XattrValue}}, Body: "xattr\n"},
			{Hdr: tar.Header{Typeflag: tar.TypeChar, Name: "special/null", Mode: 0o666,
				Devmajor: CharDeviceMajor, Devminor: CharDeviceMinor}},
			imagebuild.File("special/owned", "owned\n", 0o640, OwnedUID, OwnedGID),
		}
		return imagebuild.Build(v1.Config{
			Env: []string{DefaultPath},
			Cmd: []string{"/bin/sh"},
		}, layer1, layer2, layer3)
	})
}

// UserImage returns the busybox image configured to run as "agent" (uid
// 1000) in /home/agent with Env FOO=bar, Entrypoint ["/bin/sh","-c"] and Cmd
// ["echo entry-$FOO; id -u; pwd"]; running it prints UserOutput.
func UserImage(t testing.TB) v1.Image {
	t.Helper()
	return fixture(t, "user", func() (v1.Image, error) {
		base, err := imagebuild.BaseEntries()
		if err != nil {
			return nil, err
		}
		base = append(base, imagebuild.Dir("home/agent", 0o755, AgentUID, AgentGID))
		return imagebuild.Build(v1.Config{
			User:       UserName,
			WorkingDir: UserWorkDir,
			Env:        []string{DefaultPath, "FOO=bar"},
			Entrypoint: []string{"/bin/sh", "-c"},
			Cmd:        []string{"echo entry-$FOO; id -u; pwd"},
		}, base)
	})
}

// ZstdImage is BusyboxImage with its layer compressed with zstd (media type
// application/vnd.oci.image.layer.v1.tar+zstd).
func ZstdImage(t testing.TB) v1.Image {
	t.Helper()
	return fixture(t, "zstd", func() (v1.Image, error) {
		base, err := imagebuild.BaseEntries()
		if err != nil {
			return nil, err
		}
		return imagebuild.BuildWith(v1.Config{Env: []string{DefaultPath}, Cmd: []string{"/bin/sh"}},
			[]tarball.LayerOption{tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd)},
			types.OCILayerZStd, base)
	})
}

// ImageFromLayers builds an amd64 OCI image from in-memory layers, each a
// map of path to file content (regular files, mode 0644, root-owned), on
// top of nothing. Handy for small ad-hoc images in tests.
func ImageFromLayers(t testing.TB, cfg v1.Config, layers ...map[string]string) v1.Image {
	t.Helper()
	var all [][]imagebuild.Entry
	for _, l := range layers {
		var es []imagebuild.Entry
		for p, c := range l {
			es = append(es, imagebuild.File(strings.TrimPrefix(p, "/"), c, 0o644, 0, 0))
		}
		all = append(all, es)
	}
	img, err := imagebuild.Build(cfg, all...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// fixture builds an image once per test binary.
func fixture(t testing.TB, key string, build func() (v1.Image, error)) v1.Image {
	t.Helper()
	RequireBusybox(t)
	fixtureMu.Lock()
	defer fixtureMu.Unlock()
	if img, ok := fixtureImages[key]; ok {
		return img
	}
	img, err := build()
	if err != nil {
		t.Fatalf("build fixture image %s: %v", key, err)
	}
	fixtureImages[key] = img
	return img
}
