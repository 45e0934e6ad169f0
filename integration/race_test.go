//go:build race

package integration

// Under "go test -race", TestMain builds the daemon with -race too.
func init() { raceEnabled = true }
