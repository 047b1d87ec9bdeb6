package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
)

// Logins is what the API asks of the login handler; *auth.Handler is
// the real one.
type Logins interface {
	Explain(ctx context.Context, req auth.ExplainRequest) auth.Explanation
	Flush(user string) int
}

// Flusher asks every imapgate to flush a user's cached logins;
// *state.Redis is one.
type Flusher interface {
	Flush(ctx context.Context, user string) error
}

// Server is the admin API. Its fields are set once before it serves.
type Server struct {
	// Tokens are the tokens accepted; every request needs one.
	Tokens *Tokens
	// Store keeps the guessing limits' records, Controls the drains and
	// holds: the ones the logins are decided by.
	Store    state.Store
	Controls state.Controls
	// Logins explains logins and flushes cached ones.
	Logins Logins
	// Replicas, when set, carries a flush to every imapgate sharing the
	// state store (each keeps its cache in its process); nil flushes
	// this one only.
	Replicas Flusher
	// Backends names the backends a drain may name.
	Backends []string
	// Logger gets the audit lines; nil means slog.Default().
	Logger *slog.Logger
	// Now is the clock of the drains' and holds' times; nil means
	// time.Now.
	Now func() time.Time
}

// maxBody bounds a request's body: a Target is a few hundred bytes.
const maxBody = 64 << 10

// outcome is what one action did: the answer, and its audit line's
// target and result.
type outcome struct {
	code   int
	reply  any
	target string
	result string
}

// action serves one verb for the operator who.
type action func(r *http.Request, who string) outcome

// Handler returns the API's handler, for every path under PathPrefix.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	routes := []struct {
		method, path, name string
		do                 action
	}{
		{http.MethodGet, pathBlocks, "blocks", s.blocks},
		{http.MethodPost, pathLift, "lift", s.lift},
		{http.MethodGet, pathExplain, "explain", s.explain},
		{http.MethodPost, pathFlush, "flush", s.flush},
		{http.MethodPost, pathDrain, "drain", s.drain},
		{http.MethodPost, pathUndrain, "undrain", s.undrain},
		{http.MethodPost, pathHold, "hold", s.hold},
		{http.MethodPost, pathUnhold, "unhold", s.unhold},
		{http.MethodGet, pathControls, "controls", s.controls},
	}
	for _, rt := range routes {
		mux.Handle(rt.path, s.authorized(rt.name, rt.method, rt.do))
	}
	// Any other path answers only with the token too, so that nothing
	// can be learnt without it, not even which paths exist.
	mux.Handle(PathPrefix, s.authorized("unknown", "", func(r *http.Request, _ string) outcome {
		return failed(http.StatusNotFound, "no such endpoint: "+r.URL.Path)
	}))
	return mux
}

// authorized serves do for requests with a valid token and method, and
// writes the action's one audit line either way.
func (s *Server) authorized(name, method string, do action) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, err := s.Tokens.check(r.Header.Get("Authorization"))
		var o outcome
		switch {
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="imapgate admin"`)
			o = failed(http.StatusUnauthorized, err.Error())
			o.result = "denied: " + err.Error()
		case method != "" && r.Method != method:
			w.Header().Set("Allow", method)
			o = failed(http.StatusMethodNotAllowed, fmt.Sprintf("%s wants %s", r.URL.Path, method))
		default:
			o = do(r, who)
		}
		s.audit(who, name, o)
		writeJSON(w, o.code, o.reply)
	})
}

// audit writes the one line of an action. It names the token, never its
// secret.
func (s *Server) audit(who, action string, o outcome) {
	logger := s.Logger
	if logger == nil {
		logger = slog.Default()
	}
	level := slog.LevelInfo
	if o.code != http.StatusOK {
		level = slog.LevelWarn
	}
	logger.LogAttrs(context.Background(), level, "admin", slog.String("who", who), slog.String("action", action),
		slog.String("target", o.target), slog.String("result", o.result), slog.Int("status", o.code))
}

// ok is a successful action's outcome; a warning (the shared store
// cannot be reached) goes to the audit line too.
func ok(reply any, target, warning string) outcome {
	result := "ok"
	if warning != "" {
		result = "ok, " + warning
	}
	return outcome{code: http.StatusOK, reply: reply, target: target, result: result}
}

// failed is an outcome that changed nothing.
func failed(code int, msg string) outcome {
	result := "error: " + msg
	if code == http.StatusBadRequest {
		result = "bad request: " + msg
	}
	return outcome{code: code, reply: ErrorReply{Error: msg}, result: result}
}

// badRequest is failed for input the API cannot use.
func badRequest(target string, err error) outcome {
	o := failed(http.StatusBadRequest, err.Error())
	o.target = target
	return o
}

// localOnly turns a store's error into a warning when the change was
// made in this process only; any other error stays one.
func localOnly(err error) (warning string, other error) {
	if errors.Is(err, state.ErrLocalOnly) {
		return err.Error(), nil
	}
	return "", err
}

// decode reads a POST's body: one JSON object with known fields only.
func decode(r *http.Request) (Target, error) {
	var t Target
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&t); err != nil {
		return t, fmt.Errorf("body: want a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return t, errors.New("body: want one JSON object, and nothing after it")
	}
	return t, nil
}

// knownBackend checks that name is a backend's.
func (s *Server) knownBackend(setting, name string) error {
	if name == "" {
		return fmt.Errorf("%s: name a backend", setting)
	}
	if !slices.Contains(s.Backends, name) {
		return fmt.Errorf("%s: no backend named %q (backends: %s)", setting, name, strings.Join(s.Backends, ", "))
	}
	return nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// writeJSON writes v as the answer.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
