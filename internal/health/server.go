package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"glia.dev/glia/internal/httpserve"
)

// HelloHandler answers GET and HEAD on /hello with 200 and the node's name;
// every other path is 404 and every other method 405.
func HelloHandler(nodeName string) http.Handler {
	body := []byte(nodeName + "\n")
	mux := http.NewServeMux()
	mux.HandleFunc(HelloPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(body)
	})
	return mux
}

// ListenAndServeHello serves HelloHandler(nodeName) on addr (the agent
// passes "<nodeIP>:4240") until ctx is done.
func ListenAndServeHello(ctx context.Context, addr, nodeName string) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return Serve(ctx, ln, HelloHandler(nodeName))
}

// Serve serves h on ln until ctx is done, then shuts the server down and
// returns nil; it returns the error when serving fails otherwise. It closes
// ln in either case.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	return httpserve.Serve(ctx, &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       30 * time.Second,
	}, ln, 5*time.Second)
}
