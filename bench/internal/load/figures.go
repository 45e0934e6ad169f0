package load

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// loadAvg returns /proc/loadavg's first three fields.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func perMessage(n int64, msgs int) string {
	if msgs == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(n)/float64(msgs))
}

func cpuPerMessage(d time.Duration, msgs int) string {
	if msgs == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Microsecond)/float64(msgs))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

func mb(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// machine describes where the run took place.
func machine() string {
	return fmt.Sprintf("%d CPUs, GOMAXPROCS %d, %s %s/%s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
