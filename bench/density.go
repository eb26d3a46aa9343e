package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/microagent-dev/microagent/guestboot"
	"github.com/microagent-dev/microagent/workspace"
)

// densityResult is the density section's outcome.
type densityResult struct {
	goal, count   int
	stopReason    string
	elapsed       time.Duration
	starts        []time.Duration // each Start, in order
	checkMax      []time.Duration // slowest exec true of each check round
	memoryMiB     int
	loadEnd       string
	memAvailStart int64 // host MemAvailable, bytes
	memAvailEnd   int64
	mems          []*wsMemory // of every running workspace at the end
	haltAll       time.Duration
}

// densitySection is section 6: how many idle tiny workspaces run side by
// side, each still answering exec within a second.
type densitySection struct{}

func (densitySection) usesWorkspaces() {}

func (densitySection) name() string { return "density" }

func (densitySection) run(ctx context.Context, e *env) (err error) {
	o := e.opts
	logf("density: up to %d tiny workspaces, bounded by %s", o.densityMax, o.densityTime)
	e.r.density, err = measureDensity(ctx, e, o.densityMax, o.densityTime, time.Second)
	return err
}

// measureDensity starts idle tiny workspaces one after another; after each
// start it checks, one workspace after another, that every running
// workspace answers exec true within checkLimit. It stops at the first
// failure, at goal, or when the time bound is reached, then halts and
// deletes them all.
func measureDensity(ctx context.Context, e *env, goal int, bound, checkLimit time.Duration) (*densityResult, error) {
	const profile = "tiny"
	r := &densityResult{goal: goal, memoryMiB: guestboot.Profiles[profile].MemoryMiB}
	r.memAvailStart = hostMemAvailable()
	var names []string
	defer func() {
		// Halt and delete all, also on error paths (cleanupAll in run
		// catches anything this misses).
		t := time.Now()
		haltAll(e, names)
		r.haltAll = time.Since(t)
		for _, n := range names {
			if err := workspace.Delete(context.Background(), e.h, workspace.DeleteOptions{Name: n, Force: true}); err != nil {
				logf("density: delete workspace %s: %v", n, err)
			}
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	t0 := time.Now()
	stop := func(why string) {
		r.stopReason = why
		logf("density: stopping at %d running: %s", r.count, why)
	}
loop:
	for i := 1; i <= goal; i++ {
		name := fmt.Sprintf("bench-d%02d", i)
		if err := e.create(dctx, name, profile); err != nil {
			stop(err.Error())
			break
		}
		names = append(names, name)
		t := time.Now()
		if _, err := e.start(dctx, name); err != nil {
			if dctx.Err() != nil && ctx.Err() == nil {
				stop(fmt.Sprintf("time bound of %s reached during start %d (%v)", bound, i, err))
			} else {
				stop(err.Error())
			}
			break
		}
		r.starts = append(r.starts, time.Since(t))
		r.count = i
		var slowest time.Duration
		for _, n := range names {
			cctx, ccancel := context.WithTimeout(dctx, checkLimit)
			t := time.Now()
			err := e.libExecTrue(cctx, n)
			d := time.Since(t)
			ccancel()
			slowest = max(slowest, d)
			if err == nil && d > checkLimit {
				err = fmt.Errorf("exec true in workspace %s took %s", n, d.Round(time.Millisecond))
			}
			if err != nil {
				r.checkMax = append(r.checkMax, slowest)
				r.count = i - 1 // the last start broke the check
				if dctx.Err() != nil {
					stop(fmt.Sprintf("time bound of %s reached", bound))
				} else {
					stop(fmt.Sprintf("with %d started, %s did not answer exec true within %s: %v", i, n, checkLimit, err))
				}
				break loop
			}
		}
		r.checkMax = append(r.checkMax, slowest)
		logf("density: %d running (start %s, slowest exec true %s)", i, r.starts[len(r.starts)-1].Round(time.Millisecond), slowest.Round(time.Millisecond))
		if dctx.Err() != nil {
			stop(fmt.Sprintf("time bound of %s reached", bound))
			break
		}
	}
	if r.stopReason == "" {
		r.stopReason = fmt.Sprintf("goal of %d reached", goal)
	}
	r.elapsed = time.Since(t0)
	r.loadEnd = loadAvg()
	r.memAvailEnd = hostMemAvailable()
	// Host-side memory of each running workspace (no exec: the guest view
	// is measured on the section's single workspace).
	for _, n := range names {
		inf, err := workspace.Status(ctx, e.h, n)
		if err != nil || inf.State != workspace.Running {
			continue
		}
		if m, err := workspaceMemory(ctx, e, inf, r.memoryMiB, false); err == nil {
			r.mems = append(r.mems, m)
		}
	}
	return r, nil
}

// haltAll halts the workspaces, a few at a time.
func haltAll(e *env, names []string) {
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := workspace.Halt(ctx, e.h, workspace.HaltOptions{Name: n}); err != nil {
				logf("density: halt workspace %s: %v", n, err)
			}
		}()
	}
	wg.Wait()
}

