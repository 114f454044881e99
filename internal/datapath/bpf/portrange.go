package bpf

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"glia.dev/glia/internal/datapath/linux"
)

// NAT source ports (NAT_PORT_MIN..NAT_PORT_MAX in bpf/lib/nat.h). The
// node's own sockets take their ephemeral ports below NATPortMin: Init
// lowers the top of net.ipv4.ip_local_port_range of the node's network
// namespace to NATPortMin-1 when BPF masquerade is on, so a translated
// flow never takes the port of a connection the node itself opened.
const (
	NATPortMin = 49000
	NATPortMax = 65535
)

// defaultPortRangeHigh is the kernel's default top of the ephemeral range.
const defaultPortRangeHigh = 60999

const portRangeSysctl = "/proc/sys/net/ipv4/ip_local_port_range"

// PortRange reads the ephemeral port range of the calling thread's network
// namespace.
func PortRange() (low, high int, err error) {
	b, err := os.ReadFile(portRangeSysctl)
	if err != nil {
		return 0, 0, fmt.Errorf("read ip_local_port_range: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: want two ports", strings.TrimSpace(string(b)))
	}
	if low, err = strconv.Atoi(f[0]); err == nil {
		high, err = strconv.Atoi(f[1])
	}
	if err != nil {
		return 0, 0, fmt.Errorf("ip_local_port_range %q: %w", strings.TrimSpace(string(b)), err)
	}
	return low, high, nil
}

func setPortRange(low, high int) error {
	if err := os.WriteFile(portRangeSysctl, []byte(fmt.Sprintf("%d %d", low, high)), 0o644); err != nil {
		return fmt.Errorf("sysctl net.ipv4.ip_local_port_range=%d %d: %w", low, high, err)
	}
	return nil
}

// portRangeName is the dotted name of the port range sysctl.
const portRangeName = "net.ipv4.ip_local_port_range"

// reservePortRange keeps the node's ephemeral ports out of the NAT range,
// recording in stateDir the range it found (linux.SetSysctlRecorded), so
// that releasePortRange gives the operator's range back.
func reservePortRange(log *slog.Logger, stateDir string) error {
	low, high, err := PortRange()
	if err != nil {
		return err
	}
	if high < NATPortMin {
		return nil
	}
	if low >= NATPortMin {
		return fmt.Errorf("net.ipv4.ip_local_port_range %d-%d lies inside the BPF masquerade port range %d-%d: set it below %d",
			low, high, NATPortMin, NATPortMax, NATPortMin)
	}
	log.Info("Keeping the node's ephemeral ports out of the BPF masquerade port range",
		"ip_local_port_range", fmt.Sprintf("%d-%d", low, NATPortMin-1), "was", fmt.Sprintf("%d-%d", low, high),
		"nat-ports", fmt.Sprintf("%d-%d", NATPortMin, NATPortMax), "record", filepath.Join(stateDir, linux.SysctlRecordFile))
	_, err = linux.SetSysctlRecorded(stateDir, portRangeName, fmt.Sprintf("%d %d", low, NATPortMin-1))
	return err
}

// releasePortRange gives the node back the ephemeral port range
// reservePortRange found, if the range is still the one it set (a range
// the operator set since stays). Without a record (an older glia reserved
// it) the kernel's default top is the best guess.
func releasePortRange(log *slog.Logger, stateDir string) error {
	restored, recorded, err := linux.RestoreSysctl(stateDir, portRangeName)
	if err != nil {
		return err
	}
	switch {
	case restored != "":
		log.Info("Restored the node's ephemeral port range to the value it had before glia changed it", "ip_local_port_range", restored)
		return nil
	case recorded:
		log.Info("Leaving the node's ephemeral port range as it is: it was changed since glia set it")
		return nil
	}
	low, high, err := PortRange()
	if err != nil {
		return err
	}
	if high != NATPortMin-1 {
		return nil
	}
	log.Info("Restoring the node's ephemeral port range to the kernel's default top: no record of the range before glia changed it",
		"ip_local_port_range", fmt.Sprintf("%d-%d", low, defaultPortRangeHigh))
	return setPortRange(low, defaultPortRangeHigh)
}
