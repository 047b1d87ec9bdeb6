package backend

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine (a Watch loop, a
// resolver lookup) outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
