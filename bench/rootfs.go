package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// rootfsSection is section 4: root disk builds from one large tar.
type rootfsSection struct{}

func (rootfsSection) name() string { return "rootfs" }

func (rootfsSection) run(ctx context.Context, e *env) error {
	o, r, tmp := e.opts, e.r, e.tmp
	mkfs := lookTool("mkfs.ext4")
	if mkfs == "" {
		return fmt.Errorf("mkfs.ext4 not found: install it with `apt-get install --no-install-recommends e2fsprogs`")
	}
	tarPath := filepath.Join(tmp, "layer.tar")
	logf("writing a %d MB tar of %s", o.rootfsMB, o.rootfsSrc)
	size, files, err := writeTreeTar(o.rootfsSrc, tarPath, o.rootfsMB*1_000_000)
	if err != nil {
		return err
	}
	r.tarSize, r.tarFiles = size, int64(files)
	layer, err := newFileLayer(tarPath)
	if err != nil {
		return err
	}
	in := &rootfsInput{tarPath: tarPath, tarSize: size, layer: layer, dir: filepath.Join(tmp, "rootfs-bench"), mkfs: mkfs}
	if err := os.Mkdir(in.dir, 0o700); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		logf("root disk builds, round %d/%d", i+1, o.n)
		r.sampleLoad()
		rr, err := in.measure(ctx)
		if err != nil {
			return err
		}
		r.rootfs = append(r.rootfs, rr)
	}
	os.Remove(tarPath)
	return nil
}

// summary adds section 4 to the summary table.
func (rootfsSection) summary(b *report, r *results) {
	build := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.build }))
	classic := summarize(collect(r.rootfs, func(x *rootfsRound) time.Duration { return x.untar + x.mkfs }))
	buildMBs, classicMBs := mbps(r.tarSize, build.median), mbps(r.tarSize, classic.median)
	b.f("| 4. root disk build throughput vs `tar -x` + `mkfs.ext4 -d` | %.0f MB/s | %.0f MB/s | %s | %s | — | — | — |\n",
		classicMBs, buildMBs, speed(buildMBs/classicMBs), speed(ratio(classic.min, build.min)))
}
