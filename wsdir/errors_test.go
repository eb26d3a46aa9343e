package wsdir

import (
	"errors"
	"io/fs"
	"testing"
)

func TestError(t *testing.T) {
	err := error(&Error{Name: "app", Op: "write manifest", Err: fs.ErrPermission})
	if err.Error() != "workspace app: write manifest: permission denied" || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("%v", err)
	}
	if err := (&Error{Name: "app", Err: ErrBusy}); err.Error() != "workspace app: "+ErrBusy.Error() || !errors.Is(err, ErrBusy) {
		t.Fatalf("%v", err)
	}
}
