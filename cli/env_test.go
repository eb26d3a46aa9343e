package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/testenv"
	"github.com/microagent-dev/microagent/vmm/usernet"
	"github.com/microagent-dev/microagent/workspace"
)

// netHelper is the network helper's process name (usernet.BinaryName).
const netHelper = usernet.BinaryName

// descendants returns the processes below pid, by name: "qemu" and
// "passt" for any name starting so (qemu-system-x86, passt.avx2), the
// name itself otherwise.
func descendants(pid int) map[string][]int {
	all := testenv.Processes()
	out := map[string][]int{}
	below := map[int]bool{pid: true}
	for changed := true; changed; {
		changed = false
		for _, p := range all {
			if below[p.PPID] && !below[p.PID] {
				below[p.PID], changed = true, true
				name := p.Comm
				for _, pre := range []string{"qemu", "passt"} {
					if strings.HasPrefix(name, pre) {
						name = pre
					}
				}
				out[name] = append(out[name], p.PID)
			}
		}
	}
	return out
}

// assertCleanEnviron fails when the process's exec-time environment (what
// anyone who can read /proc/PID/environ sees) holds any of values.
func assertCleanEnviron(t *testing.T, what string, pid int, values ...string) {
	t.Helper()
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("%s (pid %d): %v", what, pid, err)
	}
	for _, v := range values {
		if bytes.Contains(env, []byte(v)) {
			t.Errorf("%s (pid %d) has %q in its environment: %q", what, pid, v, bytes.ReplaceAll(env, []byte{0}, []byte{' '}))
		}
	}
	t.Logf("%s (pid %d) environment: %q", what, pid, bytes.ReplaceAll(env, []byte{0}, []byte{' '}))
}

// TestChildEnvironments (issue #11 item 7): with an env: secret, a helper
// secret that reads its own variable, and VAULT_TOKEN set, neither the
// supervisor nor QEMU nor the network helper has any of them in
// /proc/PID/environ, for a workspace and for a one-shot run; the secrets
// still resolve.
func TestChildEnvironments(t *testing.T) {
	w := secretsCLI(t)
	value := leakValue(t, "envvalue")
	token := leakValue(t, "vaulttoken")
	helperVar := leakValue(t, "helpervar")
	helper := filepath.Join(t.TempDir(), "helper")
	if err := os.WriteFile(helper, []byte("#!/bin/sh\nprintf '%s' \"$HELPER_SAYS\"\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ENV_SECRET", value)
	t.Setenv("VAULT_TOKEN", token)
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("HELPER_SAYS", helperVar)
	t.Setenv("MICROAGENT_SECRET_HELPER", helper)
	forbidden := []string{value, token, helperVar, "VAULT_TOKEN=", "VAULT_ADDR=", "MICROAGENT_SECRET_HELPER="}

	w.want(t, 0, "Created", "create", "env", "--image", specAlpine, "--profile", "tiny", "--disk-size", "300M",
		"--secret", "S=env:ENV_SECRET", "--secret", "H=helper:x")
	w.want(t, 0, "", "start", "env")
	if got := w.want(t, 0, "", "exec", "env", "--", "cat", "/run/secrets/S", "/run/secrets/H"); got != value+helperVar {
		t.Fatalf("the secrets in the guest: %q", got)
	}
	var inf workspace.Info
	if err := json.Unmarshal([]byte(w.want(t, 0, "", "--json", "status", "env")), &inf); err != nil || inf.SupervisorPID == 0 || inf.VMMPID == 0 {
		t.Fatalf("status: %+v %v", inf, err)
	}
	assertCleanEnviron(t, "supervisor", inf.SupervisorPID, forbidden...)
	assertCleanEnviron(t, "QEMU", inf.VMMPID, forbidden...)
	if nets := descendants(inf.SupervisorPID)[netHelper]; len(nets) > 0 {
		assertCleanEnviron(t, "the network helper", nets[0], forbidden...)
	} else {
		t.Errorf("the workspace has no network helper process: %v", descendants(inf.SupervisorPID))
	}
	w.want(t, 0, "Halted env", "halt", "env")

	// A one-shot run: its own process is the user's, its children are not.
	run := w.cmd("run", "--profile", "tiny", "--secret", "S=env:ENV_SECRET", specAlpine, "sh", "-c", "cat /run/secrets/S >/dev/null && sleep 60")
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { run.Process.Kill(); run.Wait() }()
	var qemu, nets []int
	deadline := time.Now().Add(60 * time.Second)
	for len(qemu) == 0 || len(nets) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("run: no QEMU (%v) or network helper (%v) below it; output %q", qemu, nets, out.String())
		}
		time.Sleep(100 * time.Millisecond)
		d := descendants(run.Process.Pid)
		qemu, nets = d["qemu"], d[netHelper]
	}
	assertCleanEnviron(t, "run's QEMU", qemu[0], forbidden...)
	assertCleanEnviron(t, "run's network helper", nets[0], forbidden...)
}
