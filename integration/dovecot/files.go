// Package dovecot holds the one configuration of the integration tests'
// Dovecot backends: the dovecot.conf template and the passwd-files of the two
// test mail hosts. Process mode, container mode and `make demo` all render
// these same files; the Dockerfile and build-image.sh beside them describe the
// image that container mode runs.
package dovecot

import (
	"embed"
	"fmt"
	"strings"
)

// ConfigTemplate is dovecot.conf as a text/template; see the comment at its
// top for the fields it expects.
//
//go:embed dovecot.conf.tmpl
var ConfigTemplate string

//go:embed passwd.*
var passwdFiles embed.FS

// Hosts names the test mail hosts that have a passwd-file, in order.
var Hosts = []string{"mailhost01", "mailhost02"}

// Passwd returns the passwd-file of the test mail host named host.
func Passwd(host string) ([]byte, error) {
	return passwdFiles.ReadFile("passwd." + host)
}

// Account is one line of a passwd-file: a user and the cleartext password
// Dovecot accepts for it.
type Account struct {
	User     string
	Password string
}

// Accounts parses the passwd-file of host. Passwords are stored as {PLAIN}
// so that the tests can log in with them; they may contain anything but ':'
// and line breaks.
func Accounts(host string) ([]Account, error) {
	b, err := Passwd(host)
	if err != nil {
		return nil, err
	}
	var accounts []Account
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Split(line, ":")
		if len(fields) < 2 {
			return nil, fmt.Errorf("passwd.%s line %d: want user:{PLAIN}password", host, i+1)
		}
		pass, ok := strings.CutPrefix(fields[1], "{PLAIN}")
		if !ok {
			return nil, fmt.Errorf("passwd.%s line %d: want user:{PLAIN}password", host, i+1)
		}
		accounts = append(accounts, Account{User: fields[0], Password: pass})
	}
	return accounts, nil
}
