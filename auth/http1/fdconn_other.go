//go:build !linux

package http1

import "net"

// listenFD returns ln as the Server accepts on it: elsewhere than Linux,
// ln itself.
func listenFD(ln net.Listener) net.Listener { return ln }
