//go:build race

package job

// raceEnabled shortens tests that are about volume, not concurrency: the
// race detector makes them ten times slower and finds nothing there.
const raceEnabled = true
