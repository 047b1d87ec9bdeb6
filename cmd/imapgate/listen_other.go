//go:build !linux

package main

import "syscall"

// deferAccept is TCP_DEFER_ACCEPT where there is one; elsewhere nothing.
func deferAccept(network, address string, c syscall.RawConn) error { return nil }
