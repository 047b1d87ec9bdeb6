package admin

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
)

// Exit statuses of the command line.
const (
	exitOK      = 0
	exitFailure = 1 // the API refused, failed or could not be reached
	exitUsage   = 2 // a bad verb, flag or value
)

// Usage is the command line's help.
const Usage = `usage: imapgate admin VERB [flags]

  blocks   [-user U] [-network N] [-blocked]   the guessing limits' counts and blocks
  lift     [-user U] [-network N]              lift the blocks (reset the counts) of a user,
                                               a network, or the pair
  explain  -user U -client ADDR [-protocol P]  what a login would meet, changing nothing
  flush    -user U                             forget U's verified logins (every replica's, with a store)
  drain    BACKEND [-to ALTERNATE]             new logins for BACKEND: "try later", or ALTERNATE
  undrain  BACKEND
  hold     -user U [-wait SECONDS]             nginx waits and asks again until unhold (default 5 s)
  unhold   -user U
  controls                                     the drains and holds in force

Every verb takes -json (the API's answer as it is). The server is
IMAPGATE_ADMIN_URL, else the IMAPGATE_ADMIN_LISTEN or IMAPGATE_METRICS_LISTEN
address; the token IMAPGATE_ADMIN_TOKEN (or _FILE).
`

// verb is one command: the flags it takes, its positional argument (""
// for none: the flag of that name otherwise) and what it does.
type verb struct {
	flags      []string
	positional string
	run        func(ctx context.Context, c *Client, o *options) (reply any, print func(io.Writer), err error)
}

var verbs = map[string]verb{
	"blocks":   {flags: []string{"user", "network", "blocked"}, run: runBlocks},
	"lift":     {flags: []string{"user", "network"}, run: runLift},
	"explain":  {flags: []string{"user", "client", "protocol"}, run: runExplain},
	"flush":    {flags: []string{"user"}, positional: "user", run: runFlush},
	"drain":    {flags: []string{"backend", "to"}, positional: "backend", run: runDrain},
	"undrain":  {flags: []string{"backend"}, positional: "backend", run: runUndrain},
	"hold":     {flags: []string{"user", "wait"}, positional: "user", run: runHold},
	"unhold":   {flags: []string{"user"}, positional: "user", run: runUnhold},
	"controls": {run: runControls},
}

// options are the flags of every verb.
type options struct {
	user, network, client, protocol, backend, to string
	wait                                         int
	blocked, json                                bool
	now                                          time.Time
}

// Main runs `imapgate admin ARGS…` and returns the exit status; getenv
// reads the environment. A failure is one line on errOut, "admin: …".
func Main(args []string, getenv func(string) string, out, errOut io.Writer) int {
	fail := func(code int, err error) int {
		fmt.Fprintf(errOut, "admin: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
		return code
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "help" {
		fmt.Fprint(errOut, Usage)
		return exitUsage
	}
	v, ok := verbs[args[0]]
	if !ok {
		return fail(exitUsage, fmt.Errorf("%q is not a verb (blocks, lift, explain, flush, drain, undrain, hold, unhold, controls)", args[0]))
	}
	o, err := parseFlags(args[0], v, args[1:])
	if err != nil {
		return fail(exitUsage, err)
	}
	c, err := clientFromEnv(getenv)
	if err != nil {
		return fail(exitUsage, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var raw json.RawMessage
	reply, print, err := v.run(ctx, c, o)
	if err == nil && o.json {
		// The answer as the API gave it, for scripts: asked again raw
		// would repeat the action, so the decoded reply is re-encoded.
		raw, err = json.MarshalIndent(reply, "", "  ")
	}
	var usage usageError
	if errors.As(err, &usage) {
		return fail(exitUsage, err)
	}
	if err != nil {
		return fail(exitFailure, err)
	}
	if o.json {
		fmt.Fprintf(out, "%s\n", raw)
		return exitOK
	}
	print(out)
	if w := warningOf(reply); w != "" {
		fmt.Fprintf(errOut, "admin: warning: %s\n", w)
	}
	return exitOK
}

// parseFlags reads a verb's flags, with its positional argument before,
// after or among them.
func parseFlags(name string, v verb, args []string) (*options, error) {
	o := &options{now: time.Now()}
	fs := flag.NewFlagSet("imapgate admin "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.user, "user", "", "the user")
	fs.StringVar(&o.network, "network", "", "a CIDR network, or an address (its /24 or /48)")
	fs.StringVar(&o.client, "client", "", "the client's address")
	fs.StringVar(&o.protocol, "protocol", "imap", "imap, pop3 or smtp")
	fs.StringVar(&o.backend, "backend", "", "the backend")
	fs.StringVar(&o.to, "to", "", "the drained backend's alternate")
	fs.IntVar(&o.wait, "wait", DefaultHoldWait, "seconds nginx waits before it asks again")
	fs.BoolVar(&o.blocked, "blocked", false, "only the counts at their limit")
	fs.BoolVar(&o.json, "json", false, "print the API's answer as JSON")
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		if fs.NArg() == 0 {
			break
		}
		positional, args = append(positional, fs.Arg(0)), fs.Args()[1:]
	}
	var misplaced error
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "json" && !slices.Contains(v.flags, f.Name) {
			misplaced = fmt.Errorf("%s takes no -%s", name, f.Name)
		}
	})
	if misplaced != nil {
		return nil, misplaced
	}
	return o, setPositional(name, v, o, positional)
}

// setPositional puts a verb's positional argument in its flag.
func setPositional(name string, v verb, o *options, positional []string) error {
	switch {
	case len(positional) == 0:
		return nil
	case len(positional) > 1 || v.positional == "":
		return fmt.Errorf("%s: unexpected argument %q", name, positional[len(positional)-1])
	}
	p := map[string]*string{"user": &o.user, "backend": &o.backend}[v.positional]
	if *p != "" && *p != positional[0] {
		return fmt.Errorf("%s: %q and -%s %q", name, positional[0], v.positional, *p)
	}
	*p = positional[0]
	return nil
}

// clientFromEnv is the client the environment describes.
func clientFromEnv(getenv func(string) string) (*Client, error) {
	u, err := DefaultURL(getenv)
	if err != nil {
		return nil, err
	}
	if _, err := url.ParseRequestURI(u); err != nil || !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return nil, fmt.Errorf("%s: %q is not an http:// or https:// URL", EnvURL, u)
	}
	tok, err := TokenFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	return &Client{URL: u, Token: tok}, nil
}

