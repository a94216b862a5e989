package main

import "syscall"

// childProcAttr makes the do-nothing webhook die with this program.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
