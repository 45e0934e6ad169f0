// Command milterload is the load benchmark of spf-milter: it plays Postfix
// against spf-milter and two reference milters (a do-nothing milter on
// go-milter, and Debian's pyspf-milter when installed), one after the
// other, with a DNS server of realistic SPF policies in its own process,
// checks every verdict, and prints a Markdown table of messages per
// second, latency percentiles, errors and resident memory.
//
// Run it from the bench module (it builds spf-milter from the working tree
// through the module's replace directive):
//
//	cd bench && go run ./cmd/milterload
//
// It exits 1 when any session failed or got a wrong verdict.
//
// With -soak it runs the soak instead: spf-milter alone, -soak-conns
// connections kept busy for the given duration, its resident memory and
// goroutines sampled every -soak-interval, then read again once every
// connection is closed; it prints the curve and a summary, and exits 1 on
// any error or if the daemon did not come back to its idle baseline:
//
//	cd bench && go run ./cmd/milterload -soak 5m -soak-conns 1000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf-milter/spf-milter/bench/internal/load"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		conns     = flag.String("conns", "8,32", "concurrent connections, one row per `list` element")
		duration  = flag.Duration("duration", 20*time.Second, "length of each row")
		rounds    = flag.Int("rounds", 4, "take each row in this many shares, visiting every target in turn, so that a change in the machine's load spreads over all of them")
		messages  = flag.Int("messages", 0, "messages per row instead of -duration (0: use -duration)")
		warmup    = flag.Int("warmup", 1000, "messages sent to each target before its rows")
		dnsDelay  = flag.Duration("dns-delay", 20*time.Millisecond, "DNS delay of the cold-cache rows (0 leaves them out)")
		idle      = flag.Int("idle", 1000, "idle connections for the memory figure (0 leaves it out)")
		pyspf     = flag.Bool("pyspf", true, "include pyspf-milter when installed")
		only      = flag.String("only", "", "comma-separated `roles` to run, among spf-unbuffered, spf, null, null-buffered, pyspf, spf-cold, pyspf-cold (default all)")
		spfBin    = flag.String("spf-milter", "", "spf-milter `binary` to run (default: build the working tree)")
		nullBin   = flag.String("nullmilter", "", "do-nothing milter `binary` (default: build ./cmd/nullmilter)")
		workDir   = flag.String("dir", "", "`directory` for binaries, configs and logs (default: a temporary one, removed at the end)")
		tableOnly = flag.Bool("q", false, "print only the report, no progress lines")
		soak      = flag.Duration("soak", 0, "run the soak for this `duration` instead of the benchmark (spf-milter only)")
		soakConns = flag.Int("soak-conns", 1000, "connections kept busy during the soak")
		soakEvery = flag.Duration("soak-interval", 10*time.Second, "time between two samples of the soak")
		cpuProf   = flag.String("cpuprofile", "", "write the load generator's own CPU profile to `file` (its CPU is taken from the milters')")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "milterload: unexpected argument %q\n", flag.Arg(0))
		return 2
	}
	if *soak < 0 || *soak > 0 && (*soakConns < 2 || *soakEvery <= 0) {
		fmt.Fprintln(os.Stderr, "milterload: -soak needs a positive duration, -soak-conns 2 or more and a positive -soak-interval")
		return 2
	}
	if *rounds < 1 {
		fmt.Fprintln(os.Stderr, "milterload: -rounds must be 1 or more")
		return 2
	}
	var cs []int
	for _, f := range strings.Split(*conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "milterload: bad -conns %q\n", *conns)
			return 2
		}
		cs = append(cs, n)
	}

	// The generator shares the CPUs with the milter it measures: its
	// garbage collector, at Go's default, took a tenth of its CPU.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "milterload-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "milterload:", err)
		return 1
	}
	var progress io.Writer = os.Stderr
	if *tableOnly {
		progress = nil
	}
	bins := load.Binaries{SPFMilter: *spfBin, NullMilter: *nullBin}
	if bins.SPFMilter == "" || bins.NullMilter == "" {
		if progress != nil {
			fmt.Fprintln(progress, "building spf-milter and nullmilter")
		}
		built, err := load.BuildBinaries(ctx, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "milterload:", err)
			return 1
		}
		if bins.SPFMilter == "" {
			bins.SPFMilter = built.SPFMilter
		}
		if bins.NullMilter == "" {
			bins.NullMilter = built.NullMilter
		}
	}
	if *soak > 0 {
		return runSoak(ctx, load.SoakOptions{
			Conns:    *soakConns,
			Duration: *soak,
			Interval: *soakEvery,
			Warmup:   *warmup,
			Bin:      bins,
			Dir:      dir,
			Progress: progress,
		})
	}
	o := load.Options{
		Conns:     cs,
		Duration:  *duration,
		Messages:  *messages,
		Rounds:    *rounds,
		Warmup:    *warmup,
		ColdDelay: *dnsDelay,
		Idle:      *idle,
		PySPF:     *pyspf,
		Bin:       bins,
		Dir:       dir,
	}
	if *only != "" {
		o.Only = strings.Split(*only, ",")
	}
	o.Progress = progress
	r, err := load.Run(ctx, o)
	if r == nil {
		return finish(nil, 0, err)
	}
	return finish(r, r.Errors(), err)
}

// runSoak runs the soak and prints its report; it returns the exit code.
func runSoak(ctx context.Context, o load.SoakOptions) int {
	r, err := load.Soak(ctx, o)
	if r == nil {
		return finish(nil, 0, err)
	}
	return finish(r, r.Failures(), err)
}

// report is what a run or a soak hands back.
type report interface {
	Markdown(io.Writer)
	Summary() string
}

// finish prints r, if any, and returns the exit code: 1 after err or any
// failure.
func finish(r report, failures int, err error) int {
	if r != nil {
		fmt.Println()
		r.Markdown(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "milterload:", err)
		return 1
	}
	if failures > 0 {
		fmt.Fprintf(os.Stderr, "milterload: %s\n", r.Summary())
		return 1
	}
	return 0
}
