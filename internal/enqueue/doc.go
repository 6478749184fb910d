// Package enqueue holds what the enqueue command does beyond wiring:
// reading inputs twice (validate everything first, then publish, so a file
// with an invalid line publishes nothing) and collecting a batch's results
// from the results stream with a summary.
package enqueue
