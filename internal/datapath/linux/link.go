package linux

import (
	"errors"
	"fmt"

	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LinkExists says whether a link called name exists.
func LinkExists(name string) (bool, error) {
	_, err := netlinksafe.LinkByName(name)
	if err == nil {
		return true, nil
	}
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return false, nil
	}
	return false, fmt.Errorf("look up link %s: %w", name, err)
}

// DeleteLink deletes the link called name. A link that is missing, or
// that vanishes while being deleted (its peer's namespace torn down by the
// kernel at the same moment), is not an error.
func DeleteLink(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil
		}
		if exists, lerr := LinkExists(name); lerr == nil && !exists {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}
