// Package shipping holds no code: its tests check what the build ships and
// how (the Makefile's build and up targets, the image's build line), so
// that README's Development section stays true.
package shipping
