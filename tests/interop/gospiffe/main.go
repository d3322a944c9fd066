// Command gospiffe-client is an unmodified go-spiffe Workload API client used by the interop tests.
//
//	gospiffe-client watch -addr unix:///path -updates N
//
// prints one line per X.509 context update: "update <n> <spiffe-id> <leaf-serial-hex> <bundle-trust-domains>".
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type watcher struct {
	want int
	seen int
	done chan struct{}
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	w.seen++
	svid := c.DefaultSVID()
	var tds []string
	for _, b := range c.Bundles.Bundles() {
		tds = append(tds, b.TrustDomain().String())
	}
	sort.Strings(tds)
	fmt.Printf("update %d %s %x %s\n", w.seen, svid.ID, svid.Certificates[0].SerialNumber, strings.Join(tds, ","))
	if w.seen >= w.want {
		close(w.done)
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	fmt.Fprintf(os.Stderr, "watch error: %v\n", err)
}

func main() {
	if len(os.Args) < 2 || os.Args[1] != "watch" {
		fmt.Fprintln(os.Stderr, "usage: gospiffe-client watch -addr unix:///path -updates N")
		os.Exit(2)
	}
	flags := flag.NewFlagSet("watch", flag.ExitOnError)
	addr := flags.String("addr", "", "Workload API address")
	updates := flags.Int("updates", 1, "exit after this many updates")
	timeout := flags.Duration("timeout", 60*time.Second, "give up after")
	_ = flags.Parse(os.Args[2:])

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(*addr))
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		os.Exit(1)
	}
	defer client.Close()

	w := &watcher{want: *updates, done: make(chan struct{})}
	errs := make(chan error, 1)
	go func() { errs <- client.WatchX509Context(ctx, w) }()
	select {
	case <-w.done:
		fmt.Println("ok")
	case err := <-errs:
		fmt.Fprintf(os.Stderr, "watch ended: %v\n", err)
		os.Exit(1)
	case <-ctx.Done():
		fmt.Fprintf(os.Stderr, "timed out after %d updates\n", w.seen)
		os.Exit(1)
	}
}
