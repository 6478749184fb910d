package shipping

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const root = "../.."

// shipped is what README names as the commands: make build and the image
// build these and nothing else.
var shipped = []string{"./cmd/worker", "./cmd/enqueue", "./cmd/demotarget"}

func makeCmd(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Fatalf("make is needed (CI installs it): %v", err)
	}
	cmd := exec.Command("make", append([]string{"-C", root}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// make build stamps the version --version prints, and builds only the
// shipped commands, as the Dockerfile does.
func TestBuildShipsTheCommandsStamped(t *testing.T) {
	bin := t.TempDir()
	out, err := makeCmd(t, nil, "build", "BIN="+bin, "VERSION=v0.0.0-test")
	if err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	entries, _ := os.ReadDir(bin)
	var built []string
	for _, e := range entries {
		built = append(built, "./cmd/"+e.Name())
	}
	slices.Sort(built)
	want := slices.Sorted(slices.Values(shipped))
	if !slices.Equal(built, want) {
		t.Errorf("make build built %v, want %v", built, want)
	}
	for _, name := range []string{"worker", "enqueue"} {
		v, err := exec.Command(filepath.Join(bin, name), "--version").Output()
		if err != nil || !strings.HasPrefix(string(v), name+" v0.0.0-test (") {
			t.Errorf("%s --version: %q, %v", name, v, err)
		}
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	build := regexp.MustCompile(`(?m)^RUN .*go build .*-o /out/ (.*)$`).FindStringSubmatch(string(dockerfile))
	if build == nil || !slices.Equal(slices.Sorted(slices.Values(strings.Fields(build[1]))), want) || !strings.Contains(build[0], "main.buildVersion=${VERSION}") {
		t.Errorf("the image's build line %q does not build %v stamped with VERSION", build, want)
	}
}

// Without a Docker engine, make up says so and what to do instead, and
// starts nothing. A docker that fails stands for the missing engine.
func TestUpWithoutDockerEngine(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "docker"), []byte("#!/bin/sh\necho \"$@\" >> "+filepath.Join(dir, "calls")+"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := makeCmd(t, []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}, "up")
	if err == nil || !strings.Contains(out, "make up needs a running Docker engine") || !strings.Contains(out, "make compose-check") {
		t.Errorf("make up without an engine: %v\n%s", err, out)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if strings.TrimSpace(string(calls)) != "info" {
		t.Errorf("docker was called with %q; want only info", calls)
	}
}

// compose-check never installs anything into the user's home (it used to
// build the compose plugin into ~/.docker/cli-plugins).
func TestComposeCheckInstallsNothing(t *testing.T) {
	script, err := os.ReadFile(filepath.Join(root, "scripts", "compose-config.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"$HOME", "~/", "cli-plugins", "go install", "go build"} {
		if strings.Contains(string(script), bad) {
			t.Errorf("scripts/compose-config.sh mentions %q", bad)
		}
	}
	out, err := makeCmd(t, nil, "-n", "compose-check")
	if err != nil || !strings.Contains(out, "scripts/compose-config.sh") {
		t.Errorf("make -n compose-check: %v\n%s", err, out)
	}
}
