package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child process started by the harness. Its stdout and stderr go
// to a file and are kept line by line, so that a test can wait for a line (a
// readiness signal) and search them afterwards. It runs in its own process
// group, so stopping it also stops its workers (nginx, Dovecot).
type Process struct {
	// Name says what the process is, in errors and file names.
	Name string
	// LogPath is the file holding everything the process printed.
	LogPath string

	cmd     *exec.Cmd
	pidfile string
	done    chan struct{}
	waitErr error

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced whenever lines grows
}

// startProcess starts cmd with its output captured in logPath and records its
// pid under pidDir, so that a later run can stop it if this one crashes.
func startProcess(name, logPath, pidDir string, cmd *exec.Cmd) (*Process, error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	cmd.Stdout = pw
	cmd.Stderr = pw
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pw.Close()
	p := &Process{
		Name:    name,
		LogPath: logPath,
		cmd:     cmd,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	if pidDir != "" {
		p.pidfile = filepath.Join(pidDir, fmt.Sprintf("%s-%d.pid", name, cmd.Process.Pid))
		_ = os.WriteFile(p.pidfile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		defer logFile.Close()
		defer pr.Close()
		p.copyLines(pr, logFile)
	}()
	go func() {
		err := cmd.Wait()
		<-copied
		p.waitErr = err
		close(p.done)
	}()
	return p, nil
}

func (p *Process) copyLines(r io.Reader, w io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		p.mu.Lock()
		p.lines = append(p.lines, line)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// Lines returns a copy of every line the process has printed so far.
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// Output returns everything the process has printed so far, one string.
func (p *Process) Output() string { return strings.Join(p.Lines(), "\n") }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// WaitLine waits until a line printed at or after index from satisfies
// match, and returns it with its index. It fails when ctx ends or the process
// exits first.
func (p *Process) WaitLine(ctx context.Context, from int, match func(string) bool) (string, int, error) {
	for {
		p.mu.Lock()
		for i := from; i < len(p.lines); i++ {
			if match(p.lines[i]) {
				line := p.lines[i]
				p.mu.Unlock()
				return line, i, nil
			}
		}
		from = max(from, len(p.lines))
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.done:
			// The output is complete once done is closed; look once more.
			if _, _, err := p.scanOnce(from, match); err == nil {
				continue
			}
			return "", 0, fmt.Errorf("%s exited (%v) before the awaited line; output:\n%s", p.Name, p.waitErr, tail(p.Output(), 30))
		case <-ctx.Done():
			return "", 0, fmt.Errorf("%s: no awaited line: %w; output:\n%s", p.Name, ctx.Err(), tail(p.Output(), 30))
		}
	}
}

func (p *Process) scanOnce(from int, match func(string) bool) (string, int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := from; i < len(p.lines); i++ {
		if match(p.lines[i]) {
			return p.lines[i], i, nil
		}
	}
	return "", 0, errors.New("no match")
}

// Len returns how many lines the process has printed so far; pass it to
// WaitLine to wait only for what comes next.
func (p *Process) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// Signal sends sig to the process group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Stop sends SIGTERM to the process group and waits for the process to exit,
// killing the group after grace. It returns the exit error unless the
// process ended because of the signal or with status 0.
func (p *Process) Stop(grace time.Duration) error {
	defer func() {
		if p.pidfile != "" {
			os.Remove(p.pidfile)
		}
	}()
	select {
	case <-p.done:
		return p.exitError()
	default:
	}
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		// Workers may outlive a master that has exited; make sure.
		_ = p.Signal(syscall.SIGKILL)
		return p.exitError()
	case <-t.C:
		_ = p.Signal(syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.Name, grace)
	}
}

func (p *Process) exitError() error {
	var ee *exec.ExitError
	if errors.As(p.waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return nil
		}
	}
	if p.waitErr != nil {
		return fmt.Errorf("%s: %w", p.Name, p.waitErr)
	}
	return nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// killLeftovers stops the process groups recorded in pidDir by a run that did
// not clean up (a crash, a killed test binary). A pid is only signalled while
// its command line still mentions marker, so a reused pid is left alone.
func killLeftovers(pidDir, marker string) {
	entries, _ := os.ReadDir(pidDir)
	for _, e := range entries {
		path := filepath.Join(pidDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err == nil && pid > 1 {
			// Linux never reuses a pid that still names a process group, so
			// when the leader is gone, a group with its pid is still ours.
			cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if err != nil || strings.Contains(string(cmdline), marker) {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.Remove(path)
	}
}

// waitAccept waits until addr (host:port, or unix:/path as imapgate's
// IMAPGATE_LISTEN names a socket) accepts a connection, and gives up when
// p, the process that should be listening there, exits first.
func waitAccept(ctx context.Context, p *Process, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var d net.Dialer
	network, address := "tcp", addr
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, address = "unix", path
	}
	for {
		c, err := d.DialContext(ctx, network, address)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Exited():
			out, _ := os.ReadFile(p.LogPath)
			return fmt.Errorf("%s exited (%v) before accepting on %s:\n%s", p.Name, p.waitErr, addr, tail(string(out), 20))
		case <-ctx.Done():
			return fmt.Errorf("%s does not accept on %s: %v", p.Name, addr, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
