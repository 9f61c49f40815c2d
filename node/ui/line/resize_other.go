//go:build !unix

package line

import "golang.org/x/term"

// watchResize does nothing where there is no SIGWINCH: the size read when
// Run starts stays.
func watchResize(fd int, t *term.Terminal) (stop func()) { return func() {} }
