package microvm

import (
	"fmt"
	"io"
	"os"
	"time"
)

// The guest writes its serial console (anything its root sends to
// /dev/console) into the serial log through the VMM, as fast as the
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

// RotatedSerialLog is the one rotation CapSerialLog keeps, beside the log.
func RotatedSerialLog(path string) string { return path + ".1" }

// CapSerialLog keeps the serial log at path under consoleCap until stop is
// closed: past it, the log is copied to RotatedSerialLog (replacing the one
// before) and truncated. The VMM opens it O_APPEND, so it carries on at the
// new end. This is logrotate's copytruncate: what the guest writes between
// the copy's end and the truncation (microseconds) is lost, which a note in
// the log says. logf (may be nil) hears of rotations and failures.
func CapSerialLog(path string, logf func(format string, args ...any), stop <-chan struct{}) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	t := time.NewTicker(consoleCheck)
	defer t.Stop()
	rotations := 0
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Size() <= consoleCap {
			continue
		}
		if err := rotateSerial(path); err != nil {
			logf("console log: rotating %s: %v", path, err)
			continue
		}
		rotations++
		if rotations == 1 || rotations%100 == 0 {
			logf("console log: over %d MiB, rotated (%d times this boot): the guest writes a lot to its console", consoleCap>>20, rotations)
		}
	}
}

func rotateSerial(path string) error {
	src, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := RotatedSerialLog(path) + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, RotatedSerialLog(path))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := src.Truncate(0); err != nil {
		return err
	}
	_, err = fmt.Fprintf(src, "microagent: console log rotated at %s: the earlier output is in %s (a few bytes written during the rotation may be lost)\n",
		time.Now().UTC().Format(time.RFC3339), RotatedSerialLog(path))
	return err
}
