package cni

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzParseConfig feeds arbitrary bytes to the network configuration parser.
// It must never panic, must refuse with a CNI error of a configuration code,
// and what it accepts must hold its invariants. The seed corpus is in
// testdata/fuzz/FuzzParseConfig.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/run/glia/glia.sock"}`,
		`{"cniVersion":"0.3.1","name":"glia","type":"glia-cni","socketPath":"/run/glia/glia.sock","mtu":1400}`,
		`{"cniVersion":"1.0.0","name":"glia","type":"glia-cni","socketPath":"/s","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"198.19.1.2/32","gateway":"169.254.1.1","interface":1}]}}`,
		`{"cniVersion":"1.1.0","name":"glia","type":"glia-cni","socketPath":"/s","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
		`{"cniVersion":`,
		`{"cniVersion":1,"socketPath":5}`,
		`{"mtu":"big","socketPath":"/s"}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conf, err := loadConf(data)
		if err != nil {
			var e *types.Error
			if !errors.As(err, &e) {
				t.Fatalf("loadConf error %T %v is not a CNI error", err, err)
			}
			switch e.Code {
			case types.ErrDecodingFailure, types.ErrInvalidNetworkConfig:
			default:
				t.Fatalf("loadConf error code %d (%v), want %d or %d", e.Code, e, types.ErrDecodingFailure, types.ErrInvalidNetworkConfig)
			}
			if e.Msg == "" {
				t.Fatal("loadConf error without a message")
			}
			return
		}
		if len(data) > MaxConfigBytes {
			t.Fatalf("accepted a %d byte configuration", len(data))
		}
		if !filepath.IsAbs(conf.SocketPath) {
			t.Fatalf("accepted relative socketPath %q", conf.SocketPath)
		}
		if conf.MTU != 0 && (conf.MTU < 576 || conf.MTU > 65535) {
			t.Fatalf("accepted mtu %d", conf.MTU)
		}
		if conf.RawPrevResult != nil && conf.PrevResult == nil {
			t.Fatal("prevResult present but not parsed")
		}
	})
}
