//go:build !race

package workspace

const raceBuild = false
