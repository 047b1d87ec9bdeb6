package admin

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/imapgate/imapgate/auth/state"
)

// Bounds on a hold's Auth-Wait: nginx asks again after it, so a second is
// the least that is not a busy loop, and past five minutes a mail client
// gives up on its login anyway.
const (
	DefaultHoldWait = 5
	maxHoldWait     = 300
)

// drain drains a backend, optionally to an alternate.
func (s *Server) drain(r *http.Request, who string) outcome {
	t, err := decode(r)
	target := "backend=" + t.Backend
	if t.To != "" {
		target += " to=" + t.To
	}
	if err == nil {
		err = s.knownBackend("backend", t.Backend)
	}
	if err == nil && t.To != "" {
		err = s.knownBackend("to", t.To)
		if err == nil && t.To == t.Backend {
			err = errors.New("to: a backend cannot be drained to itself")
		}
	}
	if err != nil {
		return badRequest(target, err)
	}
	err = s.Controls.SetDrain(r.Context(), state.Drain{Backend: t.Backend, To: t.To, By: who, Since: s.now().UTC()})
	return s.controlDone(target, true, err)
}

// undrain ends a backend's drain.
func (s *Server) undrain(r *http.Request, _ string) outcome {
	t, err := decode(r)
	if err == nil {
		err = s.knownBackend("backend", t.Backend)
	}
	if err != nil {
		return badRequest("backend="+t.Backend, err)
	}
	existed, err := s.Controls.Undrain(r.Context(), t.Backend)
	return s.controlDone("backend="+t.Backend, existed, err)
}

// hold holds a user: nginx is told to wait and ask again.
func (s *Server) hold(r *http.Request, who string) outcome {
	t, err := decode(r)
	if t.Wait == 0 {
		t.Wait = DefaultHoldWait
	}
	target := fmt.Sprintf("user=%s wait=%d", t.User, t.Wait)
	switch {
	case err != nil:
	case strings.TrimSpace(t.User) == "":
		err = errors.New("user: name the user to hold")
	case t.Wait < 1 || t.Wait > maxHoldWait:
		err = fmt.Errorf("wait: %d s is not between 1 and %d", t.Wait, maxHoldWait)
	}
	if err != nil {
		return badRequest(target, err)
	}
	err = s.Controls.SetHold(r.Context(), state.Hold{User: t.User, Wait: t.Wait, By: who, Since: s.now().UTC()})
	return s.controlDone(target, true, err)
}

// unhold ends a user's hold.
func (s *Server) unhold(r *http.Request, _ string) outcome {
	t, err := decode(r)
	if err == nil && strings.TrimSpace(t.User) == "" {
		err = errors.New("user: name the user to release")
	}
	if err != nil {
		return badRequest("user="+t.User, err)
	}
	existed, err := s.Controls.Unhold(r.Context(), t.User)
	return s.controlDone("user="+t.User, existed, err)
}

// controls lists the drains and holds in force.
func (s *Server) controls(*http.Request, string) outcome {
	return ok(s.controlsReply(""), "", "")
}

func (s *Server) controlsReply(warning string) ControlsReply {
	return ControlsReply{Drains: s.Controls.Drains(), Holds: s.Controls.Holds(), Warning: warning}
}

// controlDone answers a change of the controls.
func (s *Server) controlDone(target string, changed bool, err error) outcome {
	warning, err := localOnly(err)
	if err != nil {
		o := failed(http.StatusInternalServerError, err.Error())
		o.target = target
		return o
	}
	o := ok(ControlReply{Changed: changed, ControlsReply: s.controlsReply(warning)}, target, warning)
	if !changed {
		o.result = strings.Replace(o.result, "ok", "ok: nothing to change", 1)
	}
	return o
}
