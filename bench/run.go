package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// runSection is sections 1-3: cold runs against raw boots, Prepare, exec
// round trips against raw echoes.
type runSection struct{}

func (runSection) name() string { return "run" }

// run measures the first Prepare, then the boots (raw, echo, runner.Run)
// round by round, the warm Prepare, and the exec VM's round trips.
func (runSection) run(ctx context.Context, e *env) error {
	o, r := e.opts, e.r
	// 2b. The first Prepare on a machine that has only the kernel: pull,
	// root disk build, initramfs build. Each repetition gets a fresh state
	// directory sharing the installed kernel.
	logf("first Prepare x%d (fresh state directories)", o.n)
	fresh := filepath.Join(r.tmp, "fresh")
	if err := os.Mkdir(fresh, 0o700); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		fh, err := freshHome(e.h, fresh)
		if err != nil {
			return err
		}
		d, err := timePrepare(ctx, fh, e.ref, e.agent)
		if err != nil {
			return err
		}
		r.prepFirst = append(r.prepFirst, d)
		os.RemoveAll(fh.Root)
		if fh, err = freshHome(e.h, fresh); err != nil {
			return err
		}
		s, err := timePrepareSteps(ctx, fh, e.ref, e.agent)
		if err != nil {
			return err
		}
		r.stepsFirst = append(r.stepsFirst, s)
		os.RemoveAll(fh.Root)
	}

	// 1. Boots, interleaved so that load changes hit floor and target alike;
	// round 0 warms the page cache and is not counted.
	for i := 0; i <= o.n; i++ {
		label := fmt.Sprintf("round %d/%d", i, o.n)
		if i == 0 {
			label = "warm-up round"
		}
		logf("boots, %s: raw boot, raw echo, runner.Run true", label)
		r.sampleLoad()
		rb, err := bootRaw(ctx, e)
		if err != nil {
			return err
		}
		rtts := o.rttN
		if i == 0 {
			rtts = 10
		}
		eb, err := bootEcho(ctx, e, rtts)
		if err != nil {
			return err
		}
		cr, err := runTrue(ctx, e)
		if err != nil {
			return err
		}
		if i > 0 {
			r.raw = append(r.raw, rb)
			r.echo = append(r.echo, eb)
			r.cold = append(r.cold, cr)
		}
		r.floorArgs = rb.args
	}

	// 2a. Prepare on a warm store (after one untimed call, which also lets
	// the kernel and agent stamps settle).
	logf("warm Prepare x%d", o.n)
	r.sampleLoad()
	if _, err := timePrepare(ctx, e.h, e.ref, e.agent); err != nil {
		return err
	}
	for i := 0; i < o.n; i++ {
		d, err := timePrepare(ctx, e.h, e.ref, e.agent)
		if err != nil {
			return err
		}
		r.prepWarm = append(r.prepWarm, d)
		s, err := timePrepareSteps(ctx, e.h, e.ref, e.agent)
		if err != nil {
			return err
		}
		r.stepsWarm = append(r.stepsWarm, s)
	}

	// 3. Exec and hello round trips on one booted VM.
	logf("exec VM: %d x exec true, %d x hello", o.execN, o.execN)
	var err error
	if r.channel, err = measureChannel(ctx, e); err != nil {
		return fmt.Errorf("exec VM: %w", err)
	}
	return nil
}

// runFigures are the numbers of sections 1-3 that the summary and the
// report both show.
type runFigures struct {
	rawExit, echo, coldTotal, warm, execS stat
	rawCPU, coldCPU                       stat
	perEcho, perExec                      time.Duration // mean CPU per round trip
	bootRatio, execRatio50, execRatio99   float64
}

func runFiguresOf(r *results) runFigures {
	var f runFigures
	f.rawExit = summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.exit }))
	var rtts []time.Duration
	var echoCPU time.Duration
	for _, e := range r.echo {
		rtts = append(rtts, e.rtts...)
		echoCPU += e.rttCPU
	}
	f.echo = summarize(rtts)
	f.coldTotal = summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.total }))
	f.warm = summarize(r.prepWarm)
	ch := r.channel
	if ch == nil {
		ch = &channelResult{}
	}
	f.execS = summarize(ch.exec)
	f.rawCPU = summarize(collect(r.raw, func(x *rawBoot) time.Duration { return x.cpu }))
	f.coldCPU = summarize(collect(r.cold, func(x *coldRun) time.Duration { return x.cpu }))
	f.perEcho = perOp(echoCPU, len(rtts))
	f.perExec = perOp(ch.execCPU, len(ch.exec))
	f.bootRatio = ratio(f.coldTotal.median, f.rawExit.median)
	f.execRatio50 = ratio(f.execS.median, f.echo.median)
	f.execRatio99 = ratio(f.execS.p99, f.echo.p99)
	return f
}

// summary adds sections 1-3 to the summary table.
func (runSection) summary(b *report, r *results) {
	f := runFiguresOf(r)
	b.f("| 1. cold `run busybox true` vs raw QEMU boot to a trivial init | %s | %s | %s | %s | %s | ≤ 1.3x | %s |\n",
		dur(f.rawExit.median), dur(f.coldTotal.median), x(f.bootRatio), x(ratio(f.coldTotal.min, f.rawExit.min)),
		x(ratio(f.coldCPU.median, f.rawCPU.median)), verdict(f.bootRatio, 1.3))
	b.f("| 2. `Prepare` on a warm store | — | %s | — | — | — | ≤ 100 ms | %s |\n",
		dur(f.warm.median), verdict(float64(f.warm.median), float64(100*time.Millisecond)))
	b.f("| 3. exec `true` round trip vs raw 64 B echo, p50 | %s | %s | %s | %s | %s | ≤ 2x | %s |\n",
		dur(f.echo.median), dur(f.execS.median), x(f.execRatio50), x(ratio(f.execS.min, f.echo.min)),
		x(ratio(f.perExec, f.perEcho)), verdict(f.execRatio50, 2))
	b.f("| 3. same, p99 | %s | %s | %s | — | — | ≤ 2x | %s |\n",
		dur(f.echo.p99), dur(f.execS.p99), x(f.execRatio99), verdict(f.execRatio99, 2))
}
