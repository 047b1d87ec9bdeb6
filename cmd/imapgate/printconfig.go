package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-envconfig"
)

// Where a setting's value comes from, as -print-config says it.
const (
	sourceDefault     = "default"
	sourceEnvironment = "environment"
	sourceFile        = "file" // a secret read from the file its _FILE names
)

// Redaction marks: a whole secret, and a URL's password (as Go's
// url.URL.Redacted and the directories' errors write it).
const (
	redactedSecret   = "<redacted>"
	redactedPassword = "xxxxx"
)

// seenLookuper records the variables a read of the settings found set,
// so that each setting's source is what the read itself saw.
type seenLookuper struct {
	envconfig.Lookuper
	set map[string]string
}

// Lookup looks key up and records it when set.
func (l *seenLookuper) Lookup(key string) (string, bool) {
	v, ok := l.Lookuper.Lookup(key)
	if ok {
		l.set[key] = v
	}
	return v, ok
}

// runPrintConfig is -print-config: it reads and checks the settings
// through lookuper as a start does and prints them to out as an
// environment file (writeEnvFile). Settings a start would refuse are
// printed to errOut as a start prints them, with exitConfig.
func runPrintConfig(ctx context.Context, lookuper envconfig.Lookuper, out, errOut io.Writer) int {
	seen := &seenLookuper{Lookuper: lookuper, set: make(map[string]string)}
	s, err := loadSettings(ctx, seen, nil)
	defer s.closeDirectories()
	if err != nil {
		fmt.Fprintf(errOut, "imapgate: %s\n", strings.ReplaceAll(err.Error(), "\n", "\nimapgate: "))
		return exitConfig
	}
	writeEnvFile(out, s.config, seen.set)
	return 0
}

// writeEnvFile writes every setting of c, in the order of config's
// fields, as VARIABLE=value below a "# source" comment line: default,
// environment, or file for a secret read from a _FILE (printed as that
// _FILE variable, so that the file read back is the same setting).
// Secrets are redacted (redactSecret). Values are quoted by envQuote:
// systemd's EnvironmentFile= and POSIX sh (set -a; . FILE) read the
// result back as the same settings, secrets aside.
func writeEnvFile(w io.Writer, c config, set map[string]string) {
	fmt.Fprintf(w, "# imapgate -print-config: the settings in effect, each below its source\n"+
		"# (%s, %s, %s); secrets redacted as %s or a URL's password as %s.\n",
		sourceDefault, sourceEnvironment, sourceFile, redactedSecret, redactedPassword)
	v := reflect.ValueOf(c)
	for i := range v.NumField() {
		name := envName(v.Type().Field(i))
		key := envPrefix + name
		value := formatSetting(v.Field(i).Interface())
		secret := slices.Contains(secretSettings, name)
		source := sourceDefault
		if _, ok := set[key]; ok {
			source = sourceEnvironment
		}
		if path, ok := set[key+"_FILE"]; secret && ok {
			source = sourceFile
			if shown := redactSecret(name, value); shown != redactedSecret {
				source += ", holding " + shown
			}
			key, value = key+"_FILE", path
		} else if secret && value != "" {
			value = redactSecret(name, value)
			source += ", redacted"
		}
		fmt.Fprintf(w, "# %s\n%s=%s\n", source, key, envQuote(value))
	}
}

// formatSetting writes a setting's value the way the settings are read.
func formatSetting(v any) string {
	switch v := v.(type) {
	case time.Duration:
		return formatDuration(v)
	case networks:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	}
	return fmt.Sprint(v)
}

// formatDuration is d as time.ParseDuration reads it, without the zero
// units time.Duration.String ends with: 5m, not 5m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// String returns the list as EnvDecode reads it, a network of one as its
// bare address.
func (n networks) String() string {
	items := make([]string, len(n))
	for i, p := range n {
		if p.IsSingleIP() {
			items[i] = p.Addr().String()
		} else {
			items[i] = p.String()
		}
	}
	return strings.Join(items, ",")
}

// redactSecret is what may be shown of the secret setting name's value.
// A URL (a setting named ..._URL) keeps all but its password and the
// query parameters named like one, which become xxxxx, so that the
// operator still sees which server and database it names; anything else,
// or a URL in which a secret part shows up elsewhere, is <redacted> whole.
func redactSecret(name, value string) string {
	if value == "" || !strings.HasSuffix(name, "_URL") {
		return redactedSecret
	}
	u, err := url.Parse(value)
	if err != nil || u.Scheme == "" {
		return redactedSecret
	}
	var secrets []string
	if pw, ok := u.User.Password(); ok {
		secrets = append(secrets, pw)
		u.User = url.UserPassword(u.User.Username(), redactedPassword)
	}
	q := u.Query()
	for k, vs := range q {
		if strings.Contains(strings.ToLower(k), "pass") {
			secrets = append(secrets, vs...)
			q[k] = []string{redactedPassword}
			u.RawQuery = q.Encode()
		}
	}
	shown := u.String()
	for _, s := range secrets {
		if s == redactedPassword {
			continue // printed before, and read back
		}
		for _, form := range []string{s, url.QueryEscape(s), url.PathEscape(s)} {
			if form != "" && strings.Contains(shown, form) {
				return redactedSecret
			}
		}
	}
	return shown
}

// envQuote quotes v for an environment file that systemd's
// EnvironmentFile= and POSIX sh read alike: bare when no character of it
// is special to either; in single quotes, inside which nothing is special
// to either, when it holds no single quote; else in double quotes with
// \ " ` $ escaped by a backslash, which both take back out there.
func envQuote(v string) string {
	plain := func(r rune) bool {
		return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("-_./:,=@+%", r)
	}
	switch {
	case strings.IndexFunc(v, func(r rune) bool { return !plain(r) }) < 0:
		return v
	case !strings.Contains(v, "'"):
		return "'" + v + "'"
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", "$", `\$`).Replace(v) + `"`
}
