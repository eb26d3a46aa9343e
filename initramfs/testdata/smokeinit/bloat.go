//go:build bloat

package main

// Linking net/http makes the stand-in agent about as large as the real one
// (~5 MB) for the compression measurement.
import _ "net/http"
