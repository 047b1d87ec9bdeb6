package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// slapdConf is slapd.conf for the test directory: the schemas
// inetOrgPerson and mailHost need (mailHost and inetLocalMailRecipient are
// in OpenLDAP's misc.schema), one mdb database, and access only for bound
// users, as a directory holding mail routing would be set up.
const slapdConf = `# slapd for imapgate's integration tests, written by the harness.
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/misc.schema
pidfile {{dir}}/slapd.pid
argsfile {{dir}}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {{dir}}/server.crt
TLSCertificateKeyFile {{dir}}/server.key

database mdb
suffix "dc=example,dc=org"
rootdn "cn=admin,dc=example,dc=org"
directory {{dir}}/data
access to attrs=userPassword by anonymous auth by * none
access to * by users read by * none
`

// slapdLDIF returns the directory's entries: the service account
// imapgate binds as, and a person per DirectoryUsers entry, each an
// inetOrgPerson with the inetLocalMailRecipient class for mailHost.
func slapdLDIF() string {
	var b strings.Builder
	b.WriteString(`dn: dc=example,dc=org
objectClass: dcObject
objectClass: organization
o: imapgate tests
dc: example

dn: ` + LDAPBindDN + `
objectClass: person
objectClass: simpleSecurityObject
cn: imapgate
sn: imapgate
userPassword: ` + LDAPBindPassword + `

dn: ` + LDAPBaseDN + `
objectClass: organizationalUnit
ou: people
`)
	for _, u := range DirectoryUsers {
		fmt.Fprintf(&b, `
dn: uid=%s,%s
objectClass: inetOrgPerson
objectClass: inetLocalMailRecipient
uid: %s
cn: %s
sn: %s
mail: %s@example.org
mailHost: %s
`, u.User, LDAPBaseDN, u.User, u.User, u.User, u.User, u.Backend)
	}
	return b.String()
}

// StartSlapd loads the test entries with slapadd into a new mdb database
// and starts slapd on ldap://IPSlapd:389 (StartTLS with a certificate of
// the run's CA) and ldaps://IPSlapd:636.
func (e *Env) StartSlapd(ctx context.Context) (*Server, error) {
	for _, c := range []string{"slapd", "slapadd"} {
		if _, err := exec.LookPath(c); err != nil {
			if _, err := os.Stat("/usr/sbin/" + c); err != nil {
				return nil, &MissingError{What: c + " (slapd; run integration/install-deps.sh)"}
			}
		}
	}
	defer e.logStart("slapd", time.Now())
	dir, err := e.newServerDir("slapd")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := e.CA.Issue([]net.IP{net.ParseIP(IPSlapd)}, []string{"ldap.example.org"})
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "slapd.conf")
	for name, content := range map[string][]byte{
		"server.crt": certPEM, "server.key": keyPEM, "entries.ldif": []byte(slapdLDIF()),
		"slapd.conf": []byte(strings.ReplaceAll(slapdConf, "{{dir}}", dir)),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			return nil, err
		}
	}
	if err := run(ctx, "/usr/sbin/slapadd", "-q", "-f", conf, "-l", filepath.Join(dir, "entries.ldif")); err != nil {
		return nil, err
	}
	s := &Server{Name: "slapd", Addr: IPSlapd + ":389", Dir: dir}
	s.launch = func() (*Process, error) {
		// -d 256 keeps slapd in the foreground and logs each operation
		// (stats) to stderr, which the harness keeps.
		cmd := exec.Command("/usr/sbin/slapd", "-d", "256", "-f", conf,
			"-h", fmt.Sprintf("ldap://%s:389/ ldaps://%s:636/", IPSlapd, IPSlapd))
		return startProcess("slapd", filepath.Join(dir, "slapd.log"), e.pidDir, cmd)
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// SlapdURL is IMAPGATE_LDAP_URL for the harness's slapd (ldap://, for
// StartTLS); SlapdTLSURL is the ldaps:// one.
const (
	SlapdURL    = "ldap://" + IPSlapd + ":389"
	SlapdTLSURL = "ldaps://" + IPSlapd + ":636"
)
