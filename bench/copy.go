package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

// copyResult is section 9: `microagent cp` throughput against the same
// bytes streamed through exec on the same workspace.
type copyResult struct {
	size int64
	// Floors: exec stdin into `cat > FILE` (in) and exec stdout of
	// `cat FILE` into a host file (out), through the supervisor like cp.
	execIn, execOut []time.Duration
	// cp of one file, host to guest and guest to host (library calls).
	cpIn, cpOut []time.Duration
	// Bare channel into /dev/null, for scale: no guest disk write.
	execNull []time.Duration
	// A tree of many small files, copied in.
	treeFiles int
	treeBytes int64
	treeIn    []time.Duration
	// The same tree's archive fed to busybox `tar -x` by exec stdin.
	treeTar []time.Duration
}

// copySection is section 9: `microagent cp` throughput both ways against
// the same bytes streamed through exec stdin/stdout.
type copySection struct{}

func (copySection) usesWorkspaces() {}

func (copySection) name() string { return "copy" }

func (copySection) run(ctx context.Context, e *env) (err error) {
	e.r.copy, err = measureCopy(ctx, e)
	return err
}

// measureCopy creates and starts one workspace and times, round by round
// (interleaved, after one uncounted round), the four transfers of a
// -copy-mib random file, then a tree of small files. Every transfer is
// checked (sha256 in the guest for one round, sizes for all).
func measureCopy(ctx context.Context, e *env) (*copyResult, error) {
	const name = "cpbench"
	tmp, n, sizeMiB := e.tmp, e.opts.n, e.opts.copyMiB
	if err := e.create(ctx, name, ""); err != nil {
		return nil, err
	}
	if _, err := e.start(ctx, name); err != nil {
		return nil, err
	}
	if es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name, Argv: []string{"mkdir", "-p", "/data"}}); err != nil || es.Code != 0 {
		return nil, fmt.Errorf("mkdir /data in the guest: %v %+v", err, es)
	}
	dir, err := os.MkdirTemp(tmp, "copy-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	size := int64(sizeMiB) << 20
	data := make([]byte, size)
	rand.Read(data)
	src := filepath.Join(dir, "big.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	r := &copyResult{size: size}
	execIn := func(target string) (time.Duration, error) {
		t0 := time.Now()
		es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name, Argv: []string{"sh", "-c", "cat > " + target},
			Stdin: bytes.NewReader(data)})
		d := time.Since(t0)
		if err == nil && es.Code != 0 {
			err = fmt.Errorf("exit %+v", es)
		}
		return d, err
	}
	for i := 0; i <= n; i++ {
		logf("copy, round %d/%d: %d MiB in and out by exec and by cp", i, n, sizeMiB)
		dNull, err := execIn("/dev/null")
		if err != nil {
			return nil, fmt.Errorf("exec cat > /dev/null: %w", err)
		}
		dIn, err := execIn("/data/floor.bin")
		if err != nil {
			return nil, fmt.Errorf("exec cat > file: %w", err)
		}
		t0 := time.Now()
		st, err := workspace.CopyToGuest(ctx, e.h, workspace.CopyInOptions{Name: name, Path: "/data/big.bin", MkdirParents: true}, src)
		dCpIn := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("cp in: %w", err)
		}
		if st.Bytes != size {
			return nil, fmt.Errorf("cp in wrote %d bytes, want %d", st.Bytes, size)
		}
		outFile := filepath.Join(dir, "floor.out")
		f, err := os.Create(outFile)
		if err != nil {
			return nil, err
		}
		t0 = time.Now()
		es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name, Argv: []string{"cat", "/data/big.bin"}, Stdout: f})
		dOut := time.Since(t0)
		f.Close()
		if err == nil && es.Code != 0 {
			err = fmt.Errorf("exit %+v", es)
		}
		if err != nil {
			return nil, fmt.Errorf("exec cat file: %w", err)
		}
		back := filepath.Join(dir, "back.bin")
		os.Remove(back)
		t0 = time.Now()
		if _, err := workspace.CopyFromGuest(ctx, e.h, name, "/data/big.bin", back); err != nil {
			return nil, fmt.Errorf("cp out: %w", err)
		}
		dCpOut := time.Since(t0)
		for _, p := range []string{outFile, back} {
			b, err := os.ReadFile(p)
			if err != nil || sha256.Sum256(b) != sum {
				return nil, fmt.Errorf("%s: not the file that went in (%d bytes, %v)", p, len(b), err)
			}
		}
		if i == 0 {
			var out bytes.Buffer
			if _, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name, Argv: []string{"sha256sum", "/data/big.bin", "/data/floor.bin"}, Stdout: &out}); err != nil {
				return nil, err
			}
			want := fmt.Sprintf("%x", sum)
			if strings.Count(out.String(), want) != 2 {
				return nil, fmt.Errorf("sha256 in the guest: %q, want %s twice", out.String(), want)
			}
			continue
		}
		r.execNull = append(r.execNull, dNull)
		r.execIn = append(r.execIn, dIn)
		r.cpIn = append(r.cpIn, dCpIn)
		r.execOut = append(r.execOut, dOut)
		r.cpOut = append(r.cpOut, dCpOut)
	}

	// A source tree: 1000 files of 4 KiB in 20 directories.
	tree := filepath.Join(dir, "tree")
	for i := 0; i < 1000; i++ {
		d := filepath.Join(tree, fmt.Sprintf("d%02d", i%20))
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%04d", i)), data[i*4096:(i+1)*4096], 0o644); err != nil {
			return nil, err
		}
	}
	var tarball bytes.Buffer
	if _, err := tarcopy.Write(&tarball, tree, tarcopy.WriteOptions{}); err != nil {
		return nil, err
	}
	for i := 0; i <= n; i++ {
		logf("copy, round %d/%d: a tree of 1000 small files in, by tar -x and by cp", i, n)
		t0 := time.Now()
		es, err := workspace.Exec(ctx, e.h, workspace.ExecOptions{Name: name,
			Argv:  []string{"sh", "-c", fmt.Sprintf("mkdir /data/btree%d && tar -x -C /data/btree%d", i, i)},
			Stdin: bytes.NewReader(tarball.Bytes())})
		dTar := time.Since(t0)
		if err == nil && es.Code != 0 {
			err = fmt.Errorf("exit %+v", es)
		}
		if err != nil {
			return nil, fmt.Errorf("tar -x of the tree: %w", err)
		}
		if i > 0 {
			r.treeTar = append(r.treeTar, dTar)
		}
		t0 = time.Now()
		st, err := workspace.CopyToGuest(ctx, e.h, workspace.CopyInOptions{Name: name, Path: fmt.Sprintf("/data/tree%d", i)}, tree)
		d := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("cp tree: %w", err)
		}
		if i > 0 {
			r.treeIn = append(r.treeIn, d)
			r.treeFiles, r.treeBytes = st.Files, st.Bytes
		}
	}
	return r, e.halt(ctx, name)
}

