package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// unitCopy writes the unit file into a temporary directory as
// imapgate.service, with ExecStart pointed at bin: systemd-analyze checks
// that the command exists, and the test must not install anything into
// /usr/local/bin.
func unitCopy(t *testing.T, bin string) string {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	const exec = "ExecStart=/usr/local/bin/imapgate\n"
	if !strings.Contains(string(b), exec) {
		t.Fatalf("%s has no line %q (the README's install steps and the Debian package rely on it)", unitFile, strings.TrimSpace(exec))
	}
	path := filepath.Join(t.TempDir(), "imapgate.service")
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), exec, "ExecStart="+bin+"\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestSystemdUnitVerifies runs `systemd-analyze verify` on the unit file.
// It needs no running systemd: verify loads the unit offline. It exits 0
// even for an unknown key or a value it cannot parse (it prints a warning
// and ignores the line), so any output fails the test.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := requireCommand(t, "systemd-analyze", "systemd")
	path := unitCopy(t, imapgateBinary(t))
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitFile, err, out)
	}
}

// TestSystemdUnitSecurity runs `systemd-analyze security --offline=yes`,
// which scores the unit's sandboxing without a running systemd, and checks
// that the README states the score measured.
func TestSystemdUnitSecurity(t *testing.T) {
	analyze := requireCommand(t, "systemd-analyze", "systemd")
	path := unitCopy(t, imapgateBinary(t))
	out, err := exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for imapgate\.service: ([0-9.]+) `).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure level:\n%s", out)
	}
	score := string(m[1])
	for _, f := range []string{"../../README.md", unitFile} {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if want := "systemd-analyze security imapgate.service`: " + score; !strings.Contains(string(doc), want) {
			t.Errorf("%s does not say %q (the score measured)", f, want)
		}
	}
}
