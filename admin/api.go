package admin

import (
	"github.com/imapgate/imapgate/auth/state"
)

// The API's paths, under one versioned prefix so that a later change of
// shape can live beside this one.
const (
	PathPrefix   = "/admin/v1/"
	pathBlocks   = PathPrefix + "blocks"
	pathLift     = PathPrefix + "lift"
	pathExplain  = PathPrefix + "explain"
	pathFlush    = PathPrefix + "flush"
	pathDrain    = PathPrefix + "drain"
	pathUndrain  = PathPrefix + "undrain"
	pathHold     = PathPrefix + "hold"
	pathUnhold   = PathPrefix + "unhold"
	pathControls = PathPrefix + "controls"
)

// Target names what an action is about; the fields that do not apply are
// empty. It is the body of every POST.
type Target struct {
	User    string `json:"user,omitempty"`
	Network string `json:"network,omitempty"`
	Backend string `json:"backend,omitempty"`
	// To is a drain's alternate backend.
	To string `json:"to,omitempty"`
	// Wait is a hold's Auth-Wait, in seconds.
	Wait int `json:"wait,omitempty"`
}

// RecordsReply answers blocks (the records) and lift (the records lifted).
type RecordsReply struct {
	Records []state.Record `json:"records"`
	// Warning says the answer is this imapgate's alone (the shared store
	// cannot be reached).
	Warning string `json:"warning,omitempty"`
}

// FlushReply answers flush.
type FlushReply struct {
	User string `json:"user"`
	// Flushed counts the cached logins this imapgate forgot; Replicas
	// says every imapgate sharing the state store was asked to as well.
	Flushed  int    `json:"flushed"`
	Replicas bool   `json:"replicas"`
	Warning  string `json:"warning,omitempty"`
}

// ControlReply answers drain, undrain, hold and unhold: the change, and
// the controls in force after it.
type ControlReply struct {
	// Changed is false for an undrain or unhold of what was not drained
	// or held.
	Changed bool `json:"changed"`
	ControlsReply
}

// ControlsReply lists the drains and holds in force.
type ControlsReply struct {
	Drains  []state.Drain `json:"drains"`
	Holds   []state.Hold  `json:"holds"`
	Warning string        `json:"warning,omitempty"`
}

// ErrorReply is the body of every answer that is not 200.
type ErrorReply struct {
	Error string `json:"error"`
}
