package mcpserver

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/tarcopy"
	"github.com/microagent-dev/microagent/workspace"
)

// File tool bounds, stated in the descriptions.
const (
	defaultReadBytes = 256 << 10
	maxReadBytes     = 4 << 20
	maxWriteBytes    = 8 << 20
	defaultListN     = 1000
	maxListN         = 10000
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// FileReadIn is file_read's input.
type FileReadIn struct {
	Name     string `json:"name" jsonschema:"the workspace (running)"`
	Path     string `json:"path" jsonschema:"absolute path of a regular file in the guest"`
	Offset   int64  `json:"offset,omitempty" jsonschema:"first byte to read (default 0)"`
	Limit    int    `json:"limit,omitempty" jsonschema:"most bytes to read (default 262144, at most 4194304)"`
	Encoding string `json:"encoding,omitempty" jsonschema:"auto (default: utf-8 text when the bytes are valid UTF-8, else base64) or base64"`
}

// FileReadOut is file_read's output.
type FileReadOut struct {
	Path      string `json:"path"`
	Size      int64  `json:"size" jsonschema:"the file's whole size"`
	Offset    int64  `json:"offset"`
	Bytes     int    `json:"bytes" jsonschema:"how many bytes content holds"`
	EOF       bool   `json:"eof" jsonschema:"content reaches the end of the file"`
	Encoding  string `json:"encoding" jsonschema:"utf-8 or base64"`
	Content   string `json:"content"`
	Mode      string `json:"mode" jsonschema:"permission bits, octal"`
	Truncated bool   `json:"truncated" jsonschema:"the file goes on past content: read again from offset+bytes"`
}

// FileWriteIn is file_write's input.
type FileWriteIn struct {
	Name     string `json:"name" jsonschema:"the workspace (running)"`
	Path     string `json:"path" jsonschema:"absolute guest path of the file; missing parent directories are created; an existing file is replaced"`
	Content  string `json:"content" jsonschema:"the file's content (at most 8 MiB once decoded)"`
	Encoding string `json:"encoding,omitempty" jsonschema:"utf-8 (default) or base64 (for binary content)"`
	Mode     string `json:"mode,omitempty" jsonschema:"permission bits, octal (default 0644)"`
	Owner    string `json:"owner,omitempty" jsonschema:"user[:group] of the image that owns the file (default: the image's user)"`
}

// FileWriteOut is file_write's output.
type FileWriteOut struct {
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	Mode  string `json:"mode"`
}

// FileListIn is file_list's input.
type FileListIn struct {
	Name       string `json:"name" jsonschema:"the workspace (running)"`
	Path       string `json:"path" jsonschema:"absolute path of a directory in the guest"`
	MaxEntries int    `json:"max_entries,omitempty" jsonschema:"most entries to return (default 1000, at most 10000)"`
}

// FileEntry is one entry of a directory.
type FileEntry struct {
	Name     string `json:"name"`
	Type     string `json:"type" jsonschema:"file, dir, symlink, hardlink or other"`
	Size     int64  `json:"size"`
	Mode     string `json:"mode" jsonschema:"permission bits, octal"`
	Modified string `json:"modified"`
	Target   string `json:"target,omitempty" jsonschema:"a symlink's target"`
}

// FileListOut is file_list's output.
type FileListOut struct {
	Path      string      `json:"path"`
	Entries   []FileEntry `json:"entries"`
	Truncated bool        `json:"truncated" jsonschema:"the directory has more entries than max_entries"`
}

func (s *Server) addFileTools() {
	ro := &mcp.ToolAnnotations{ReadOnlyHint: true, OpenWorldHint: ptr(false)}
	mcp.AddTool(s.srv, &mcp.Tool{Name: "file_read", Annotations: ro,
		Description: "Read a regular file of a running workspace: from offset, at most limit bytes (default 256 KiB, at most 4 MiB). " +
			"Text comes as UTF-8, anything else base64-encoded (encoding says which); truncated says there is more."}, s.fileRead)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "file_write", Annotations: &mcp.ToolAnnotations{DestructiveHint: ptr(true), OpenWorldHint: ptr(false)},
		Description: "Write a file in a running workspace (at most 8 MiB; binary as base64 with encoding=base64), creating missing " +
			"parent directories and replacing an existing file; synced to the guest's disk before it returns. " +
			"A path that is an existing directory receives the file inside it, under the path's last name."}, s.fileWrite)
	mcp.AddTool(s.srv, &mcp.Tool{Name: "file_list", Annotations: ro,
		Description: "List a directory of a running workspace: each entry's name, type, size, mode and modification time " +
			"(at most max_entries, default 1000, at most 10000). The guest sends the directory's whole tree, so a directory holding " +
			"much data lists slowly: list a smaller one."}, s.fileList)
}

