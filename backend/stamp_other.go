//go:build !unix

package backend

import "os"

// fileID returns zeros where the platform reports no inode; Watch then
// relies on modification time and size alone.
func fileID(os.FileInfo) (dev, ino uint64) { return 0, 0 }
