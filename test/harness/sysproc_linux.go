package harness

import "syscall"

// sysProcAttr makes children die with the test process, so an interrupted
// run leaves no webhook or controller manager behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
