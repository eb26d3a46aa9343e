package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/audit"
	"github.com/microagent-dev/microagent/channel"
	"github.com/microagent-dev/microagent/conduit"
	"github.com/microagent-dev/microagent/secrets"
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

// secretsSection is section 7: on-demand fetches and start to ready with
// materialized secrets.
type secretsSection struct{}

func (secretsSection) name() string { return "secrets" }

// run measures on the busybox image plus the fetch client.
func (secretsSection) run(ctx context.Context, e *env) error {
	o, r := e.opts, e.r
	ref, err := e.imageWith(ctx, "the guest's secrets fetch client", "./bench/secretsclient", secretsClientPath, "bench/busybox-secrets")
	if err != nil {
		return err
	}
	s := &secretsResult{count: o.secretsN}
	if len(r.echo) == 0 {
		// The echo floor is measured in this run either way: by section
		// 3's boots, or here (one warm-up boot, then one counted).
		for i := 0; i < 2; i++ {
			logf("secrets: echo floor boot %d/2 (%d echoes)", i+1, o.rttN)
			eb, err := bootEcho(ctx, e, o.rttN)
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
	if err := measureFetch(ctx, e, ref, s); err != nil {
		return fmt.Errorf("on-demand fetch: %w", err)
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
			return fmt.Errorf("declaration %d: %w", i, err)
		}
	}
	lookup := mapEnv(vals)
	for i := 0; i <= o.n; i++ {
		logf("secrets: start to ready, 0 vs %d secrets, round %d/%d", o.secretsN, i, o.n)
		r.sampleLoad()
		t0, _, err := startWithSecrets(ctx, e, ref, secretSet{decls: none, env: lookup})
		if err != nil {
			return fmt.Errorf("start with no secrets: %w", err)
		}
		tn, dn, err := startWithSecrets(ctx, e, ref, secretSet{decls: many, env: lookup, want: o.secretsN})
		if err != nil {
			return fmt.Errorf("start with %d secrets: %w", o.secretsN, err)
		}
		if i > 0 {
			s.start0 = append(s.start0, t0)
			s.startN = append(s.startN, tn)
			s.deliverN = append(s.deliverN, dn)
		}
	}
	r.secrets = s
	return nil
}

// measureFetch boots one VM of ref as measureChannel does, declares one
// on-demand secret as runner.Run would, and runs the fetch client once
// (-fetch-n fetches), into s.
func measureFetch(ctx context.Context, e *env, ref string, s *secretsResult) error {
	n := e.opts.fetchN
	vm, _, cleanup, err := bootVM(ctx, e, ref, nil)
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

// secretSet is the secrets one start declares, where their env: values
// come from, and how many files /run/secrets must then hold.
type secretSet struct {
	decls secrets.Declarations
	env   secrets.LookupEnv
	want  int
}

// startWithSecrets is how runner.Run gets a VM of ref ready for the command
// with set's secrets: Resolve, Prepare + writable disk + microvm.Boot,
// Deliver. It returns call → Deliver returned and Deliver alone, then
// checks (after the timing) that set.want secrets are in /run/secrets.
func startWithSecrets(ctx context.Context, e *env, ref string, set secretSet) (total, deliver time.Duration, err error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	want := set.want
	start := time.Now()
	sec, err := conduit.Resolve(ctx, set.decls, set.env)
	if err != nil {
		return 0, 0, err
	}
	defer sec.Zero()
	vm, _, cleanup, err := bootVM(ctx, e, ref, nil)
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
