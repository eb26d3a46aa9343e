// Package guestboot assembles the boot of one guest, the same way for a
// one-shot `microagent run` (package runner) and for a workspace (its start
// in package workspace, its supervisor in package supervisor): it prepares
// the parts (image, root disk, kernel, initramfs with the agent), sizes the
// VM (profiles), builds the agent's hello from the image's config, the
// hostname and the network, turns all that into microvm.Options, and puts
// host files into the booted guest. What is done with the guest afterwards
// belongs to its callers.
package guestboot
