package workspace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/wsdir"
)

// ImagePins returns the stored images that workspaces and their snapshots
// are pinned to (the digest reference each boots) and who needs each, for
// "image rm" and "image prune" to refuse or keep. A workspace whose
// manifest cannot be read is an error: what it needs is unknown.
func ImagePins(h home.Home) ([]image.Pin, error) {
	ents, err := os.ReadDir(h.Path(Dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list workspaces: %w", err)
	}
	by := map[string][]string{}
	add := func(ref ImageRef, who string) {
		if ref.Pinned != "" {
			by[ref.Pinned] = append(by[ref.Pinned], who)
		}
	}
	for _, e := range ents {
		if !e.IsDir() || wsdir.Hidden(e.Name()) || ValidateName(e.Name()) != nil {
			continue
		}
		w := newWS(h, e.Name())
		m, err := w.ReadManifest()
		if errors.Is(err, ErrNotFound) {
			continue // deleted while we looked
		}
		if err != nil {
			return nil, fmt.Errorf("workspace %s: %w (so the images it needs are unknown)", e.Name(), err)
		}
		add(m.Image, "workspace "+e.Name())
		snaps, err := ListSnapshots(h, e.Name())
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		for _, s := range snaps {
			add(s.Image, "snapshot "+e.Name()+":"+s.Tag)
		}
	}
	pins := make([]image.Pin, 0, len(by))
	for ref, who := range by {
		pins = append(pins, image.Pin{Ref: ref, By: who})
	}
	sort.Slice(pins, func(i, j int) bool { return pins[i].Ref < pins[j].Ref })
	return pins, nil
}
