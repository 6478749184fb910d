// Package version says which build of a command is running, for --version:
// the version the Makefile or the image stamps into the binary (git
// describe), else the module version `go install` records, with the commit
// and toolchain from the build information.
package version

import (
	"cmp"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// String is the --version line of command: stamped is the version set at
// link time (-X main.version=...), "" when built without it; info is what
// debug.ReadBuildInfo returned (nil without it).
func String(command, stamped string, info *debug.BuildInfo) string {
	v := stamped
	var details []string
	if info != nil {
		if m := info.Main.Version; v == "" && m != "" && m != "(devel)" {
			v = m
		}
		settings := map[string]string{}
		for _, s := range info.Settings {
			settings[s.Key] = s.Value
		}
		if rev := settings["vcs.revision"]; rev != "" {
			c := "commit " + rev[:min(12, len(rev))]
			if t := settings["vcs.time"]; t != "" {
				c += " " + t
			}
			if settings["vcs.modified"] == "true" {
				c += ", modified"
			}
			details = append(details, c)
		}
	}
	goVersion := runtime.Version()
	if info != nil && info.GoVersion != "" {
		goVersion = info.GoVersion
	}
	details = append(details, fmt.Sprintf("%s %s/%s", goVersion, runtime.GOOS, runtime.GOARCH))
	return fmt.Sprintf("%s %s (%s)", command, cmp.Or(v, "devel"), strings.Join(details, "; "))
}

// Of is String with the running binary's build information.
func Of(command, stamped string) string {
	info, _ := debug.ReadBuildInfo()
	return String(command, stamped, info)
}
