// Package buildinfo says which kontextq this is, from the build information the Go toolchain
// stamps into the binary (runtime/debug.ReadBuildInfo): the module version ("(devel)" for a
// build from a work tree, where Go 1.24+ derives one from the VCS), the VCS revision, whether
// the tree had local changes, and the Go version.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// version and revision, when set at link time, win over what the toolchain stamped: a build
// without the VCS checkout (a container build context without .git) can still say what it is:
//
//	go build -ldflags "-X github.com/kontextq/kontextq/internal/buildinfo.version=v1.2.0 \
//	  -X github.com/kontextq/kontextq/internal/buildinfo.revision=$(git rev-parse HEAD)" ./cmd/kontextq
var version, revision string

// Info describes the running binary.
type Info struct {
	Version  string // module version, or "(devel)"; "unknown" without build information
	Revision string // VCS revision (commit), "" when not built from a VCS checkout
	Time     string // VCS commit time (RFC 3339), "" when unknown
	Modified bool   // the work tree had uncommitted changes
	Go       string // Go version the binary was built with
}

// Read returns the running binary's build information.
func Read() Info {
	in := read()
	if version != "" {
		in.Version = version
	}
	if revision != "" {
		in.Revision, in.Time, in.Modified = revision, "", false
	}
	return in
}

func read() Info {
	in := Info{Version: "unknown", Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return in
	}
	if bi.Main.Version != "" {
		in.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		in.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// String is the one-line form `kontextq version` prints.
func (in Info) String() string {
	var b strings.Builder
	b.WriteString("kontextq " + in.Version)
	if in.Revision != "" {
		b.WriteString(" (revision " + in.Revision)
		if in.Time != "" {
			b.WriteString(", " + in.Time)
		}
		if in.Modified {
			b.WriteString(", modified")
		}
		b.WriteString(")")
	}
	b.WriteString(" " + in.Go)
	return b.String()
}
