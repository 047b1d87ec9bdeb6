//go:build unix

package backend

import (
	"os"
	"syscall"
)

// fileID returns the device and inode of fi, which change when a file is
// replaced by rename even if its time and size do not.
func fileID(fi os.FileInfo) (dev, ino uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // the field types vary by platform
	}
	return 0, 0
}
