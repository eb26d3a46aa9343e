// Command gendocs writes microagent's CLI reference, generated from the
// command tree itself: Markdown pages into DIR and man pages into DIR/man
// ("make docs" runs it on docs/cli; a test fails when they differ).
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/microagent-dev/microagent/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendocs DIR (e.g. docs/cli)")
		os.Exit(2)
	}
	if err := generate(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(1)
	}
}

// generate replaces the generated pages in dir with the current ones
// (other files there are left alone).
func generate(dir string) error {
	man := filepath.Join(dir, "man")
	for _, d := range []string{dir, man} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for _, pattern := range []string{filepath.Join(dir, "microagent*.md"), filepath.Join(man, "microagent*.1")} {
		old, err := filepath.Glob(pattern)
		if err != nil {
			return err
		}
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				return err
			}
		}
	}
	if err := doc.GenMarkdownTree(root(), dir); err != nil {
		return fmt.Errorf("markdown pages: %w", err)
	}
	hdr := &doc.GenManHeader{Title: "MICROAGENT", Section: "1", Source: "microagent", Manual: "microagent manual"}
	if err := doc.GenManTree(root(), hdr, man); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	return undate(man)
}

// root is the command tree as the binary runs it: with the completion
// command cobra adds at execution, without the generator's own marks.
func root() *cobra.Command {
	r := cli.NewRoot(strings.NewReader(""), io.Discard, io.Discard)
	r.InitDefaultCompletionCmd()
	r.DisableAutoGenTag = true
	return r
}

// thDate is the date field of a man page's .TH line.
var thDate = regexp.MustCompile(`(?m)^(\.TH "[^"]*" "[^"]*" )"[^"]*"`)

// undate empties the date cobra writes into every man page (the day of
// generation), so that the pages change only when the commands do.
func undate(man string) error {
	pages, err := filepath.Glob(filepath.Join(man, "*.1"))
	if err != nil {
		return err
	}
	for _, p := range pages {
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(p, thDate.ReplaceAll(b, []byte(`$1""`)), 0o644); err != nil {
			return err
		}
	}
	return nil
}
