package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/home"
	"github.com/microagent-dev/microagent/internal/imagebuild"
	"github.com/microagent-dev/microagent/secrets"
	"github.com/microagent-dev/microagent/vmm"
	"github.com/microagent-dev/microagent/vmm/qemu"
)

// secretsClientPath is where the fetch client lives in the secrets image.
const secretsClientPath = "/bin/secretsclient"

// secretSize is the size of every benchmark secret value.
const secretSize = 64

// secretsResult is section 7: on-demand fetches and start with secrets.
type secretsResult struct {
	// ownEcho is the echo floor booted by this section when the run
	// section did not run (else section 3's floor is used).
	ownEcho []*echoBoot
	// fetch is each on-demand fetch as the guest client timed it: connect,
	// request, agent → host → FetchFunc → agent, reply read.
	fetch []time.Duration
	// host is the FetchFunc alone (resolve + audit gate), per fetch.
	host []time.Duration
	// start0 and startN are Resolve → Prepare → Boot → Deliver returned,
	// with no secrets and with count materialized ones; deliverN is
	// Deliver alone in the latter.
	start0, startN, deliverN []time.Duration
	count                    int
}

// secretsImage is the busybox image with one more layer holding the fetch
// client.
func secretsImage(clientBin string) (v1.Image, error) {
	bin, err := os.ReadFile(clientBin)
	if err != nil {
		return nil, err
	}
	base, err := imagebuild.BaseEntries()
	if err != nil {
		return nil, err
	}
	client := []imagebuild.Entry{imagebuild.File(strings.TrimPrefix(secretsClientPath, "/"), string(bin), 0o755, 0, 0)}
	return imagebuild.Build(v1.Config{Env: []string{imagebuild.DefaultPath}, Cmd: []string{"/bin/sh"}}, base, client)
}

// mapEnv is a secrets.LookupEnv over a map, so that the benchmark's values
// never enter the process environment.
func mapEnv(m map[string]string) secrets.LookupEnv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// benchValue is a deterministic secretSize-byte value (hex of a hash).
func benchValue(i int) string {
	s := sha256.Sum256([]byte("microagent-bench-secret-" + strconv.Itoa(i)))
	return hex.EncodeToString(s[:])[:secretSize]
}

// runSecretsSection runs section 7 on ref (the busybox image plus the
// fetch client).
func runSecretsSection(ctx context.Context, r *results, h home.Home, backend *qemu.Backend, vmlinux, floorInitrd, ref, agent string, vmDir func() (string, error)) error {
	o := r.opts
	s := &secretsResult{count: o.secretsN}
	if len(r.echo) == 0 {
		// The echo floor is measured in this run either way: by section
		// 3's boots, or here (one warm-up boot, then one counted).
		for i := 0; i < 2; i++ {
			logf("secrets: echo floor boot %d/2 (%d echoes)", i+1, o.rttN)
			dir, err := vmDir()
			if err != nil {
				return err
			}
			eb, err := bootEcho(ctx, backend, vmlinux, floorInitrd, dir, o.rttN)
			if err != nil {
				return err
			}
			if i > 0 {
				s.ownEcho = append(s.ownEcho, eb)
			}
		}
	}
	logf("secrets: %d on-demand fetches from inside one VM", o.fetchN)
	r.sampleLoad()
	if err := measureFetch(ctx, s, h, backend, ref, agent, o.fetchN); err != nil {
		return fmt.Errorf("secrets section, on-demand fetch: %w", err)
	}
	// Start with 0 and with count secrets, interleaved; round 0 is a
	// warm-up and not counted.
	var none, many secrets.Declarations
	vals := map[string]string{}
	for i := 0; i < o.secretsN; i++ {
		key := fmt.Sprintf("BENCH_S_%d", i)
		vals[key] = benchValue(i)
		d, err := secrets.ParseDecl(fmt.Sprintf("S_%d=env:%s", i, key))
		if err == nil {
			err = many.Add(d)
		}
		if err != nil {
			return fmt.Errorf("secrets section: declaration %d: %w", i, err)
		}
	}
	env := mapEnv(vals)
	for i := 0; i <= o.n; i++ {
		logf("secrets: start to ready, 0 vs %d secrets, round %d/%d", o.secretsN, i, o.n)
		r.sampleLoad()
		t0, _, err := startWithSecrets(ctx, h, backend, ref, agent, none, env, 0)
		if err != nil {
			return fmt.Errorf("secrets section, start with no secrets: %w", err)
		}
		tn, dn, err := startWithSecrets(ctx, h, backend, ref, agent, many, env, o.secretsN)
		if err != nil {
			return fmt.Errorf("secrets section, start with %d secrets: %w", o.secretsN, err)
		}
		if i > 0 {
			s.start0 = append(s.start0, t0)
			s.startN = append(s.startN, tn)
			s.deliverN = append(s.deliverN, dn)
		}
	}
	r.secrets = s
	r.sampleLoad()
	return nil
}

