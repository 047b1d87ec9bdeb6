package harness

import (
	"bytes"
	"text/template"

	"github.com/imapgate/imapgate/integration/dovecot"
)

// ComposeDovecotDir is where the compose file's Dovecots keep what the
// template calls .Dir: dovecot.conf, passwd (both mounted read-only),
// server.crt/key (the image's self-signed certificate), mail/ and the log.
const ComposeDovecotDir = "/srv/imapgate-dovecot"

// ComposeDovecotConfigPath is the committed rendering, relative to the
// module root; TestComposeDovecotConfig keeps it equal to ComposeDovecotConfig.
const ComposeDovecotConfigPath = "integration/container/dovecot/dovecot.conf"

// ComposeDovecotConfig renders integration/dovecot/dovecot.conf.tmpl, the
// integration suite's one Dovecot configuration, for docker-compose.yml's
// Dovecots: the standard listeners (143, 993, 110, 995) on every address of
// the container, paths under ComposeDovecotDir. Both Dovecots use it; each
// mounts its own passwd-file.
func ComposeDovecotConfig() ([]byte, error) {
	tmpl, err := template.New("dovecot.conf").Parse(dovecot.ConfigTemplate)
	if err != nil {
		return nil, err
	}
	// The same fields as Backend.render gives the template (a field the
	// template gains is an error here until added: TestComposeDovecotConfig).
	data := struct {
		Name, Dir, BaseDir string
		Listeners          []Listener
		AuthPenalty        bool
		ContainerMode      bool
	}{Name: "compose", Dir: ComposeDovecotDir, BaseDir: "/run/dovecot", ContainerMode: true}
	data.Listeners = append(data.Listeners, standardListeners("*")...)
	var buf bytes.Buffer
	buf.WriteString("# GENERATED from integration/dovecot/dovecot.conf.tmpl for docker-compose.yml; do not edit.\n" +
		"# Regenerate: go test ./integration/ -run TestComposeDovecotConfig -update\n")
	if err := tmpl.Execute(&buf, data); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
