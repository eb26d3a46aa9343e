// Package packaging holds the tests of the install and release targets:
// `make install` and `make release` run as a user runs them, and what they
// produce is checked (see packaging_test.go). It has no code of its own.
package packaging
