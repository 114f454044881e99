package mountinfo

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sample = `21 26 0:20 / /proc rw,relatime - proc proc rw
26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 26 0:40 /var/lib/x /var/lib/glia rw shared:7 master:3 - ext4 /dev/vda rw
51 26 0:41 / /mnt/with\040space rw master:2 - tmpfs tmp rw
52 50 0:42 / /var/lib/glia rw shared:7 - nsfs nsfs rw
`

func TestParse(t *testing.T) {
	got, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{ID: 21, Parent: 26, Root: "/", Point: "/proc", Options: "rw,relatime", FSType: "proc", Source: "proc"},
		{ID: 26, Parent: 1, Root: "/", Point: "/", Options: "rw,relatime", FSType: "ext4", Source: "/dev/vda", Shared: 1},
		{ID: 40, Parent: 30, Root: "/", Point: "/sys/fs/cgroup/unified", Options: "rw,relatime", FSType: "cgroup2", Source: "cgroup2"},
		{ID: 50, Parent: 26, Root: "/var/lib/x", Point: "/var/lib/glia", Options: "rw", FSType: "ext4", Source: "/dev/vda", Shared: 7, Master: 3},
		{ID: 51, Parent: 26, Root: "/", Point: "/mnt/with space", Options: "rw", FSType: "tmpfs", Source: "tmp", Master: 2},
		{ID: 52, Parent: 50, Root: "/", Point: "/var/lib/glia", Options: "rw", FSType: "nsfs", Source: "nsfs", Shared: 7},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Parse (-want +got):\n%s", diff)
	}
	tests := []struct {
		path   string
		at     int // 0: none
		within int
	}{
		{"/var/lib/glia", 52, 52},
		{"/var/lib/glia/health.netns", 0, 52},
		{"/var/lib/gliax", 0, 26},
		{"/", 26, 26},
		{"/sys/fs/cgroup/unified/x", 0, 40},
	}
	for _, tt := range tests {
		m, ok := At(got, tt.path)
		if (tt.at == 0) == ok || (ok && m.ID != tt.at) {
			t.Errorf("At(%s) = %d %v, want %d", tt.path, m.ID, ok, tt.at)
		}
		m, ok = Containing(got, tt.path)
		if !ok || m.ID != tt.within {
			t.Errorf("Containing(%s) = %d %v, want %d", tt.path, m.ID, ok, tt.within)
		}
	}
	if _, err := Parse(strings.NewReader("1 2 3\n")); err == nil {
		t.Error("Parse accepted a malformed line")
	}
}
