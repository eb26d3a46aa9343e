package proc_test

import (
	"errors"
	"os/exec"
	"testing"
	"time"

	"github.com/microagent-dev/microagent/internal/proc"
	"github.com/microagent-dev/microagent/internal/testenv"
)

func TestProcIdentity(t *testing.T) {
	me := proc.Self()
	if !me.Alive() || me.Start == 0 || me.BootID == "" {
		t.Fatalf("self: %+v", me)
	}
	if (&proc.ID{PID: me.PID, Start: me.Start, BootID: "other-boot"}).Alive() {
		t.Fatal("a process of another boot is alive")
	}
	d := testenv.DeadProcess(t)
	if d.Alive() {
		t.Fatal("dead process alive")
	}
	if _, err := proc.Open(d); !errors.Is(err, proc.ErrGone) {
		t.Fatalf("proc.Open(dead): %v", err)
	}
	cmd := exec.Command("sleep", "10")
	cmd.Start()
	defer cmd.Wait()
	id, _ := proc.Identify(cmd.Process.Pid)
	if err := proc.KillAndWait(&id, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if id.Alive() {
		t.Fatal("killAndWait left it alive")
	}
}
