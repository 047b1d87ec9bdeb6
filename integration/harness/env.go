package harness

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/dovecot"
)

// Environment variables read by the harness.
const (
	// EnvMode selects how the Dovecot backends run: auto (default),
	// container, process or external.
	EnvMode = "IMAPGATE_IT_DOVECOT"
	// EnvBackendA and EnvBackendB name already running backends (IP
	// addresses, standard ports 143/110/993/995, accounts of
	// integration/dovecot/passwd.mailhost01 and .mailhost02) in external mode.
	EnvBackendA = "IMAPGATE_IT_BACKEND_A"
	EnvBackendB = "IMAPGATE_IT_BACKEND_B"
	// EnvCAFile is the CA bundle of external backends' certificates; without
	// it the TLS scenarios are skipped in external mode.
	EnvCAFile = "IMAPGATE_IT_CA_FILE"
	// EnvBinary is a prebuilt imapgate binary; by default the harness builds
	// ./cmd/imapgate from the module it runs in.
	EnvBinary = "IMAPGATE_IT_BINARY"
	// EnvImage is the Dovecot test image (default imapgate-test/dovecot:2.3).
	EnvImage = "IMAPGATE_IT_IMAGE"
	// EnvKeep keeps the run directory (configs and logs) after the run.
	EnvKeep = "IMAPGATE_IT_KEEP"
)

// DefaultImage is the Dovecot test image built by
// integration/dovecot/build-image.sh.
const DefaultImage = "imapgate-test/dovecot:2.3"

// Root is the parent of every run directory, the pidfiles of running
// processes and the lock that keeps two runs from sharing the fixed
// loopback addresses.
const Root = "/tmp/imapgate-it"

// Loopback addresses of the fixed backends. Gateways get 127.0.1.x.
const (
	IPMailhost01 = "127.0.0.2"
	IPMailhost02 = "127.0.0.3"
	// IPMailhost03 is the backend the outage scenario stops and starts.
	IPMailhost03 = "127.0.0.7"
	// IPMailhost08, IPMailhost09 and IPMailhost10 are the backends of the
	// hardening scenarios (cache, limits, Dovecot's auth penalty), each
	// alone on its Dovecot so that its log counts only its own logins.
	IPMailhost08 = "127.0.0.8"
	IPMailhost09 = "127.0.0.9"
	IPMailhost10 = "127.0.0.10"
	// IPDemoGateway is where `make demo` puts nginx and imapgate.
	IPDemoGateway = "127.0.0.4"
)

// MissingError reports a dependency the machine lacks. Tests skip on it,
// except under CI=true, where they fail.
type MissingError struct{ What string }

func (e *MissingError) Error() string { return "missing dependency: " + e.What }

// Options tunes Start.
type Options struct {
	// Mode overrides IMAPGATE_IT_DOVECOT.
	Mode string
	// Logf receives progress messages (nil: silent).
	Logf func(format string, args ...any)
}

// Env is one run's shared environment: the test CA, the Dovecot backends,
// the SMTP relay stand-in and the imapgate binary. Gateways (imapgate +
// nginx) are started per scenario with StartGateway.
type Env struct {
	// Mode is the Dovecot mode in use (container, process or external).
	Mode string
	// Dir is this run's directory (configs, logs, mail).
	Dir string
	// CA signed the backends' certificates; CAFile is its PEM file.
	CA     *CA
	CAFile string
	// Backends are mailhost01 (127.0.0.2) and mailhost02 (127.0.0.3, and on
	// 127.0.0.2:9143/9110 for the Cyrus howto's two servers on one IP).
	Backends map[string]*Backend
	// Relay records the messages that reach the backends' SMTP port 25
	// (and 127.0.0.1:10025 for the host-name scenario).
	Relay *Relay
	// Binary is the imapgate binary under test.
	Binary string
	// ImapgateMode says how gateways run imapgate: ImapgateProcess
	// (Binary) or ImapgateContainer (ImapgateImage, IMAPGATE_IT_IMAPGATE).
	ImapgateMode string

	image  string
	pidDir string
	lock   *os.File
	logf   func(string, ...any)
	mu     sync.Mutex
	nextIP int
	// nextClient numbers ClientDialer's addresses: a counter of its own,
	// so that many client logins cannot push the gateways' past 255.
	nextClient int
	extra      []*Backend
	redis      []*Redis
	keep       bool
	external   bool
	imgBuild   imageBuild
	flood      floodBuild
}

