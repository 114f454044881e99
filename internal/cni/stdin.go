package cni

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containernetworking/cni/pkg/types"
)

// readBounded reads r to its end, refusing input larger than max bytes
// without reading more than max+1 of it: a runtime that sends a huge network
// configuration costs the plugin at most max+1 bytes of memory.
func readBounded(r io.Reader, max int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, "read the network configuration from stdin", err.Error())
	}
	if int64(len(data)) > max {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("network configuration on stdin is larger than %d bytes", max), "")
	}
	return data, nil
}

// LimitStdin makes os.Stdin a pipe holding the network configuration read
// from the real stdin, bounded by MaxConfigBytes, so that skel's unbounded
// read of stdin sees at most that much. It does nothing when CNI_COMMAND is
// unset or VERSION (skel reads no configuration then). The returned error is
// the CNI error to print when the configuration is too large or unreadable.
func LimitStdin() *types.Error {
	switch os.Getenv("CNI_COMMAND") {
	case "", "VERSION":
		return nil
	}
	data, err := readBounded(os.Stdin, MaxConfigBytes)
	if err != nil {
		var te *types.Error
		if errors.As(err, &te) {
			return te
		}
		return types.NewError(types.ErrIOFailure, "read stdin", err.Error())
	}
	r, w, err := os.Pipe()
	if err != nil {
		return types.NewError(types.ErrIOFailure, "create a pipe for the network configuration", err.Error())
	}
	go func() {
		// A pipe buffer is smaller than MaxConfigBytes: write while skel reads.
		_, _ = w.Write(data)
		_ = w.Close()
	}()
	os.Stdin = r
	return nil
}
