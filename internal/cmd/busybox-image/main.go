// Command busybox-image writes a small OCI image built from the host's
// static busybox as a docker-save tarball, for `microagent image load`. The
// set-up uses it so a first run needs no registry at all.
//
//	go run ./internal/cmd/busybox-image -o busybox.tar -tag localhost/busybox:latest
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/microagent-dev/microagent/internal/imagebuild"
)

func main() {
	out := flag.String("o", "busybox.tar", "output tarball")
	tag := flag.String("tag", "localhost/busybox:latest", "image name and tag")
	flag.Parse()
	if err := write(*out, *tag); err != nil {
		fmt.Fprintln(os.Stderr, "busybox-image:", err)
		os.Exit(1)
	}
}

func write(out, tag string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("tag %q: %w", tag, err)
	}
	img, err := imagebuild.Busybox()
	if err != nil {
		return fmt.Errorf("build from %s (apt-get install busybox-static): %w", imagebuild.BusyboxPath, err)
	}
	return tarball.WriteToFile(out, ref, img)
}
