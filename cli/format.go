package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"text/template"
	"time"

	"github.com/spf13/cobra"
)

// outputFormat is -q and --format on the listing commands (--format alone
// on status): the output scripts pick instead of a table.
type outputFormat struct {
	quiet  bool
	format string
	tmpl   *template.Template
}

// add adds --format, and -q when quiet is true.
func (o *outputFormat) add(c *cobra.Command, quiet bool) {
	if quiet {
		c.Flags().BoolVarP(&o.quiet, "quiet", "q", false, "print only the identifiers, one a line")
	}
	c.Flags().StringVar(&o.format, "format", "", "print each item through this Go template, e.g. '{{.Name}}' (see the fields above)")
}

// templateFuncs are the functions --format templates have, as docker's:
// json gives a value as --json does, join joins a list of strings.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join": strings.Join,
}

// check refuses conflicting flags and a template that does not parse,
// before anything is read or printed.
func (o *outputFormat) check(g *globals) error {
	switch {
	case o.quiet && o.format != "":
		return usageError("-q and --format both choose the output: give one")
	case g.json && (o.quiet || o.format != ""):
		return usageError("--json and %s both choose the output: give one", map[bool]string{true: "-q", false: "--format"}[o.quiet])
	case o.format == "":
		return nil
	}
	// A shell passes \t and \n literally; they mean a tab and a newline.
	text := strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(o.format)
	t, err := template.New("format").Funcs(templateFuncs).Parse(text)
	if err != nil {
		return usageError("--format: %v", err)
	}
	o.tmpl = t
	return nil
}

// printRows prints rows as --json, -q (id of each) or --format ask, and
// reports whether it did; the caller prints its table otherwise. A
// template that fails on any row prints nothing.
func printRows[T any](g *globals, o *outputFormat, rows []T, id func(T) string) (bool, error) {
	switch {
	case g.json:
		if rows == nil {
			rows = []T{}
		}
		return true, g.printJSON(rows)
	case o.quiet:
		var b strings.Builder
		for _, r := range rows {
			b.WriteString(id(r) + "\n")
		}
		_, err := fmt.Fprint(g.stdout, b.String())
		return true, err
	case o.tmpl != nil:
		var b bytes.Buffer
		for _, r := range rows {
			if err := o.execute(&b, r); err != nil {
				return true, err
			}
		}
		_, err := g.stdout.Write(b.Bytes())
		return true, err
	}
	return false, nil
}

// printOne is printRows for status's one item.
func printOne(g *globals, o *outputFormat, v any) (bool, error) {
	switch {
	case g.json:
		return true, g.printJSON(v)
	case o.tmpl != nil:
		var b bytes.Buffer
		if err := o.execute(&b, v); err != nil {
			return true, err
		}
		_, err := g.stdout.Write(b.Bytes())
		return true, err
	}
	return false, nil
}

// execute runs the template on v and ends the line.
func (o *outputFormat) execute(b *bytes.Buffer, v any) error {
	if err := o.tmpl.Execute(b, v); err != nil {
		return usageError("--format: %v", err)
	}
	b.WriteByte('\n')
	return nil
}

// formatHelp documents -q (printing what) and --format's fields, read off
// the type the template gets so the list cannot drift from the code.
func formatHelp(what string, v any) string {
	var s strings.Builder
	if what != "" {
		fmt.Fprintf(&s, "-q prints only the %s, one a line.\n", what)
	}
	s.WriteString(`--format TEMPLATE prints each item through a Go template (text/template;
\t and \n are a tab and a newline; {{json .}} is the item as --json gives
it, {{join .List ", "}} joins a list). The fields, by their Go names (those
marked "time" take {{.Created.Format "2006-01-02"}}):
`)
	line := " "
	for _, f := range templateFields(reflect.TypeOf(v), "", 1) {
		if len(line)+1+len(f) > 78 {
			s.WriteString(line + "\n")
			line = " "
		}
		line += " " + f
	}
	s.WriteString(line)
	return s.String()
}

// templateFields lists t's exported fields as template paths, going depth
// levels into nested structs.
func templateFields(t reflect.Type, prefix string, depth int) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		path := prefix + "." + f.Name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft == reflect.TypeFor[time.Time]():
			out = append(out, path+"(time)")
		case ft.Kind() == reflect.Struct && depth > 0:
			out = append(out, templateFields(ft, path, depth-1)...)
		default:
			out = append(out, path)
		}
	}
	return out
}