// Start prepares a run: takes the run lock, stops what a crashed run left,
// makes the CA, starts both Dovecot backends and the relay, and builds
// imapgate. A *MissingError says what the machine lacks.
func Start(ctx context.Context, opts Options) (env *Env, err error) {
	mode := opts.Mode
	if mode == "" {
		mode = os.Getenv(EnvMode)
	}
	if mode == "" {
		mode = ModeAuto
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	switch mode {
	case ModeAuto:
		if DockerReachable(ctx) {
			mode = ModeContainer
		} else {
			mode = ModeProcess
		}
	case ModeContainer, ModeProcess, ModeExternal:
	default:
		return nil, fmt.Errorf("%s=%q: want auto, container, process or external", EnvMode, mode)
	}
	if err := checkDeps(ctx, mode); err != nil {
		return nil, err
	}
	igMode, err := imapgateMode()
	if err != nil {
		return nil, err
	}
	if err := checkImapgateDeps(ctx, igMode); err != nil {
		return nil, err
	}
	e := &Env{Mode: mode, ImapgateMode: igMode, Backends: map[string]*Backend{}, logf: logf, keep: os.Getenv(EnvKeep) != "",
		image: os.Getenv(EnvImage), pidDir: filepath.Join(Root, "pids")}
	if e.image == "" {
		e.image = DefaultImage
	}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := e.takeLock(ctx); err != nil {
		return nil, err
	}
	e.Dir, err = os.MkdirTemp(Root, "run-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(e.Dir, 0o755); err != nil {
		return nil, err
	}
	logf("imapgate-it: run directory %s, Dovecot mode %s", e.Dir, mode)

	if e.CA, err = NewCA("imapgate-it test CA"); err != nil {
		return nil, err
	}
	e.CAFile = filepath.Join(e.Dir, "ca.crt")
	if err := e.CA.WriteCert(e.CAFile); err != nil {
		return nil, err
	}

	if mode == ModeContainer {
		if err := e.ensureImage(ctx); err != nil {
			return nil, err
		}
	}
	binDone := make(chan error, 1)
	go func() {
		err := e.buildImapgate(ctx)
		if err == nil && igMode == ImapgateContainer {
			_, err = e.ImapgateImage(ctx)
		}
		binDone <- err
	}()

	if mode == ModeExternal {
		if err := e.useExternal(); err != nil {
			<-binDone
			return nil, err
		}
	} else {
		// mailhost01 also answers on 127.0.0.1:10143/10110, which the
		// host-name scenario reaches as "localhost".
		a := e.newBackend("mailhost01", IPMailhost01, "mailhost01", append(standardListeners(IPMailhost01),
			Listener{"imap", "imap_localhost", "127.0.0.1", 10143, false},
			Listener{"pop3", "pop3_localhost", "127.0.0.1", 10110, false}))
		// mailhost02 is also the Cyrus howto's second server on 127.0.0.2.
		b := e.newBackend("mailhost02", IPMailhost02, "mailhost02", append(standardListeners(IPMailhost02),
			Listener{"imap", "imap_cyrus", IPMailhost01, 9143, false},
			Listener{"pop3", "pop3_cyrus", IPMailhost01, 9110, false}))
		errs := make(chan error, 2)
		for _, be := range []*Backend{a, b} {
			go func() { errs <- e.startBackend(ctx, be) }()
		}
		var startErr error
		for range 2 {
			startErr = errors.Join(startErr, <-errs)
		}
		if startErr != nil {
			<-binDone
			return nil, startErr
		}
	}
	if e.Relay, err = NewRelay(IPMailhost01+":25", IPMailhost02+":25", IPMailhost03+":25", "127.0.0.1:10025"); err != nil {
		<-binDone
		return nil, err
	}
	if err := <-binDone; err != nil {
		return nil, err
	}
	return e, nil
}

// DockerReachable reports whether `docker info` works.
func DockerReachable(ctx context.Context) bool {
	if _, err := exec.LookPath("docker"); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info").Run() == nil
}

func checkDeps(ctx context.Context, mode string) error {
	need := []string{"nginx", "go"}
	switch mode {
	case ModeProcess:
		need = append(need, "dovecot")
	case ModeContainer:
		if !DockerReachable(ctx) {
			return &MissingError{What: "a reachable Docker engine (docker info fails) for " + EnvMode + "=container"}
		}
	}
	for _, cmd := range need {
		if os.Getenv(EnvBinary) != "" && cmd == "go" {
			continue
		}
		if _, err := exec.LookPath(cmd); err != nil {
			return &MissingError{What: cmd + " (run integration/install-deps.sh)"}
		}
	}
	if mode == ModeProcess {
		for _, f := range []string{"/usr/lib/dovecot/imap", "/usr/lib/dovecot/pop3"} {
			if _, err := os.Stat(f); err != nil {
				return &MissingError{What: f + " (dovecot-imapd, dovecot-pop3d)"}
			}
		}
	}
	if _, err := mailModule(); err != nil {
		return err
	}
	return nil
}

// takeLock serialises runs on this machine (they share fixed loopback
// addresses), then stops whatever a crashed earlier run left behind.
func (e *Env) takeLock(ctx context.Context) error {
	if err := os.MkdirAll(e.pidDir, 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(Root, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		e.logf("imapgate-it: another run holds %s; waiting", f.Name())
		select {
		case <-ctx.Done():
			f.Close()
			return fmt.Errorf("another integration run holds %s: %w", f.Name(), ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	e.lock = f
	killLeftovers(e.pidDir, "imapgate-it")
	if _, err := exec.LookPath("docker"); err == nil {
		if out, err := exec.Command("docker", "ps", "-aq", "--filter", "label=imapgate-it=1").Output(); err == nil {
			if ids := strings.Fields(string(out)); len(ids) > 0 {
				e.logf("imapgate-it: removing %d leftover containers", len(ids))
				_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
			}
		}
		_ = exec.Command("docker", "network", "prune", "-f", "--filter", "label=imapgate-it=1").Run()
	}
	old, _ := filepath.Glob(filepath.Join(Root, "run-*"))
	for _, d := range old {
		os.RemoveAll(d)
	}
	return nil
}

// ModuleRoot returns the directory of imapgate's go.mod, searched upwards
// from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/imapgate/imapgate\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/imapgate/imapgate above the working directory")
		}
		dir = parent
	}
}

func (e *Env) buildImapgate(ctx context.Context) error {
	if b := os.Getenv(EnvBinary); b != "" {
		e.Binary = b
		return nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	e.Binary = filepath.Join(e.Dir, "imapgate")
	start := time.Now()
	// Built as make build ships it (static, -trimpath): the suite and the
	// benchmarks run, and measure, the binary operators run. (A cgo build
	// also maps the C library: some 2 MiB more resident.)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", e.Binary, "./cmd/imapgate")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/imapgate: %v\n%s", err, out)
	}
	e.logf("imapgate-it: built imapgate in %v", time.Since(start).Round(time.Millisecond))
	return nil
}

// ensureImage builds the Dovecot image with build-image.sh when missing.
func (e *Env) ensureImage(ctx context.Context) error {
	if exec.CommandContext(ctx, "docker", "image", "inspect", e.image).Run() == nil {
		return nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	e.logf("imapgate-it: image %s missing; running integration/dovecot/build-image.sh (debootstrap, a few minutes)", e.image)
	cmd := exec.CommandContext(ctx, filepath.Join(root, "integration/dovecot/build-image.sh"))
	cmd.Env = append(os.Environ(), "IMAPGATE_IT_IMAGE="+e.image)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build-image.sh: %v\n%s", err, tail(string(out), 30))
	}
	return nil
}

func (e *Env) newBackend(name, ip, passwd string, listeners []Listener) *Backend {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CA.CertPEM)
	accounts, _ := dovecot.Accounts(passwd)
	b := &Backend{
		Name:      name,
		IP:        ip,
		Listeners: listeners,
		Accounts:  accounts,
		mode:      e.Mode,
		passwd:    passwd,
		dir:       filepath.Join(e.Dir, name),
		image:     e.image,
		ca:        e.CA,
		pool:      pool,
		pidDir:    e.pidDir,
	}
	b.LogPath = filepath.Join(b.dir, "dovecot.log")
	return b
}

func (e *Env) startBackend(ctx context.Context, b *Backend) error {
	if err := b.render(); err != nil {
		return err
	}
	e.mu.Lock()
	e.Backends[b.Name] = b
	e.mu.Unlock()
	start := time.Now()
	if err := b.Start(ctx); err != nil {
		return err
	}
	e.logf("imapgate-it: dovecot %s ready (%s mode) in %v", b.Name, e.Mode, time.Since(start).Round(time.Millisecond))
	return nil
}

// StartExtraBackend starts one more Dovecot instance, on ip's standard
// ports, with the accounts of passwd (mailhost01 or mailhost02). It is for
// scenarios that stop a backend; Close (or the caller) stops it.
func (e *Env) StartExtraBackend(ctx context.Context, name, ip, passwd string) (*Backend, error) {
	return e.startExtra(ctx, name, ip, passwd, false)
}

// StartPenaltyBackend is StartExtraBackend with Dovecot's per-IP auth
// penalty left on, as Dovecot ships.
func (e *Env) StartPenaltyBackend(ctx context.Context, name, ip, passwd string) (*Backend, error) {
	return e.startExtra(ctx, name, ip, passwd, true)
}

func (e *Env) startExtra(ctx context.Context, name, ip, passwd string, penalty bool) (*Backend, error) {
	if e.Mode == ModeExternal {
		return nil, errors.New("external mode: the harness cannot start backends")
	}
	b := e.newBackend(name, ip, passwd, standardListeners(ip))
	b.AuthPenalty = penalty
	e.mu.Lock()
	e.extra = append(e.extra, b)
	e.mu.Unlock()
	if err := b.render(); err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

func (e *Env) useExternal() error {
	for _, v := range []struct{ env, name string }{{EnvBackendA, "mailhost01"}, {EnvBackendB, "mailhost02"}} {
		ip := os.Getenv(v.env)
		if net.ParseIP(ip) == nil {
			return fmt.Errorf("%s=external needs %s (the IP address of %s), got %q", EnvMode, v.env, v.name, ip)
		}
		accounts, err := dovecot.Accounts(v.name)
		if err != nil {
			return err
		}
		e.Backends[v.name] = &Backend{Name: v.name, IP: ip, Listeners: standardListeners(ip),
			Accounts: accounts, mode: ModeExternal}
	}
	e.external = true
	if ca := os.Getenv(EnvCAFile); ca != "" {
		e.CAFile = ca
	} else {
		e.CAFile = ""
	}
	return nil
}

// Password returns user's password on backend, and fails loudly when the
// passwd-file has no such user (a mistake in a test).
func (e *Env) Password(backend, user string) string {
	b, ok := e.Backends[backend]
	if !ok {
		panic("harness: no backend " + backend)
	}
	p, ok := b.Password(user)
	if !ok {
		panic("harness: no user " + user + " on " + backend)
	}
	return p
}

func (e *Env) nextGatewayIP() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextIP++
	return fmt.Sprintf("127.0.1.%d", e.nextIP)
}

// ClientDialer returns a dialer whose connections come from a loopback
// address of their own (127.0.2.n), so that each scenario is a different
// Client-IP to imapgate's brute-force accounting.
func (e *Env) ClientDialer() *net.Dialer {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.nextClient++
	return &net.Dialer{Timeout: 10 * time.Second,
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("127.0.2.%d", e.nextClient%250+1))}}
}

// Close stops everything Start started and removes the run directory
// (kept when IMAPGATE_IT_KEEP is set).
func (e *Env) Close() error {
	var errs []error
	if e.Relay != nil {
		errs = append(errs, e.Relay.Close())
	}
	for _, b := range e.extra {
		errs = append(errs, b.Close())
	}
	for _, r := range e.redis {
		errs = append(errs, r.Close())
	}
	for _, b := range e.Backends {
		errs = append(errs, b.Close())
	}
	if e.Dir != "" && !e.keep {
		os.RemoveAll(e.Dir)
	}
	if e.lock != nil {
		e.lock.Close()
	}
	return errors.Join(errs...)
}
