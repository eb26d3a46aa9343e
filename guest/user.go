//go:build linux

package guest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// identity is who a process runs as.
type identity struct {
	uid, gid uint32
	groups   []uint32
	home     string
	name     string
}

// lookupUser resolves an OCI User string ("", "name", "uid", "name:group",
// "uid:gid") against the image's /etc/passwd and /etc/group, as runc does.
func lookupUser(spec string) (identity, error) { return lookupUserIn("/", spec) }

// lookupUserIn resolves spec against the passwd and group files under root.
func lookupUserIn(root, spec string) (identity, error) {
	id := identity{home: "/"}
	if spec == "" {
		spec = "0"
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	passwd := readColonFile(filepath.Join(root, "etc/passwd"))
	found := false
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		id.uid = uint32(n)
		for _, f := range passwd {
			if len(f) >= 7 && f[2] == userPart {
				id.gid, id.home, id.name, found = parseID(f[3]), f[5], f[0], true
				break
			}
		}
		if !found {
			id.gid = id.uid
		}
	} else {
		for _, f := range passwd {
			if len(f) >= 7 && f[0] == userPart {
				id.uid, id.gid, id.home, id.name, found = parseID(f[2]), parseID(f[3]), f[5], f[0], true
				break
			}
		}
		if !found {
			return id, fmt.Errorf("user %q not found in the image's /etc/passwd", userPart)
		}
	}
	if id.home == "" {
		id.home = "/"
	}
	groups := readColonFile(filepath.Join(root, "etc/group"))
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			id.gid = uint32(n)
		} else {
			ok := false
			for _, g := range groups {
				if len(g) >= 3 && g[0] == groupPart {
					id.gid, ok = parseID(g[2]), true
					break
				}
			}
			if !ok {
				return id, fmt.Errorf("group %q not found in the image's /etc/group", groupPart)
			}
		}
	}
	// Supplementary groups: every group listing the user by name.
	if id.name != "" && !hasGroup {
		for _, g := range groups {
			if len(g) < 4 {
				continue
			}
			for _, m := range strings.Split(g[3], ",") {
				if m == id.name {
					id.groups = append(id.groups, parseID(g[2]))
				}
			}
		}
	}
	return id, nil
}

func parseID(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}

// readColonFile reads a passwd-style file; a missing file is empty, as an
// image without /etc/passwd can still run numeric users.
func readColonFile(path string) [][]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
