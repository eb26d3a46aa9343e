package qemu

import (
	"context"
	"fmt"
	"strings"

	"github.com/microagent-dev/microagent/vmm"
)

var _ vmm.Snapshotter = (*Machine)(nil)

// Pause implements vmm.Snapshotter (QMP "stop").
func (m *Machine) Pause(ctx context.Context) error {
	if err := m.QMP(ctx, "stop", nil, nil); err != nil {
		return fmt.Errorf("qemu: pause: %w", err)
	}
	return nil
}

// Resume implements vmm.Snapshotter (QMP "cont").
func (m *Machine) Resume(ctx context.Context) error {
	if err := m.QMP(ctx, "cont", nil, nil); err != nil {
		return fmt.Errorf("qemu: resume: %w", err)
	}
	return nil
}

// Paused implements vmm.Snapshotter.
func (m *Machine) Paused(ctx context.Context) (bool, error) {
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := m.QMP(ctx, "query-status", nil, &st); err != nil {
		return false, fmt.Errorf("qemu: query-status: %w", err)
	}
	return !st.Running, nil
}

// capabilities turns on migration events (so completion is an event, not a
// poll) and sets x-ignore-shared: shared RAM (a file both QEMUs map) stays
// out of the stream.
func (m *Machine) capabilities(ctx context.Context, ignoreShared bool) error {
	caps := map[string]any{"capabilities": []map[string]any{
		{"capability": "events", "state": true},
		{"capability": "x-ignore-shared", "state": ignoreShared},
	}}
	if err := m.QMP(ctx, "migrate-set-capabilities", caps, nil); err != nil {
		return fmt.Errorf("qemu: migration capabilities: %w", err)
	}
	return nil
}

// SaveState implements vmm.Snapshotter. QEMU 7.2 has no file: migration
// URI, so the stream goes through "exec:cat". Migration completes with the
// block devices flushed and the guest still paused.
func (m *Machine) SaveState(ctx context.Context, path string) error {
	paused, err := m.Paused(ctx)
	if err != nil {
		return err
	}
	if !paused {
		return fmt.Errorf("qemu: save state: the machine is running: pause it first")
	}
	if err := m.capabilities(ctx, true); err != nil {
		return err
	}
	return m.migrate(ctx, "migrate", "exec:cat > "+shellQuote(path))
}

// LoadState implements vmm.Snapshotter.
func (m *Machine) LoadState(ctx context.Context, path string) error {
	// The stream carries the saving side's capabilities, which must match:
	// SaveState always sets x-ignore-shared.
	if err := m.capabilities(ctx, true); err != nil {
		return err
	}
	if err := m.migrate(ctx, "migrate-incoming", "exec:cat "+shellQuote(path)); err != nil {
		return err
	}
	// Loading leaves the guest running when QEMU autostarts; the caller
	// decides when it runs.
	return m.Pause(ctx)
}

// migrate runs a migration command and waits for its MIGRATION event.
func (m *Machine) migrate(ctx context.Context, cmd, uri string) error {
	events, stop := m.Events()
	defer stop()
	if err := m.QMP(ctx, cmd, map[string]string{"uri": uri}, nil); err != nil {
		return fmt.Errorf("qemu: %s: %w", cmd, err)
	}
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return fmt.Errorf("qemu: %s: the monitor closed: %s", cmd, m.migrationError(ctx))
			}
			if ev.Event != "MIGRATION" {
				continue
			}
			switch st, _ := ev.Data["status"].(string); st {
			case "completed":
				return nil
			case "failed", "cancelled":
				return fmt.Errorf("qemu: %s %s: %s", cmd, st, m.migrationError(ctx))
			}
		case <-m.Done():
			return fmt.Errorf("qemu: %s: QEMU exited: %v", cmd, m.Wait())
		case <-ctx.Done():
			if cmd == "migrate" {
				m.QMP(context.Background(), "migrate_cancel", nil, nil)
			}
			return fmt.Errorf("qemu: %s: %w", cmd, ctx.Err())
		}
	}
}

// migrationError is QEMU's own account of a failed migration, with its
// stderr (a failed load reports there).
func (m *Machine) migrationError(ctx context.Context) string {
	var info struct {
		ErrorDesc string `json:"error-desc"`
	}
	m.QMP(ctx, "query-migrate", nil, &info)
	why := info.ErrorDesc
	if tail := strings.TrimSpace(m.stderr.lastLines(stderrLines)); tail != "" {
		why = strings.TrimSpace(why + "\n" + tail)
	}
	if why == "" {
		why = "QEMU gave no reason"
	}
	return why
}

// shellQuote quotes s for /bin/sh, which runs exec: migration URIs.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
