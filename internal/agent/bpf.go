package agent

import (
	"log/slog"

	"glia.dev/glia/internal/datapath"
	bpfdp "glia.dev/glia/internal/datapath/bpf"
)

func newBPFDatapath(log *slog.Logger, node datapath.LocalNode, opts datapath.Options) (datapath.Datapath, error) {
	return bpfdp.New(log, node, opts)
}
