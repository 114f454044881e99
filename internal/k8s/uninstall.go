package k8s

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Uninstalled says whether the agent's install is being removed: its
// DaemonSet ns/name is gone or being deleted, or the agent's own
// ServiceAccount or RBAC is gone (helm uninstall deletes those in the same
// breath, often before the DaemonSet's pods get their SIGTERM). The reason
// names what was seen. An error means the API could not tell (unreachable,
// timed out): the caller must then assume the install stays.
func Uninstalled(ctx context.Context, c kubernetes.Interface, ns, name string) (bool, string, error) {
	ds, err := c.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case err == nil && ds.DeletionTimestamp != nil:
		return true, fmt.Sprintf("DaemonSet %s/%s is being deleted", ns, name), nil
	case err == nil:
		return false, fmt.Sprintf("DaemonSet %s/%s is in place", ns, name), nil
	case apierrors.IsNotFound(err):
		return true, fmt.Sprintf("DaemonSet %s/%s is gone", ns, name), nil
	case apierrors.IsUnauthorized(err):
		return true, "the agent's ServiceAccount is gone (" + err.Error() + ")", nil
	case apierrors.IsForbidden(err):
		return true, "the agent's RBAC is gone (" + err.Error() + ")", nil
	}
	return false, "", fmt.Errorf("get DaemonSet %s/%s: %w", ns, name, err)
}
