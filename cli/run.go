package cli

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/hostcheck"
	"github.com/microagent-dev/microagent/image"
	"github.com/microagent-dev/microagent/runner"
	"github.com/microagent-dev/microagent/vmm"
)

// resourceFlags are --profile, --memory, --cpus and --disk-size.
type resourceFlags struct {
	profile, memory, disk string
	cpus                  int
	cmd                   *cobra.Command // to tell --cpus 0 from no --cpus
}

func (f *resourceFlags) add(c *cobra.Command) {
	f.cmd = c
	c.Flags().StringVar(&f.profile, "profile", "", "resource profile: tiny, small (default), medium, large")
	c.Flags().StringVar(&f.memory, "memory", "", "guest memory, e.g. 512M or 2G (overrides the profile)")
	c.Flags().IntVar(&f.cpus, "cpus", 0, "virtual CPUs (overrides the profile)")
	c.Flags().StringVar(&f.disk, "disk-size", "", "writable layer size, e.g. 4G (overrides the profile)")
}

func (f *resourceFlags) resolve() (guestboot.Resources, error) {
	name := f.profile
	if name == "" {
		name = guestboot.DefaultProfile
	}
	r, ok := guestboot.Profiles[name]
	if !ok {
		return r, usageError("unknown profile %q: use tiny, small, medium or large", f.profile)
	}
	if f.memory != "" {
		b, err := parseSize(f.memory)
		if err != nil || b < 64<<20 || b > 256<<30 {
			return r, usageError("--memory %q: give a size from 64M to 256G, e.g. 512M or 2G", f.memory)
		}
		r.MemoryMiB = int(b >> 20)
	}
	if f.cpus != 0 || f.cmd != nil && f.cmd.Flags().Changed("cpus") {
		if f.cpus < 1 || f.cpus > 64 {
			return r, usageError("--cpus %d: give 1 to 64", f.cpus)
		}
		r.CPUs = f.cpus
	}
	if err := hostcheck.FitResources(r.MemoryMiB, r.CPUs); err != nil {
		return r, usageError("too large for this host: %v (--cpus, --memory or a smaller --profile)", err)
	}
	if f.disk != "" {
		b, err := parseSize(f.disk)
		if err != nil || b < 64<<20 {
			return r, usageError("--disk-size %q: give a size of at least 64M, e.g. 4G", f.disk)
		}
		r.DiskBytes = b
	}
	return r, nil
}

// guestDir refuses a working directory in the guest that is not absolute
// (the agent would fail the exec, exit 126, as if the command could not
// run); "" means the image's.
func guestDir(flag, dir string) error {
	if dir != "" && !path.IsAbs(dir) {
		return usageError("%s %q: give an absolute path in the guest, e.g. /root", flag, dir)
	}
	return nil
}

// parseSize reads "512", "512M", "2G", "1.5G" (bare numbers are MiB).
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(strings.ToUpper(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "B"), "I")
	mult := float64(1 << 20)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K':
			mult, s = 1<<10, s[:n-1]
		case 'M':
			mult, s = 1<<20, s[:n-1]
		case 'G':
			mult, s = 1<<30, s[:n-1]
		case 'T':
			mult, s = 1<<40, s[:n-1]
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return int64(v * mult), nil
}

// parseEnv expands -e entries: K=V as given, a bare K takes the CLI's own value.
func parseEnv(entries []string) ([]string, error) {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		k, _, hasEq := strings.Cut(e, "=")
		if k == "" || strings.ContainsAny(k, " \t\n") {
			return nil, usageError("-e %q: give NAME=VALUE or NAME", e)
		}
		if !hasEq {
			v, ok := os.LookupEnv(k)
			if !ok {
				continue
			}
			e = k + "=" + v
		}
		out = append(out, e)
	}
	return out, nil
}

func parsePullPolicy(s string) (image.PullPolicy, error) {
	p, err := image.ParsePullPolicy(s)
	if err != nil {
		return p, &ExitError{Code: ExitUsage, Err: fmt.Errorf("--pull: %w", err)}
	}
	return p, nil
}

