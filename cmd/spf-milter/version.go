package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// version and commit are set by scripts/build.sh, the documented build:
//
//	go build -ldflags "-X main.version=1.2.3 -X main.commit=<hash>"
//
// Left empty, they come from the build information Go records: the module
// version of "go install module@version", and the VCS revision of a build
// in a git checkout.
var (
	version = ""
	commit  = ""
)

// buildVersion is what "spf-milter version" prints.
type buildVersion struct {
	// version is the release version, such as 1.2.3 or 0.0.0+1a2b3c4d5e6f.
	version string
	// commit is the VCS revision, with "-dirty" when the tree had changes.
	commit string
	// goVersion is the Go release the binary was built with.
	goVersion string
}

// readVersion puts together the linker-set values (ldVersion, ldCommit)
// and the build information bi (nil when there is none).
func readVersion(ldVersion, ldCommit string, bi *debug.BuildInfo) buildVersion {
	v := buildVersion{version: ldVersion, commit: ldCommit, goVersion: runtime.Version()}
	var revision string
	var modified bool
	if bi != nil {
		v.goVersion = bi.GoVersion
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if v.commit == "" && revision != "" {
		v.commit = revision
		if modified {
			v.commit += "-dirty"
		}
	}
	if v.version == "" && bi != nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		// A module version (v1.2.3, or a pseudo-version of a VCS
		// build), written as the release tags are: without the v.
		v.version = strings.TrimPrefix(bi.Main.Version, "v")
	}
	if v.version == "" && revision != "" {
		v.version = "0.0.0+" + shortRevision(revision)
		if modified {
			v.version += ".dirty"
		}
	}
	if v.version == "" {
		// Neither the documented build nor a VCS checkout: nothing
		// says which source this is.
		v.version = "devel"
	}
	if v.commit == "" {
		v.commit = "unknown"
	}
	return v
}

// shortRevision is the abbreviated hash, as git describe writes it.
func shortRevision(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func (v buildVersion) String() string {
	return fmt.Sprintf("spf-milter %s\ncommit %s\nbuilt with %s %s/%s\n",
		v.version, v.commit, v.goVersion, runtime.GOOS, runtime.GOARCH)
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		return usageError(stderr, "version", "unexpected argument %q", args[0])
	}
	bi, _ := debug.ReadBuildInfo()
	fmt.Fprint(stdout, readVersion(version, commit, bi))
	return 0
}
