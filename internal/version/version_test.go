package version

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Path: "github.com/jetpost/jetpost", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.time", Value: "2026-12-05T19:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	cases := []struct {
		stamped string
		info    *debug.BuildInfo
		want    string
	}{
		{"v1.5.0-3-gabc", info, "worker v1.5.0-3-gabc (commit 0123456789ab 2026-12-05T19:00:00Z, modified; go1.26.0 "},
		{"", info, "worker v1.4.0 (commit 0123456789ab"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "worker devel (go"},
		{"", nil, "worker devel (go"},
	}
	for _, tc := range cases {
		if got := String("worker", tc.stamped, tc.info); !strings.HasPrefix(got, tc.want) {
			t.Errorf("String(%q) = %q, want it to start %q", tc.stamped, got, tc.want)
		}
	}
}
