package milter

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: a
// session, a check or a listener that is never ended would show up here
// even where no single test looks for it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
