package admin

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
	"github.com/imapgate/imapgate/imapcheck"
)

// blocks lists the records a filter picks (?user=, ?network=,
// ?blocked=true for blocks only).
func (s *Server) blocks(r *http.Request, _ string) outcome {
	q := r.URL.Query()
	f, err := parseFilter(q.Get("user"), q.Get("network"))
	if err != nil {
		return badRequest(q.Encode(), err)
	}
	recs, err := s.Store.Records(r.Context())
	warning, err := localOnly(err)
	if err != nil {
		return failed(http.StatusInternalServerError, err.Error())
	}
	onlyBlocked := q.Get("blocked") == "true"
	picked := []state.Record{}
	for _, rec := range recs {
		if f.picks(rec) && (!onlyBlocked || rec.Blocked) {
			picked = append(picked, rec)
		}
	}
	sortRecords(picked)
	return ok(RecordsReply{Records: picked, Warning: warning}, f.String(), warning)
}

// lift forgets the counts (and so the blocks) of a user, a network, or
// a pair, and answers with what it forgot.
func (s *Server) lift(r *http.Request, _ string) outcome {
	t, err := decode(r)
	if err != nil {
		return badRequest("", err)
	}
	f, err := parseFilter(t.User, t.Network)
	if err == nil && f.empty() {
		err = errNoTarget
	}
	if err != nil {
		return badRequest(f.String(), err)
	}
	recs, err := s.Store.Records(r.Context())
	warning, err := localOnly(err)
	if err != nil {
		return failed(http.StatusInternalServerError, err.Error())
	}
	lifted := []state.Record{}
	for _, rec := range recs {
		if !f.liftable(rec) {
			continue
		}
		w, err := localOnly(s.Store.Lift(r.Context(), rec.Kind, rec.User, rec.Network))
		if err != nil {
			o := failed(http.StatusInternalServerError, err.Error())
			o.target = f.String()
			return o
		}
		if w != "" {
			warning = w
		}
		lifted = append(lifted, rec)
	}
	sortRecords(lifted)
	o := ok(RecordsReply{Records: lifted, Warning: warning}, f.String(), warning)
	o.result = strings.Replace(o.result, "ok", "ok: "+plural(len(lifted), "record")+" lifted", 1)
	return o
}

// explain is a dry run of a login: ?user=, ?client= (an address),
// ?protocol= (imap, pop3, smtp; imap when absent).
func (s *Server) explain(r *http.Request, _ string) outcome {
	q := r.URL.Query()
	req := auth.ExplainRequest{User: q.Get("user"), Protocol: imapcheck.Protocol(q.Get("protocol"))}
	if req.Protocol == "" {
		req.Protocol = imapcheck.IMAP
	}
	target := "user=" + req.User + " client=" + q.Get("client") + " protocol=" + string(req.Protocol)
	client, err := netip.ParseAddr(q.Get("client"))
	switch {
	case req.User == "":
		return badRequest(target, errorf("user: name the user whose login to explain"))
	case err != nil:
		return badRequest(target, errorf("client: %q is not an address", q.Get("client")))
	case req.Protocol != imapcheck.IMAP && req.Protocol != imapcheck.POP3 && req.Protocol != imapcheck.SMTP:
		return badRequest(target, errorf("protocol: %q is not imap, pop3 or smtp", req.Protocol))
	}
	req.Client = client.Unmap()
	x := s.Logins.Explain(r.Context(), req)
	o := ok(x, target, "")
	o.result = "ok: " + x.Verdict
	return o
}

// flush forgets the user's cached logins on this imapgate.
func (s *Server) flush(r *http.Request, _ string) outcome {
	t, err := decode(r)
	if err == nil && strings.TrimSpace(t.User) == "" {
		err = errorf("user: name the user whose cached logins to flush")
	}
	if err != nil {
		return badRequest("user="+t.User, err)
	}
	reply := FlushReply{User: t.User, Flushed: s.Logins.Flush(t.User)}
	if s.Replicas != nil {
		w, err := localOnly(s.Replicas.Flush(r.Context(), t.User))
		if err != nil {
			return failed(http.StatusInternalServerError, err.Error())
		}
		reply.Replicas, reply.Warning = w == "", w
	}
	o := ok(reply, "user="+t.User, reply.Warning)
	o.result = strings.Replace(o.result, "ok", "ok: "+plural(reply.Flushed, "cached login")+" flushed", 1)
	if reply.Replicas {
		o.result += ", every replica asked"
	}
	return o
}
