package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// deadNameServer is where the resolv.conf of a gateway with a HostsFile
// sends its queries: a loopback address nothing listens on, so that a
// name the hosts file lacks fails at once instead of after DNS timeouts.
const deadNameServer = "127.0.60.53"

// processArgv is the command line of imapgate as a process: the binary,
// run under prlimit(1) for MaxFiles and in a mount namespace of its own
// (unshare(1)) for HostsFile. Each wrapper execs the next, so the process
// the harness signals is imapgate itself.
func (g *Gateway) processArgv() ([]string, error) {
	argv := []string{g.env.Binary}
	if g.cfg.HostsFile != "" {
		resolv, err := g.deadResolvConf()
		if err != nil {
			return nil, err
		}
		argv = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec "$3"`,
			"sh", g.cfg.HostsFile, resolv}, argv...)
	}
	if g.cfg.MaxFiles > 0 {
		n := strconv.Itoa(g.cfg.MaxFiles)
		argv = append([]string{"prlimit", "--nofile=" + n + ":" + n, "--"}, argv...)
	}
	return argv, nil
}

// deadResolvConf writes the gateway's resolv.conf and returns its path.
func (g *Gateway) deadResolvConf() (string, error) {
	path := filepath.Join(g.dir, "resolv.conf")
	conf := fmt.Sprintf("# written by the imapgate test harness: nothing answers here\nnameserver %s\noptions timeout:1 attempts:1\n", deadNameServer)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", err
	}
	return path, nil
}
