package main

import (
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestReadmeSettingsTable keeps the README's settings table true: every
// setting has a row, every variable a row names is a setting, and each
// default the table gives in backticks is the one -print-config prints;
// "unset", "required" and "—" say it is empty (other words, "system
// roots", describe what an empty or derived value means, unchecked).
func TestReadmeSettingsTable(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Settings\n")
	section, _, _ = strings.Cut(section, "\n## ")
	defaults := make(map[string]string)
	v := reflect.ValueOf(defaultConfig())
	for i := range v.NumField() {
		defaults[envPrefix+envName(v.Type().Field(i))] = formatSetting(v.Field(i).Interface())
	}
	names := regexp.MustCompile("`(" + envPrefix + "[A-Z0-9_]+)`")
	quoted := regexp.MustCompile("^`([^`]*)`$")
	var rows []string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| `"+envPrefix) {
			continue
		}
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "\x00"), "|")
		if len(cells) != 5 {
			t.Errorf("README row of %d cells, want 3: %s", len(cells)-2, line)
			continue
		}
		var vars []string
		for _, m := range names.FindAllStringSubmatch(cells[1], -1) {
			vars = append(vars, m[1])
		}
		rows = append(rows, vars...)
		cell := strings.TrimSpace(cells[3])
		given := strings.Split(cell, ", ")
		if len(given) != len(vars) {
			if quoted.MatchString(cell) || len(given) != 1 {
				t.Errorf("README row of %v: cannot tell which default %q is whose", vars, cell)
				continue
			}
			given = slices.Repeat(given, len(vars)) // "unset" for all of them
		}
		for i, name := range vars {
			want, ok := defaults[name]
			if !ok {
				t.Errorf("README row of %s: no such setting", name)
				continue
			}
			got := ""
			if m := quoted.FindStringSubmatch(given[i]); m != nil {
				got = m[1]
			} else if !slices.Contains([]string{"unset", "required", "—"}, given[i]) {
				continue
			}
			if got != want {
				t.Errorf("README: %s defaults to %q, says %q", name, want, given[i])
			}
		}
	}
	for _, name := range settingNames() {
		if !slices.Contains(rows, envPrefix+name) {
			t.Errorf("README's settings table has no row for %s%s", envPrefix, name)
		}
	}
}
