// Command flood holds many slow connections open to an HTTP server (see
// harness.Flood) until it is sent SIGTERM or SIGINT, and prints what it
// has done every 200 ms: "opened N closed N failed N". The integration
// scenarios and the bench start it through harness.Env.StartFlood, a
// process per 12,000 connections, since one process may not hold more
// descriptors than its limit.
//
//	go run ./integration/cmd/flood -target 127.0.60.7:9180 -sources 127.0.60.210,127.0.60.211 -conns 12000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/imapgate/imapgate/integration/harness"
)

func main() {
	var f harness.Flood
	var sources string
	flag.StringVar(&f.Target, "target", "", "host:port of the server")
	flag.StringVar(&sources, "sources", "127.0.0.1", "comma-separated local addresses to connect from")
	flag.IntVar(&f.Conns, "conns", 1000, "connections to hold")
	flag.DurationVar(&f.Interval, "interval", time.Second, "time between two bytes on one connection")
	flag.Parse()
	f.Sources = strings.Split(sources, ",")
	if f.Target == "" || f.Conns < 1 || f.Interval <= 0 {
		fmt.Fprintln(os.Stderr, "flood: need -target, -conns ≥ 1 and -interval > 0")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			fmt.Println(f.Stats().Line())
			return
		case <-t.C:
			fmt.Println(f.Stats().Line())
		}
	}
}
