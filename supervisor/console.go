package supervisor

import (
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/microagent-dev/microagent/wsdir"
)

// The guest writes its serial console (anything its root sends to
// /dev/console) into logs/console.log through QEMU, as fast as the
// emulated UART goes. These bound the file.
const (
	// consoleCap is the size past which the log is rotated: enough for
	// many boots' worth of kernel and agent messages.
	consoleCap = 8 << 20
	// consoleCheck is how often the size is checked; the log can exceed
	// the cap by what the guest writes in that time (the UART manages a
	// few MB a second at most).
	consoleCheck = time.Second
)

// consoleRotated is the one rotation kept, beside the console log.
func consoleRotated(w *wsdir.Dir) string { return w.ConsoleLog() + ".1" }

// capConsole keeps the console log of this boot under consoleCap until
// stop is closed: past it, the log is copied to console.log.1 (replacing
// the one before) and truncated. QEMU opens it O_APPEND, so it carries on
// at the new end. This is logrotate's copytruncate: what the guest writes
// between the copy's end and the truncation (microseconds) is lost, which
// a note in the log says.
func capConsole(w *wsdir.Dir, lg *log.Logger, stop <-chan struct{}) {
	t := time.NewTicker(consoleCheck)
	defer t.Stop()
	rotations := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		fi, err := os.Stat(w.ConsoleLog())
		if err != nil || fi.Size() <= consoleCap {
			continue
		}
		if err := rotateConsole(w); err != nil {
			lg.Printf("console log: rotating %s: %v", w.ConsoleLog(), err)
			continue
		}
		rotations++
		if rotations == 1 || rotations%100 == 0 {
			lg.Printf("console log: over %d MiB, rotated (%d times this boot): the guest writes a lot to its console", consoleCap>>20, rotations)
		}
	}
}

func rotateConsole(w *wsdir.Dir) error {
	src, err := os.OpenFile(w.ConsoleLog(), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := consoleRotated(w) + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, wsdir.FilePerm)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, consoleRotated(w))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := src.Truncate(0); err != nil {
		return err
	}
	_, err = fmt.Fprintf(src, "microagent: console log rotated at %s: the earlier output is in %s (a few bytes written during the rotation may be lost)\n",
		time.Now().UTC().Format(time.RFC3339), consoleRotated(w))
	return err
}
