package noderunner

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"golang.org/x/net/http2"
)

// grpcProbe calls grpc.health.v1.Health/Check over plaintext HTTP/2, as
// kubelet's gRPC probe does, and succeeds when the answer is SERVING. The
// two protobuf messages involved have one field each, encoded here by hand.
func grpcProbe(ctx context.Context, host string, port int, service string) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	// HealthCheckRequest{service = 1 (string)}.
	var msg []byte
	if service != "" {
		msg = append([]byte{0x0a}, binary.AppendUvarint(nil, uint64(len(service)))...)
		msg = append(msg, service...)
	}
	frame := make([]byte, 5, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(msg)))
	frame = append(frame, msg...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/grpc.health.v1.Health/Check", bytes.NewReader(frame))
	if err != nil {
		return fmt.Errorf("grpc probe: %w", err)
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "kube-probe/1.37")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("grpc probe %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("grpc probe %s: %w", addr, err)
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status") // trailers-only answer
	}
	if status != "0" {
		return fmt.Errorf("grpc probe %s: rpc error: status %s: %s", addr, status, resp.Trailer.Get("Grpc-Message")+resp.Header.Get("Grpc-Message"))
	}
	if len(body) < 5 {
		return fmt.Errorf("grpc probe %s: short answer", addr)
	}
	n := binary.BigEndian.Uint32(body[1:5])
	if body[0] != 0 || int(n) != len(body)-5 {
		return fmt.Errorf("grpc probe %s: malformed answer", addr)
	}
	// HealthCheckResponse{status = 1 (enum)}; absent means UNKNOWN (0).
	st, err := healthStatus(body[5:])
	if err != nil {
		return fmt.Errorf("grpc probe %s: %w", addr, err)
	}
	if st != 1 {
		return fmt.Errorf("grpc probe %s: service %q is %s", addr, service, map[uint64]string{0: "UNKNOWN", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}[st])
	}
	return nil
}

// healthStatus decodes field 1 (varint) of a HealthCheckResponse, skipping
// any other field.
func healthStatus(b []byte) (uint64, error) {
	var status uint64
	for len(b) > 0 {
		key, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, errors.New("malformed protobuf")
		}
		b = b[n:]
		switch key & 7 {
		case 0:
			v, n := binary.Uvarint(b)
			if n <= 0 {
				return 0, errors.New("malformed protobuf")
			}
			b = b[n:]
			if key>>3 == 1 {
				status = v
			}
		case 2:
			l, n := binary.Uvarint(b)
			if n <= 0 || uint64(len(b)-n) < l {
				return 0, errors.New("malformed protobuf")
			}
			b = b[n+int(l):]
		case 1:
			if len(b) < 8 {
				return 0, errors.New("malformed protobuf")
			}
			b = b[8:]
		case 5:
			if len(b) < 4 {
				return 0, errors.New("malformed protobuf")
			}
			b = b[4:]
		default:
			return 0, errors.New("malformed protobuf")
		}
	}
	return status, nil
}
