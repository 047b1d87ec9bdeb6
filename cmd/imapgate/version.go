package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// buildInfo is what the binary knows about its own build: the module
// version the go command stamped (a tag, or a pseudo-version made from the
// commit, with "+dirty" for uncommitted changes), the VCS revision and the
// Go release. Either of the first two is "unknown" when the build had no
// VCS information (a build outside a git checkout, or with -buildvcs=false).
type buildInfo struct {
	Version   string
	Revision  string
	Modified  bool
	GoVersion string
}

// readBuildInfo reads buildInfo from the binary's embedded build information.
func readBuildInfo() buildInfo {
	bi := buildInfo{Version: "unknown", Revision: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return bi
	}
	// "(devel)" is what the go command writes when it knows no version.
	if v := info.Main.Version; v != "" && v != "(devel)" {
		bi.Version = v
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			bi.Revision = s.Value
		case "vcs.modified":
			bi.Modified = s.Value == "true"
		}
	}
	return bi
}

// String is the line `imapgate -version` prints.
func (b buildInfo) String() string {
	rev := b.Revision
	if b.Modified {
		rev += " (modified)"
	}
	return fmt.Sprintf("imapgate %s revision %s %s %s/%s", b.Version, rev, b.GoVersion, runtime.GOOS, runtime.GOARCH)
}
