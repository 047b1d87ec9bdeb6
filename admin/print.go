package admin

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/imapgate/imapgate/auth"
	"github.com/imapgate/imapgate/auth/state"
)

// newTable is the command line's aligned table.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// dash stands in for an empty cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// when is a time as the tables show it: in UTC, and how far from now.
func when(t, now time.Time) string {
	d := t.Sub(now).Round(time.Second)
	rel := "in " + d.String()
	if d <= 0 {
		rel = (-d).String() + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z") + " (" + rel + ")"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// network is a record's network, "-" for none.
func network(r state.Record) string {
	if !r.Network.IsValid() {
		return "-"
	}
	return r.Network.String()
}

// printRecords prints records as a table, or none when there are none.
func printRecords(w io.Writer, recs []state.Record, now time.Time, none string) {
	if len(recs) == 0 {
		if none != "" {
			fmt.Fprintln(w, none)
		}
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "KIND\tUSER\tNETWORK\tCOUNT\tLIMIT\tBLOCKED\tEXPIRES")
	for _, r := range recs {
		count, limit := fmt.Sprint(r.Failures), fmt.Sprint(r.Limit)
		if r.Kind == state.Owner {
			// Not a count: the user logged in from there.
			count, limit = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Kind, dash(r.User), network(r), count, limit, yesNo(r.Blocked), when(r.Expires, now))
	}
	tw.Flush()
}

// printExplanation prints what a login would meet, a stage a line.
func printExplanation(w io.Writer, x auth.Explanation, now time.Time) {
	tw := newTable(w)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("login", fmt.Sprintf("%s from %s (network %s) over %s", x.User, x.Client, x.Network, x.Protocol))
	row("verdict", x.Verdict)
	row("limits", explainLimits(x))
	for _, r := range x.Records {
		if r.Kind == state.Owner {
			row("", "owner mark: the user logged in from this network; expires "+when(r.Expires, now))
			continue
		}
		row("", fmt.Sprintf("%s count %d of %d%s, expires %s", r.Kind, r.Failures, r.Limit, map[bool]string{true: ", blocked"}[r.Blocked], when(r.Expires, now)))
	}
	row("hold", "none")
	if x.Held != nil {
		row("hold", fmt.Sprintf("held by %s since %s: nginx waits %d s", dash(x.Held.By), when(x.Held.Since, now), x.Held.Wait))
	}
	row("route", explainRoute(x))
	if x.Drained != nil {
		row("drain", fmt.Sprintf("%s drained by %s since %s%s", x.Drained.Backend, dash(x.Drained.By), when(x.Drained.Since, now),
			map[bool]string{true: ", to " + x.Drained.To}[x.Drained.To != ""]))
	}
	if x.Health != "" {
		row("health", x.Health)
	}
	var cached []string
	for _, c := range x.Cached {
		cached = append(cached, fmt.Sprintf("%s on %s until %s", c.Protocol, c.Backend, when(c.Expires, now)))
	}
	row("cached", dash(strings.Join(cached, "; ")))
	tw.Flush()
}

func explainLimits(x auth.Explanation) string {
	switch {
	case !x.Limited:
		return "none apply (trusted network, or no limits)"
	case x.Limit != "":
		return fmt.Sprintf("the %s limit refuses: %s", x.Limit, x.LimitReason)
	}
	s := "none reached"
	if x.Owner {
		s += "; the user logged in from this network before (spared the user and network locks)"
	}
	return s
}

func explainRoute(x auth.Explanation) string {
	switch {
	case x.RouteError != "":
		return fmt.Sprintf("rule %s cannot tell now: %s", dash(x.Rule), x.RouteError)
	case x.Backend == "":
		return "no rule names a backend"
	case x.DivertedTo != "":
		return fmt.Sprintf("rule %s names %s, drained to %s", x.Rule, x.Backend, x.DivertedTo)
	}
	return fmt.Sprintf("rule %s names %s", x.Rule, x.Backend)
}

// printControls prints the drains and holds in force.
func printControls(w io.Writer, c ControlsReply, now time.Time) {
	if len(c.Drains) == 0 && len(c.Holds) == 0 {
		fmt.Fprintln(w, "no backend drained, no user held")
	}
	// A table each: their columns have nothing in common.
	tw := newTable(w)
	if len(c.Drains) > 0 {
		fmt.Fprintln(tw, "DRAINED\tTO\tBY\tSINCE")
		for _, d := range c.Drains {
			to := d.To
			if to == "" {
				to = "(try later)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", d.Backend, to, dash(d.By), when(d.Since, now))
		}
	}
	tw.Flush()
	tw = newTable(w)
	if len(c.Holds) > 0 {
		fmt.Fprintln(tw, "HELD\tWAIT\tBY\tSINCE")
		for _, h := range c.Holds {
			fmt.Fprintf(tw, "%s\t%d s\t%s\t%s\n", h.User, h.Wait, dash(h.By), when(h.Since, now))
		}
	}
	tw.Flush()
}
