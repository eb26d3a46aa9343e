package testenv

import "syscall"

// pdeathsig kills a child when the test binary dies.
func pdeathsig() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
