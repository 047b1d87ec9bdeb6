//go:build !race

package http1

// raceEnabled reports whether the program is built with the race
// detector (see rawRead).
const raceEnabled = false