// summary adds section 9 to the summary table.
func (copySection) summary(b *report, r *results) {
	c := r.copy
	if c == nil {
		return
	}
	ei, ci := summarize(c.execIn), summarize(c.cpIn)
	eo, co := summarize(c.execOut), summarize(c.cpOut)
	b.f("| 9. `cp` %d MiB host → guest vs exec stdin `cat > file` (throughput) | %.1f MB/s | %.1f MB/s | %s | %s | — | — | — |\n",
		c.size>>20, mbps(c.size, ei.median), mbps(c.size, ci.median), speed(ratio(ei.median, ci.median)), speed(ratio(ei.min, ci.min)))
	b.f("| 9. `cp` %d MiB guest → host vs exec stdout `cat file` (throughput) | %.1f MB/s | %.1f MB/s | %s | %s | — | — | — |\n",
		c.size>>20, mbps(c.size, eo.median), mbps(c.size, co.median), speed(ratio(eo.median, co.median)), speed(ratio(eo.min, co.min)))
}

// report writes section 9.
func (copySection) report(b *report, r *results) {
	c := r.copy
	if c == nil {
		return
	}
	b.f("## 9. File copy\n\n")
	b.f("One workspace (default profile), started once. Each round (n=%d, after one uncounted round)\n", len(c.cpIn))
	b.f("moves one %d MiB random file five ways, all through the supervisor's socket and one yamux stream\n", c.size>>20)
	b.f("of the guest channel: exec of `cat > /dev/null` fed from stdin (the bare channel), exec of\n")
	b.f("`cat > /data/floor.bin` (channel + guest disk), `workspace.CopyToGuest` (tar archive → extraction\n")
	b.f("under a temporary name → rename), exec of `cat /data/big.bin` into a host file, and\n")
	b.f("`workspace.CopyFromGuest` (archive in the guest → extraction on the host). Every copy is checked\n")
	b.f("by sha256 on the host side; the first round also in the guest. Throughput in MB/s (10^6 bytes).\n\n")
	b.f("| Transfer | n | min time | median time | median MB/s | best MB/s |\n|---|--:|--:|--:|--:|--:|\n")
	row := func(name string, ds []time.Duration, size int64) {
		s := summarize(ds)
		b.f("| %s | %d | %s | %s | %.1f | %.1f |\n", name, s.n, dur(s.min), dur(s.median), mbps(size, s.median), mbps(size, s.min))
	}
	row("floor: exec stdin → `cat > /dev/null`", c.execNull, c.size)
	row("floor: exec stdin → `cat > file`", c.execIn, c.size)
	row("**`cp` host → guest**", c.cpIn, c.size)
	row("floor: exec `cat file` → host file", c.execOut, c.size)
	row("**`cp` guest → host**", c.cpOut, c.size)
	row(b.sprintf("floor: the tree's archive (%d files of 4 KiB in 20 dirs) by exec stdin → busybox `tar -x`", c.treeFiles), c.treeTar, c.treeBytes)
	row("**`cp` of that tree host → guest**", c.treeIn, c.treeBytes)
	ei, ci := summarize(c.execIn), summarize(c.cpIn)
	eo, co := summarize(c.execOut), summarize(c.cpOut)
	tr := summarize(c.treeIn)
	tt := summarize(c.treeTar)
	b.f("\ncp/exec time, medians: in %s, out %s. The tree copy ran at %.0f files/s, busybox tar at %.0f\n",
		x(ratio(ci.median, ei.median)), x(ratio(co.median, eo.median)), float64(c.treeFiles)/tr.median.Seconds(),
		float64(c.treeFiles)/tt.median.Seconds())
	b.f("files/s (cp/tar time %s).\n", x(ratio(tr.median, tt.median)))
	b.f("Both paths use the same frames (exec stdin/stdout frames and the copy data frames are 5-byte-headed\n")
	b.f("chunks of up to 32 KiB and 128 KiB); cp adds tar headers (one 512-byte block per entry plus PAX\n")
	b.f("records) and the extraction's write, metadata and rename on the receiving side.\n\n")
}