// measureFetch boots one VM as measureChannel does, declares one on-demand
// secret as runner.Run would, and runs the fetch client once.
func measureFetch(ctx context.Context, s *secretsResult, h home.Home, b vmm.Backend, ref, agent string, n int) error {
	vm, _, cleanup, err := bootExecVM(ctx, h, b, ref, agent)
	if err != nil {
		return err
	}
	defer cleanup()
	decl, err := secrets.ParseDecl("X=env:BENCH_SECRET")
	if err != nil {
		return err
	}
	decl.OnDemand = true
	var d secrets.Declarations
	if err := d.Add(decl); err != nil {
		return err
	}
	env := mapEnv(map[string]string{"BENCH_SECRET": benchValue(-1)})
	sec, err := conduit.Resolve(ctx, d, env)
	if err != nil {
		return err
	}
	if err := sec.Deliver(ctx, vm.Client, nil, audit.Boot); err != nil {
		return err
	}
	f := conduit.OnDemand(d, env, nil)
	var mu sync.Mutex
	vm.Client.SetFetchHandler(func(ctx context.Context, name string) ([]byte, func(), error) {
		t := time.Now()
		v, release, err := f(ctx, name)
		el := time.Since(t)
		mu.Lock()
		s.host = append(s.host, el)
		mu.Unlock()
		return v, release, err
	})
	var out, errb bytes.Buffer
	es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{secretsClientPath,
		"-name", "X", "-n", strconv.Itoa(n), "-warm", "10", "-len", strconv.Itoa(secretSize)}}, nil, &out, &errb)
	if err != nil {
		return fmt.Errorf("exec %s: %w", secretsClientPath, err)
	}
	if es.Code != 0 {
		return fmt.Errorf("exec %s: exit %+v, stderr %q", secretsClientPath, es, errb.String())
	}
	line, ok := strings.CutPrefix(strings.TrimSpace(out.String()), "FETCH_NS ")
	if !ok {
		return fmt.Errorf("%s printed %q, want a FETCH_NS line", secretsClientPath, out.String())
	}
	for _, f := range strings.Fields(line) {
		ns, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return fmt.Errorf("%s: bad latency %q", secretsClientPath, f)
		}
		s.fetch = append(s.fetch, time.Duration(ns))
	}
	if len(s.fetch) != n {
		return fmt.Errorf("%s reported %d fetches, want %d", secretsClientPath, len(s.fetch), n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(s.host) > 10 {
		s.host = s.host[10:] // the client's warm-up fetches
	}
	return nil
}

// startWithSecrets is how runner.Run gets a VM ready for the command with
// d's secrets: Resolve, Prepare + writable disk + microvm.Boot, Deliver.
// It returns call → Deliver returned and Deliver alone, then checks (after
// the timing) that want secrets are in /run/secrets.
func startWithSecrets(ctx context.Context, h home.Home, b vmm.Backend, ref, agent string, d secrets.Declarations, env secrets.LookupEnv, want int) (total, deliver time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	start := time.Now()
	sec, err := conduit.Resolve(ctx, d, env)
	if err != nil {
		return 0, 0, err
	}
	defer sec.Zero()
	vm, _, cleanup, err := bootExecVM(ctx, h, b, ref, agent)
	if err != nil {
		return 0, 0, err
	}
	defer cleanup()
	td := time.Now()
	if err := sec.Deliver(ctx, vm.Client, nil, audit.Boot); err != nil {
		return 0, 0, err
	}
	deliver = time.Since(td)
	total = time.Since(start)
	if want > 0 {
		var out bytes.Buffer
		es, err := vm.Client.Exec(ctx, channel.ExecRequest{Argv: []string{"sh", "-c", "ls /run/secrets | wc -l"}}, nil, &out, io.Discard)
		if err != nil || es.Code != 0 {
			return 0, 0, fmt.Errorf("count /run/secrets: %v %+v", err, es)
		}
		if got := strings.TrimSpace(out.String()); got != strconv.Itoa(want) {
			return 0, 0, fmt.Errorf("/run/secrets holds %s files, want %d", got, want)
		}
	}
	return total, deliver, nil
}

// secretsClientBinary builds the fetch client into dir.
func secretsClientBinary(ctx context.Context, root, dir string) (string, error) {
	p := filepath.Join(dir, "secretsclient")
	logf("building the guest's secrets fetch client")
	return p, buildStatic(ctx, root, "./bench/secretsclient", p)
}