// readArchive runs CopyOut of src and hands the tar stream to fn; when fn
// returns, the rest of the transfer is abandoned (a file read needs only
// its range).
func (s *Server) readArchive(ctx context.Context, ws, src string, fn func(tr *tar.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := workspace.CopyOut(ctx, s.o.Home, ws, src, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	ferr := fn(tar.NewReader(pr))
	finished := errors.New("read what was needed")
	pr.CloseWithError(finished)
	cancel()
	cerr := <-done
	if ferr != nil {
		// A copy that failed says why better than the torn stream did.
		if cerr != nil && !errors.Is(cerr, finished) && !errors.Is(cerr, context.Canceled) {
			return toolError(cerr)
		}
		return ferr
	}
	return nil
}

func (s *Server) fileRead(ctx context.Context, _ *mcp.CallToolRequest, in FileReadIn) (*mcp.CallToolResult, FileReadOut, error) {
	out := FileReadOut{Path: in.Path, Offset: in.Offset}
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, out, toolError(err)
	}
	if err := guestPath(in.Path); err != nil {
		return nil, out, err
	}
	if in.Offset < 0 {
		return nil, out, fmt.Errorf("offset %d: must not be negative", in.Offset)
	}
	limit, err := bound("limit", in.Limit, defaultReadBytes, maxReadBytes)
	if err != nil {
		return nil, out, err
	}
	if in.Encoding != "" && in.Encoding != "auto" && in.Encoding != "base64" {
		return nil, out, fmt.Errorf("encoding %q: use auto or base64", in.Encoding)
	}
	_, top := tarcopy.SourceName(in.Path)
	var data []byte
	err = s.readArchive(ctx, in.Name, in.Path, func(tr *tar.Reader) error {
		h, err := tr.Next()
		if err != nil {
			return fmt.Errorf("read %s: %w", in.Path, err)
		}
		// The guest's agent may be hostile: only the entry asked for counts.
		if h.Name != top && h.Name != top+"/" {
			return fmt.Errorf("read %s: the guest sent %q instead: refused", in.Path, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeReg:
		case tar.TypeDir:
			return fmt.Errorf("%s is a directory: use file_list", in.Path)
		case tar.TypeSymlink:
			return fmt.Errorf("%s is a symlink to %q: read that path instead", in.Path, h.Linkname)
		default:
			return fmt.Errorf("%s is not a regular file", in.Path)
		}
		out.Size, out.Mode = h.Size, fmt.Sprintf("%04o", h.Mode&0o7777)
		if in.Offset > 0 {
			if _, err := io.CopyN(io.Discard, tr, min(in.Offset, h.Size)); err != nil {
				return fmt.Errorf("read %s: %w", in.Path, err)
			}
		}
		data, err = io.ReadAll(io.LimitReader(tr, int64(limit)))
		if err != nil {
			return fmt.Errorf("read %s: %w", in.Path, err)
		}
		return nil
	})
	if err != nil {
		return nil, out, err
	}
	out.Bytes = len(data)
	out.EOF = in.Offset+int64(len(data)) >= out.Size
	out.Truncated = !out.EOF
	if in.Encoding != "base64" && utf8.Valid(data) {
		out.Encoding, out.Content = "utf-8", string(data)
	} else {
		out.Encoding, out.Content = "base64", b64(data)
	}
	return nil, out, nil
}

func (s *Server) fileWrite(ctx context.Context, _ *mcp.CallToolRequest, in FileWriteIn) (*mcp.CallToolResult, FileWriteOut, error) {
	inf, err := s.visible(ctx, in.Name)
	if err != nil {
		return nil, FileWriteOut{}, toolError(err)
	}
	if err := guestPath(in.Path); err != nil {
		return nil, FileWriteOut{}, err
	}
	clean := path.Clean(in.Path)
	if clean == "/" {
		return nil, FileWriteOut{}, errors.New("path /: give a file's path")
	}
	var data []byte
	switch in.Encoding {
	case "", "utf-8":
		data = []byte(in.Content)
	case "base64":
		if data, err = base64.StdEncoding.DecodeString(in.Content); err != nil {
			return nil, FileWriteOut{}, fmt.Errorf("content is not valid base64 (standard alphabet, padded): %v", err)
		}
	default:
		return nil, FileWriteOut{}, fmt.Errorf("encoding %q: use utf-8 or base64", in.Encoding)
	}
	if len(data) > maxWriteBytes {
		return nil, FileWriteOut{}, fmt.Errorf("content is %d bytes, at most %d: write it in parts and join them with workspace_exec", len(data), maxWriteBytes)
	}
	mode := int64(0o644)
	if in.Mode != "" {
		m, err := strconv.ParseUint(in.Mode, 8, 32)
		if err != nil || m > 0o7777 {
			return nil, FileWriteOut{}, fmt.Errorf("mode %q: give octal permission bits, e.g. 0644 or 0755", in.Mode)
		}
		mode = int64(m)
	}
	owner := in.Owner
	if owner == "" {
		owner = s.imageUser(ctx, inf)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: path.Base(clean), Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), ModTime: time.Now(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, FileWriteOut{}, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, FileWriteOut{}, err
	}
	if err := tw.Close(); err != nil {
		return nil, FileWriteOut{}, err
	}
	st, err := workspace.CopyIn(ctx, s.o.Home, workspace.CopyInOptions{Name: in.Name, Path: clean, MkdirParents: true, Owner: owner, Sync: true}, &buf)
	if err != nil {
		return nil, FileWriteOut{}, toolError(err)
	}
	return nil, FileWriteOut{Path: clean, Bytes: st.Bytes, Mode: fmt.Sprintf("%04o", mode)}, nil
}

// imageUser is the user the workspace's image runs as ("" for root, or
// when the image's config cannot be read: the file is then root's).
func (s *Server) imageUser(ctx context.Context, inf *workspace.Info) string {
	ref, err := name.ParseReference(inf.Image, name.WeakValidation)
	if err != nil {
		return ""
	}
	st, err := image.OpenStore(s.o.Home)
	if err != nil {
		return ""
	}
	img, err := st.Get(ctx, ref.Context().Digest(inf.Digest).String(), image.PullNever)
	if err != nil {
		return ""
	}
	return img.Config.User
}

// Bounds of file_list against the guest's archive: entries read in all
// (deeper ones included), and the length of a name or link target.
const (
	maxListScanned = 100000
	maxListName    = 4096
)

func (s *Server) fileList(ctx context.Context, _ *mcp.CallToolRequest, in FileListIn) (*mcp.CallToolResult, FileListOut, error) {
	out := FileListOut{Path: in.Path, Entries: []FileEntry{}}
	if _, err := s.visible(ctx, in.Name); err != nil {
		return nil, out, toolError(err)
	}
	if err := guestPath(in.Path); err != nil {
		return nil, out, err
	}
	limit, err := bound("max_entries", in.MaxEntries, defaultListN, maxListN)
	if err != nil {
		return nil, out, err
	}
	_, top := tarcopy.SourceName(in.Path)
	err = s.readArchive(ctx, in.Name, in.Path, func(tr *tar.Reader) error {
		first := true
		// The guest sends the whole tree: bound how much of it is read
		// and what one entry may make the server hold.
		for scanned := 0; ; scanned++ {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("list %s: %w", in.Path, err)
			}
			if scanned == maxListScanned {
				out.Truncated = true
				return nil
			}
			if len(h.Name) > maxListName {
				return fmt.Errorf("list %s: the guest sent a name of %d bytes: refused", in.Path, len(h.Name))
			}
			if len(h.Linkname) > maxListName {
				h.Linkname = h.Linkname[:maxListName]
			}
			n := strings.TrimSuffix(h.Name, "/")
			if first {
				first = false
				if top != "." {
					if n != top {
						return fmt.Errorf("list %s: the guest sent %q instead: refused", in.Path, h.Name)
					}
					if h.Typeflag != tar.TypeDir {
						return fmt.Errorf("%s is not a directory: use file_read for a file", in.Path)
					}
					continue
				}
			}
			rel := n
			if top != "." {
				var ok bool
				if rel, ok = strings.CutPrefix(n, top+"/"); !ok {
					return fmt.Errorf("list %s: the guest sent %q, outside it: refused", in.Path, h.Name)
				}
			}
			if rel == "" || rel == "." || strings.Contains(rel, "/") {
				continue // the directory itself, or deeper in its tree
			}
			if len(out.Entries) == limit {
				out.Truncated = true
				return nil
			}
			out.Entries = append(out.Entries, fileEntry(rel, h))
		}
	})
	if err != nil {
		return nil, out, err
	}
	return nil, out, nil
}

func fileEntry(name string, h *tar.Header) FileEntry {
	e := FileEntry{Name: name, Size: h.Size, Mode: fmt.Sprintf("%04o", h.Mode&0o7777), Modified: h.ModTime.UTC().Format(time.RFC3339)}
	switch h.Typeflag {
	case tar.TypeReg:
		e.Type = "file"
	case tar.TypeDir:
		e.Type, e.Size = "dir", 0
	case tar.TypeSymlink:
		e.Type, e.Target = "symlink", h.Linkname
	case tar.TypeLink:
		e.Type, e.Target = "hardlink", h.Linkname
	default:
		e.Type = "other"
	}
	return e
}

// guestPath checks a guest path argument.
func guestPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: give an absolute guest path, e.g. /root/notes.txt", p)
	}
	if strings.ContainsRune(p, 0) {
		return errors.New("path: contains a NUL byte")
	}
	return nil
}
