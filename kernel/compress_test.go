package kernel

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/testenv"
)

// Ubuntu's and Fedora's packages, rebuilt from the pinned kernel with a zstd
// and an xz payload and compressed modules, install to the very same
// vmlinux and module bytes as the pinned package.
func TestInstallRecompressed(t *testing.T) {
	_, k := sharedKernel(t)
	var mods []string
	for _, m := range k.Modules {
		mods = append(mods, k.ModulePath(m))
	}
	for _, format := range []string{"zstd", "xz"} {
		t.Run(format, func(t *testing.T) {
			deb := testenv.RecompressedKernelDeb(t, format, k.Release, k.Vmlinux, mods)
			h := home.Home{Root: t.TempDir()}
			got, err := Install(context.Background(), h, InstallOptions{Name: format, Deb: deb, Stderr: testLog{t}})
			if err != nil {
				t.Fatal(err)
			}
			if got.VmlinuxSHA256 != pinnedVmlinuxSHA256 || got.Release != k.Release || got.Version != "1.0-"+format {
				t.Errorf("installed %+v; want the pinned vmlinux %s", got, pinnedVmlinuxSHA256)
			}
			if len(got.Modules) != len(k.Modules) {
				t.Fatalf("modules %v, want %v", got.Modules, k.Modules)
			}
			for i, m := range got.Modules {
				if m.Name != k.Modules[i].Name || m.SHA256 != k.Modules[i].SHA256 || m.File != k.Modules[i].File {
					t.Errorf("module %d = %+v, want %+v (stored decompressed)", i, m, k.Modules[i])
				}
			}
			if err := got.Verify(); err != nil {
				t.Error(err)
			}
		})
	}
}

// A payload that is damaged, or whose size trailer disagrees, fails the
// install with the reason and leaves nothing installed.
func TestInstallDamagedPayload(t *testing.T) {
	_, k := sharedKernel(t)
	deb := testenv.RecompressedKernelDeb(t, "zstd", k.Release, k.Vmlinux, nil)
	root := t.TempDir()
	if b, err := exec.Command("dpkg-deb", "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	bz := filepath.Join(root, "boot", "vmlinuz-"+k.Release)
	data, err := os.ReadFile(bz)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func([]byte){
		"trailer says": func(b []byte) { b[len(b)-1] ^= 1 },                 // size trailer off
		"decompress":   func(b []byte) { copy(b[len(b)/2:], "0123456789") }, // frame data damaged
	}
	for want, damage := range cases {
		b := bytes.Clone(data)
		damage(b)
		bad := filepath.Join(t.TempDir(), "vmlinuz")
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := extractVmlinux(context.Background(), bad, filepath.Join(t.TempDir(), "vmlinux"))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("damaged payload: %v, want %q", err, want)
		}
	}
}