// warningOf is a reply's warning, if it has one.
func warningOf(reply any) string {
	switch r := reply.(type) {
	case *RecordsReply:
		return r.Warning
	case *ControlReply:
		return r.Warning
	case *ControlsReply:
		return r.Warning
	case *FlushReply:
		return r.Warning
	}
	return ""
}

// usageError is a mistake on the command line, found before the server
// is asked (exit status 2).
type usageError struct{ error }

// need refuses a verb without a flag it needs.
func need(verb, flagName, value string) error {
	if value == "" {
		return usageError{fmt.Errorf("%s needs -%s", verb, flagName)}
	}
	return nil
}

func runBlocks(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	q := url.Values{}
	for k, v := range map[string]string{"user": o.user, "network": o.network} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.blocked {
		q.Set("blocked", "true")
	}
	var r RecordsReply
	err := c.call(ctx, pathBlocks, q, nil, &r)
	return &r, func(w io.Writer) { printRecords(w, r.Records, o.now, "no counts or blocks") }, err
}

func runLift(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if o.user == "" && o.network == "" {
		return nil, nil, usageError{errors.New("lift needs -user, -network or both")}
	}
	var r RecordsReply
	err := c.call(ctx, pathLift, nil, Target{User: o.user, Network: o.network}, &r)
	return &r, func(w io.Writer) {
		if len(r.Records) == 0 {
			fmt.Fprintln(w, "nothing to lift: no count matches")
			return
		}
		fmt.Fprintf(w, "lifted %s:\n", plural(len(r.Records), "record"))
		printRecords(w, r.Records, o.now, "")
	}, err
}

func runExplain(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("explain", "user", o.user); err != nil {
		return nil, nil, err
	}
	if err := need("explain", "client", o.client); err != nil {
		return nil, nil, err
	}
	var x auth.Explanation
	q := url.Values{"user": {o.user}, "client": {o.client}, "protocol": {o.protocol}}
	err := c.call(ctx, pathExplain, q, nil, &x)
	return &x, func(w io.Writer) { printExplanation(w, x, o.now) }, err
}

func runFlush(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("flush", "user", o.user); err != nil {
		return nil, nil, err
	}
	var r FlushReply
	err := c.call(ctx, pathFlush, nil, Target{User: o.user}, &r)
	return &r, func(w io.Writer) {
		fmt.Fprintf(w, "flushed %s of %s: the next login is checked on the backend\n", plural(r.Flushed, "cached login"), r.User)
		if r.Replicas {
			fmt.Fprintln(w, "every imapgate sharing the state store was asked to flush them too")
		}
	}, err
}

func runDrain(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("drain", "backend", o.backend); err != nil {
		return nil, nil, err
	}
	var r ControlReply
	err := c.call(ctx, pathDrain, nil, Target{Backend: o.backend, To: o.to}, &r)
	return &r, func(w io.Writer) {
		if o.to != "" {
			fmt.Fprintf(w, "drained %s: its new logins go to %s\n", o.backend, o.to)
		} else {
			fmt.Fprintf(w, "drained %s: its new logins are told to try later\n", o.backend)
		}
		printControls(w, r.ControlsReply, o.now)
	}, err
}

func runUndrain(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("undrain", "backend", o.backend); err != nil {
		return nil, nil, err
	}
	var r ControlReply
	err := c.call(ctx, pathUndrain, nil, Target{Backend: o.backend}, &r)
	return &r, func(w io.Writer) {
		if r.Changed {
			fmt.Fprintf(w, "undrained %s: its logins go to it again\n", o.backend)
		} else {
			fmt.Fprintf(w, "%s was not drained\n", o.backend)
		}
		printControls(w, r.ControlsReply, o.now)
	}, err
}

func runHold(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("hold", "user", o.user); err != nil {
		return nil, nil, err
	}
	var r ControlReply
	err := c.call(ctx, pathHold, nil, Target{User: o.user, Wait: o.wait}, &r)
	return &r, func(w io.Writer) {
		fmt.Fprintf(w, "holding %s: nginx waits %s and asks again, until unhold\n", o.user, strconv.Itoa(o.wait)+" s")
		printControls(w, r.ControlsReply, o.now)
	}, err
}

func runUnhold(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	if err := need("unhold", "user", o.user); err != nil {
		return nil, nil, err
	}
	var r ControlReply
	err := c.call(ctx, pathUnhold, nil, Target{User: o.user}, &r)
	return &r, func(w io.Writer) {
		if r.Changed {
			fmt.Fprintf(w, "released %s: the logins nginx holds go on at its next ask\n", o.user)
		} else {
			fmt.Fprintf(w, "%s was not held\n", o.user)
		}
		printControls(w, r.ControlsReply, o.now)
	}, err
}

func runControls(ctx context.Context, c *Client, o *options) (any, func(io.Writer), error) {
	var r ControlsReply
	err := c.call(ctx, pathControls, nil, nil, &r)
	return &r, func(w io.Writer) { printControls(w, r, o.now) }, err
}
