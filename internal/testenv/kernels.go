package testenv

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// BuildDeb builds a .deb with the given control fields and files (paths
// relative to the package root) with dpkg-deb, and returns its path.
func BuildDeb(t testing.TB, pkg, version string, files map[string][]byte) string {
	t.Helper()
	RequireTool(t, "dpkg-deb")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	control := "Package: " + pkg + "\nVersion: " + version + "\nArchitecture: amd64\nMaintainer: test <t@example.org>\nDescription: test\n"
	all := map[string][]byte{"DEBIAN/control": []byte(control)}
	for name, body := range files {
		all[name] = body
	}
	for name, body := range all {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, pkg+"_"+version+".deb")
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", src, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v: %s", err, b)
	}
	return out
}

// RecompressedKernelDeb builds a kernel package as Ubuntu (zstd) or Fedora
// (xz) compress theirs, from an uncompressed kernel's parts: a bzImage at
// boot/vmlinuz-RELEASE whose payload is vmlinux compressed with format, the
// decompressed size appended as the kernel's build does (xz with the x86 BCJ
// filter, as scripts/xz_wrap.sh), and each module file compressed as kmod's
// install does, at lib/modules/RELEASE/kernel/NAME.ko.zst or .ko.xz. The
// bzImage is the boot header and payload only: microagent boots the ELF it
// extracts, never the bzImage's own decompressor, so none is needed. xz
// output comes from the xz tool, zstd from klauspost/compress at the
// kernel's 128 MiB window.
func RecompressedKernelDeb(t testing.TB, format, release, vmlinux string, modules []string) string {
	t.Helper()
	elf, err := os.ReadFile(vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	var payload []byte
	switch format {
	case "zstd":
		payload = Zstd(t, elf, zstd.WithWindowSize(1<<27))
	case "xz":
		payload = XZ(t, elf, "--check=crc32", "--x86", "--lzma2=preset=1,dict=32MiB")
	default:
		t.Fatalf("RecompressedKernelDeb: format %q: use zstd or xz", format)
	}
	payload = binary.LittleEndian.AppendUint32(payload, uint32(len(elf)))

	// The x86 boot protocol's setup header, as much as a payload needs:
	// one setup sector, "HdrS", protocol 2.15, payload offset and length.
	bz := make([]byte, 1024, 1024+len(payload))
	bz[0x1f1] = 1
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x20f)
	binary.LittleEndian.PutUint32(bz[0x24c:], uint32(len(payload)))
	bz = append(bz, payload...)

	files := map[string][]byte{"boot/vmlinuz-" + release: bz}
	for _, m := range modules {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(m), ".ko")
		switch format {
		case "zstd":
			files["lib/modules/"+release+"/kernel/"+name+".ko.zst"] = Zstd(t, data)
		case "xz":
			files["lib/modules/"+release+"/kernel/"+name+".ko.xz"] = XZ(t, data, "--check=crc32", "--lzma2=dict=1MiB")
		}
	}
	return BuildDeb(t, "linux-image-"+release, "1.0-"+format, files)
}

// Zstd compresses data with klauspost/compress and the given options.
func Zstd(t testing.TB, data []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

// XZ compresses data with the xz tool and the given options.
func XZ(t testing.TB, data []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(RequireTool(t, "xz"), append([]string{"-T1", "-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("xz %s: %v: %s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes()
}