// FromPath uses module files where they are, so compressed ones are refused
// with what to do instead.
func TestFromPathCompressedModules(t *testing.T) {
	_, k := sharedKernel(t)
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(k.Dir, "modules", "overlay.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "overlay.ko.xz"), testenv.XZ(t, data, "--check=crc32"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := FromPath(k.Vmlinux, dir); err == nil || !strings.Contains(err.Error(), "xz-compressed") ||
		!strings.Contains(err.Error(), "kernel install --deb") {
		t.Errorf("FromPath(compressed modules) = %v", err)
	}
}

// The xz reader gives back what the xz tool compressed: x86 code through the
// BCJ filter (as the kernel's payload), several blocks, every check type.
func TestXZReader(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe) // x86-64 code: the BCJ filter has calls to convert
	if err != nil {
		t.Fatal(err)
	}
	data = data[:min(len(data), 3<<20)]
	for _, args := range [][]string{
		{"--check=crc32", "--x86", "--lzma2=preset=1,dict=32MiB"},
		{"--check=crc64", "--lzma2=preset=0"},
		{"--check=sha256", "--x86", "--lzma2=preset=0", "--block-size=256KiB"},
		{"--check=none", "--x86", "--lzma2=preset=0", "--block-size=1MiB"},
	} {
		z := testenv.XZ(t, data, args...)
		r, err := xzReader(bytes.NewReader(z))
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%v: %d bytes differ from the %d compressed", args, len(got), len(data))
		}
		// A flipped byte in the compressed data is caught (by LZMA2 or the check).
		z[len(z)/2] ^= 0x55
		if r, err := xzReader(bytes.NewReader(z)); err == nil {
			if got, err := io.ReadAll(r); err == nil && args[0] != "--check=none" {
				t.Errorf("%v: a damaged stream read without error (%d bytes, equal: %v)", args, len(got), bytes.Equal(got, data))
			}
		}
	}
	for name, bad := range map[string][]byte{
		"bad magic":              []byte("not xz at all"),
		"stream header CRC":      append(bytes.Clone(magicXZ), 0, 1, 0, 0, 0, 0),
		"unexpected EOF":         testenv.XZ(t, data[:1000], "--check=crc32")[:40],
		"dictionary of 4096 MiB": xzWithDict(t, 40),
	} {
		r, err := xzReader(bytes.NewReader(bad))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// xzWithDict returns a small xz stream whose block asks for LZMA2
// dictionary property b (its header CRC fixed up).
func xzWithDict(t *testing.T, b byte) []byte {
	z := testenv.XZ(t, []byte("hello"), "--check=crc32", "--lzma2=dict=4KiB")
	// Stream header (12), then the block header: size, flags, filter id 0x21, props size 1, props.
	hsize := (int(z[12]) + 1) * 4
	hdr := z[12 : 12+hsize]
	if hdr[2] != xzFilterLZMA2 || hdr[3] != 1 {
		t.Fatalf("unexpected block header %x", hdr)
	}
	hdr[4] = b
	binary.LittleEndian.PutUint32(hdr[hsize-4:], crc32.ChecksumIEEE(hdr[:hsize-4]))
	return z
}

// TestInstallModulesDeb: a kernel whose modules come in a package of their
// own (Ubuntu's linux-modules-RELEASE) installs from both; the image
// package alone is refused, and a modules package needs its kernel.
func TestInstallModulesDeb(t *testing.T) {
	_, k := sharedKernel(t)
	image := testenv.RecompressedKernelDeb(t, "zstd", k.Release, k.Vmlinux, nil)
	files := map[string][]byte{}
	for _, m := range k.Modules {
		b, err := os.ReadFile(k.ModulePath(m))
		if err != nil {
			t.Fatal(err)
		}
		files["lib/modules/"+k.Release+"/kernel/"+strings.TrimSuffix(filepath.Base(m.File), ".ko")+".ko.zst"] = testenv.Zstd(t, b)
	}
	modules := testenv.BuildDeb(t, "linux-modules-"+k.Release, "1.0-zstd", files)
	h := home.Home{Root: t.TempDir()}
	if _, err := Install(context.Background(), h, InstallOptions{Name: "split", Deb: image, Stderr: testLog{t}}); err == nil || !strings.Contains(err.Error(), "lib/modules") {
		t.Fatalf("the image package alone: %v", err)
	}
	if _, err := Install(context.Background(), h, InstallOptions{Name: "split", ModulesDebs: []string{modules}, Stderr: testLog{t}}); err == nil || !strings.Contains(err.Error(), "give --deb too") {
		t.Fatalf("a modules package alone: %v", err)
	}
	got, err := Install(context.Background(), h, InstallOptions{Name: "split", Deb: image, ModulesDebs: []string{modules}, Stderr: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if got.VmlinuxSHA256 != pinnedVmlinuxSHA256 || len(got.Modules) != len(k.Modules) || got.Verify() != nil {
		t.Fatalf("installed %+v from the two packages", got)
	}
}