func newRunCmd(g *globals) *cobra.Command {
	var (
		res        resourceFlags
		env        []string
		cwd, user  string
		pull       string
		kernelPath string
		timeout    time.Duration
		interact   bool
		rm         bool
		sec        secretFlags
		netf       networkFlags
		files      fileFlags
		out        jsonOutput
	)
	c := &cobra.Command{
		Use:   "run [flags] IMAGE [COMMAND [ARG...]]",
		Short: "Boot a microVM from an image, run one command, and tear the VM down",
		Long: `Boot a microVM from an OCI image, run one command in it, stream its output,
and exit with the command's exit code. With no command, the image's Entrypoint
and Cmd run. Nothing is left behind: the VM, its disk and its files go away.

Flags go before IMAGE: everything after it is the command and its arguments
("run IMAGE ls -la").

` + resultHelp("bootSeconds, totalSeconds") + exitCodeTable,
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: completeFirst(g, completeImages),
		RunE: func(c *cobra.Command, args []string) error {
			if err := out.begin(g, c); err != nil {
				return err
			}
			if !rm {
				return usageError("run always removes its VM (--rm): use \"microagent create\" for a workspace that persists")
			}
			r, err := res.resolve()
			if err != nil {
				return err
			}
			envs, err := parseEnv(env)
			if err != nil {
				return err
			}
			if err := guestDir("--workdir", cwd); err != nil {
				return err
			}
			policy, err := parsePullPolicy(pull)
			if err != nil {
				return err
			}
			decls, err := sec.declarations()
			if err != nil {
				return err
			}
			if timeout < 0 {
				return usageError("--timeout %s: must not be negative", timeout)
			}
			network, err := netf.resolve()
			if err != nil {
				return err
			}
			specs, err := files.resolve()
			if err != nil {
				return err
			}
			h, err := g.home()
			if err != nil {
				return err
			}
			backend, err := vmm.Default()
			if err != nil {
				return err
			}
			o := runner.Options{
				PrepareOptions: guestboot.PrepareOptions{Image: args[0], Pull: policy, KernelPath: kernelPath},
				Backend:        backend,
				Resources:      r,
				Command:        args[1:],
				Env:            envs,
				Cwd:            cwd,
				User:           user,
				Timeout:        timeout,
				Secrets:        decls,
				Warnings:       g.stderr,
				Network:        network,
				Files:          specs,
			}
			o.Stdout, o.Stderr = out.streams(g)
			if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !g.json {
				o.Progress = g.stderr
			}
			if interact || !isTerminal(g.stdin) {
				o.Stdin = g.stdin
			}
			result, err := runner.Run(c.Context(), h, o)
			if err != nil {
				if errors.Is(err, c.Context().Err()) && c.Context().Err() != nil {
					return &ExitError{Code: ExitInterrupted, Err: errors.New("interrupted")}
				}
				return err
			}
			return exitStatus(g, &out, result.Exit, args[0], timeout, result.Boot)
		},
	}
	ownFailures(c)
	c.Flags().SetInterspersed(false)
	out.addOutputLimit(c)
	res.add(c)
	sec.add(c, false)
	netf.add(c)
	files.add(c, "before the command runs", "the command's user")
	c.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable (NAME=VALUE, or NAME to pass the host's)")
	c.Flags().StringVarP(&cwd, "workdir", "w", "", "working directory in the guest (default: the image's)")
	c.Flags().StringVarP(&user, "user", "u", "", "user in the guest (default: the image's)")
	c.Flags().StringVar(&pull, "pull", "missing", "when to pull the image: missing, always, never")
	c.Flags().StringVar(&kernelPath, "kernel", "", "boot this kernel instead of the installed default: a vmlinux or bzImage file, or the NAME of one installed with \"kernel install --name NAME\" (a distribution kernel with its modules)")
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (e.g. 30s; exit code 124)")
	c.Flags().BoolVarP(&interact, "interactive", "i", false, "pass stdin to the command even when it is a terminal")
	c.Flags().BoolVar(&rm, "rm", true, "remove the VM when the command ends (always on for run)")
	return c
}

// networkFlags are --network, --publish, --host-access, --egress-allow-cidr,
// --egress-allow, --egress-allow-file, --egress, --dns and --dns-upstream.
type networkFlags struct {
	mode       string
	publish    []string
	hostAccess hostAccessFlag
	allowCIDRs []string
	allowNames []string
	allowFiles []string
	egress     string
	dns        []string
	upstreams  []string
}

func (f *networkFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.mode, "network", "user", "network: user (NAT, no privileges) or isolated (no network device)")
	c.Flags().StringArrayVarP(&f.publish, "publish", "p", nil,
		"publish a guest TCP port: [HOST_IP:]HOST_PORT:GUEST_PORT[/tcp] (host IP default 127.0.0.1; repeatable)")
	fl := c.Flags().VarPF(&f.hostAccess, "host-access", "",
		"let the guest reach the host's loopback services at 10.0.2.2: all ports, or with =PORT[,PORT...] only those "+
			"(the host is closed otherwise, as are private ranges)")
	fl.NoOptDefVal = hostAccessAll
	c.Flags().StringArrayVar(&f.allowCIDRs, "egress-allow-cidr", nil,
		"open a private address range that the user network closes by default, e.g. 192.168.1.0/24 (repeatable; "+
			"never the host's loopback, which --host-access opens)")
	c.Flags().StringArrayVar(&f.allowNames, "egress-allow", nil,
		"allow only these names out: HOST, or .DOMAIN for a domain and every name in it (repeatable); "+
			"other names are refused by the network's resolver, and addresses not resolved by it for an allowed name are closed")
	c.Flags().StringArrayVar(&f.allowFiles, "egress-allow-file", nil,
		"read --egress-allow names from FILE, one a line (# starts a comment; repeatable)")
	c.Flags().StringVar(&f.egress, "egress", egressAll,
		"outbound traffic: all (public addresses, the default) or none (nothing out, no names; the NIC, published ports "+
			"and what --host-access and --egress-allow-cidr open stay)")
	c.Flags().StringArrayVar(&f.dns, "dns", nil,
		"nameserver for the guest's /etc/resolv.conf instead of the network's forwarder at 10.0.2.3 (IPv4; repeatable; "+
			"it is reached through the network's policy: 10.0.2.2 is a resolver on the host's loopback and needs --host-access)")
	c.Flags().StringArrayVar(&f.upstreams, "dns-upstream", nil,
		"resolver that the network's forwarder at 10.0.2.3 asks, as ADDRESS[:PORT], instead of the host's /etc/resolv.conf "+
			"nameservers (repeatable; the host asks it, the guest never reaches it)")
}

