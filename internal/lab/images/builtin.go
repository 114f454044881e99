package images

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"glia.dev/glia/internal/httpserve"
)

// Run runs the built-in program name with args until it ends or ctx is
// cancelled (the caller cancels ctx on SIGTERM). Diagnostics go to stderr.
func Run(ctx context.Context, name string, args []string, stderr io.Writer) error {
	switch name {
	case BuiltinEcho:
		return runEcho(ctx, args, stderr)
	case BuiltinSleep:
		<-ctx.Done()
		return nil
	}
	return fmt.Errorf("unknown built-in program %q (have %s, %s)", name, BuiltinEcho, BuiltinSleep)
}

// PodName is the name the echo program answers with: $HOSTNAME, else the
// UTS hostname.
func PodName() string {
	if h := os.Getenv("HOSTNAME"); h != "" {
		return h
	}
	h, _ := os.Hostname()
	return h
}

// EchoHandler answers "/client-ip" with the client address it saw and every
// other path with "hello from <name>".
func EchoHandler(name string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/client-ip", func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		fmt.Fprintf(w, "%s\n", host)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", name)
	})
	return mux
}

func runEcho(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet(BuiltinEcho, flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 8080, "TCP port to listen on")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("parse echo flags: %w", err)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	name := PodName()
	srv := &http.Server{Handler: EchoHandler(name), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "echo: %s listening on %s\n", strings.TrimSpace(name), ln.Addr())
	return httpserve.Serve(ctx, srv, ln, 2*time.Second)
}
