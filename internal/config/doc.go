// Package config defines every JETPOST_* environment variable in one place:
// the envconfig structs carry name, default and meaning, and Validate turns a
// bad value into one readable message naming the variable before anything
// connects. The worker's -h output and the README's table are both rendered
// from these structs (a test keeps the README identical), so documentation
// cannot drift from code. The same keys drive loading (env.go): durations
// read as in job files (a number is seconds), and a JETPOST_* name no
// command reads is reported with the closest known one.
package config