// hostMemAvailable is /proc/meminfo's MemAvailable in bytes (-1: unknown).
func hostMemAvailable() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return -1
	}
	if v, ok := parseMeminfo(string(b))["MemAvailable"]; ok {
		return v
	}
	return -1
}

// met words whether the density goal was reached.
func (d *densityResult) met() string {
	if d.count >= d.goal {
		return "**yes**"
	}
	return "**no**"
}

// summary adds section 6 to the summary table.
func (densitySection) summary(b *report, r *results) {
	if d := r.density; d != nil {
		b.f("| 6. density: idle %d MiB workspaces, each answering `exec true` within 1 s | — | %d running | — | — | — | %d | %s |\n",
			d.memoryMiB, d.count, d.goal, d.met())
	}
}

// report writes section 6.
func (densitySection) report(b *report, r *results) {
	d := r.density
	if d == nil {
		return
	}
	b.f("\n## 6. Density: idle workspaces side by side\n\n")
	b.f("Workspaces of the busybox image, profile tiny (%d MiB, 1 vCPU), created and started one after\n", d.memoryMiB)
	b.f("another. After each start every running workspace is asked, **in sequence** (one after another,\n")
	b.f("through `workspace.Exec`), to `exec true`; each must answer within 1 s. The loop stops at the first\n")
	b.f("failure (start or check), at %d (the goal), or after %s. Then all are halted (4 at a time) and\n", d.goal, r.opts.densityTime)
	b.f("deleted.\n\n")
	b.f("| | |\n|---|---|\n")
	b.f("| **Running, all answering within 1 s** | **%d** (goal %d: %s) |\n", d.count, d.goal, d.met())
	b.f("| Stopped because | %s |\n", d.stopReason)
	b.f("| Time (first create → last check) | %s |\n", d.elapsed.Round(100*time.Millisecond))
	if len(d.starts) > 0 {
		ss := summarize(d.starts)
		b.f("| `workspace.Start` | first %s, last %s; median %s, max %s |\n",
			dur(d.starts[0]), dur(d.starts[len(d.starts)-1]), dur(ss.median), dur(ss.max))
	}
	if len(d.checkMax) > 0 {
		b.f("| Slowest `exec true` of a check round | first round %s, last round %s, worst %s |\n",
			dur(d.checkMax[0]), dur(d.checkMax[len(d.checkMax)-1]), dur(summarize(d.checkMax).max))
	}
	b.f("| Host load average at the end (1/5/15 min) | %s |\n", d.loadEnd)
	b.f("| Host MemAvailable | %s before, %s at the end |\n", mib(d.memAvailStart), mib(d.memAvailEnd))
	if n := int64(len(d.mems)); n > 0 {
		var rss, pss, ram, beyond, tcg int64
		pssOK := true
		for _, m := range d.mems {
			rss += m.supRSS + m.qemuRSS + m.netRSS
			if m.supPss < 0 || m.qemuPss < 0 {
				pssOK = false
			}
			pss += m.supPss + m.qemuPss + m.netRSS
			ram += m.ramRSS
			beyond += m.beyond()
			tcg += max(m.tcgRSS, 0)
		}
		b.f("| VmRSS of all supervisors + QEMUs + network helpers (%d workspaces) | %s (mean %s each) |\n", n, mib(rss), mib(rss/n))
		if pssOK {
			b.f("| Pss of the same (network helpers by VmRSS) | %s (mean %s each) |\n", mib(pss), mib(pss/n))
		}
		b.f("| of which guest RAM resident (Rss of the RAM mappings) | %s (mean %s each) |\n", mib(ram), mib(ram/n))
		b.f("| Beyond guest RAM, mean per workspace (VmRSS − RAM Rss) | %s |\n", mib(beyond/n))
		if pssOK {
			b.f("| Beyond guest RAM, mean per workspace (Pss − RAM Rss) | %s |\n", mib((pss-ram)/n))
		}
		b.f("| of which TCG translated-code buffer, mean | %s |\n", mib(tcg/n))
	}
	b.f("| Halt of all (4 at a time) | %s |\n", d.haltAll.Round(100*time.Millisecond))
}