// The --egress modes.
const (
	egressAll  = "all"
	egressNone = "none"
)

// hostAccessAll is --host-access without a value: every port.
const hostAccessAll = "all"

// hostAccessFlag is --host-access[=PORT[,PORT...]]. A value must be
// attached with "=": a bare --host-access stays a switch, so the word after
// it (an image, a command) is never taken for ports.
type hostAccessFlag struct {
	on    bool
	ports []int
}

func (h *hostAccessFlag) String() string {
	switch {
	case !h.on:
		return ""
	case len(h.ports) == 0:
		return hostAccessAll
	}
	ps := make([]string, len(h.ports))
	for i, p := range h.ports {
		ps[i] = strconv.Itoa(p)
	}
	return strings.Join(ps, ",")
}

func (h *hostAccessFlag) Type() string { return "PORTS" }

// Set reads "all" (or true/false, as the switch it was), or a list of
// ports.
func (h *hostAccessFlag) Set(s string) error {
	switch s {
	case hostAccessAll, "true":
		*h = hostAccessFlag{on: true}
		return nil
	case "false":
		*h = hostAccessFlag{}
		return nil
	}
	var ports []int
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 || p[0] == '+' {
			return fmt.Errorf("%q is not a port (1-65535): give --host-access alone for every port, or --host-access=PORT[,PORT...]", p)
		}
		ports = append(ports, n)
	}
	*h = hostAccessFlag{on: true, ports: ports}
	return nil
}

func (f *networkFlags) resolve() (vmm.Network, error) {
	mode, err := vmm.ParseNetworkMode(f.mode)
	if err != nil {
		return vmm.Network{}, usageError("--network: %v", err)
	}
	n := vmm.Network{Mode: mode, HostAccess: f.hostAccess.on, HostPorts: f.hostAccess.ports}
	for _, s := range f.allowCIDRs {
		c, err := netip.ParsePrefix(s)
		if err != nil {
			return n, usageError("--egress-allow-cidr %q: not an address range: give one as ADDRESS/BITS, e.g. 192.168.1.0/24", s)
		}
		n.AllowCIDRs = append(n.AllowCIDRs, c)
	}
	switch f.egress {
	case egressAll:
	case egressNone:
		n.EgressNone = true
	default:
		return n, usageError("--egress %q: use %s (the default) or %s", f.egress, egressAll, egressNone)
	}
	names := append([]string(nil), f.allowNames...)
	for _, path := range f.allowFiles {
		more, err := readAllowFile(path)
		if err != nil {
			return n, err // exit 1: the flags were right, the file is not there
		}
		names = append(names, more...)
	}
	for _, s := range names {
		name, err := vmm.ParseAllowName(s)
		if err != nil {
			return n, usageError("%v", err)
		}
		n.AllowNames = append(n.AllowNames, name)
	}
	for _, spec := range f.publish {
		fw, err := vmm.ParseForward(spec)
		if err != nil {
			return n, usageError("--%v", err)
		}
		n.Forwards = append(n.Forwards, fw)
	}
	for _, s := range f.dns {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return n, usageError("--dns %q: not an IP address: give a nameserver's IPv4 address, e.g. 10.0.2.2", s)
		}
		n.DNS = append(n.DNS, ip)
	}
	for _, s := range f.upstreams {
		u, err := netip.ParseAddrPort(s)
		if err != nil {
			ip, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return n, usageError("--dns-upstream %q: not an address: give ADDRESS or ADDRESS:PORT, e.g. 127.0.0.1:5353", s)
			}
			u = netip.AddrPortFrom(ip, 53)
		}
		n.DNSUpstreams = append(n.DNSUpstreams, u)
	}
	if err := n.Validate(); err != nil {
		return n, usageError("%v", err)
	}
	return n, nil
}

// readAllowFile reads an --egress-allow-file: one name a line, blank
// lines and # comments skipped.
func readAllowFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--egress-allow-file: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line != "" {
			names = append(names, line)
		}
	}
	return names, nil
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
