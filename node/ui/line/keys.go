package line

import (
	"bytes"
	"io"
	"sync/atomic"
)

const (
	keyCtrlC = 3
	keyEsc   = 0x1b
)

// keyReader is what the terminal reads keys from, between In and
// x/term's Terminal:
//
//   - it notes Ctrl-C, which Terminal.ReadLine reports as io.EOF just as it
//     does Ctrl-D on an empty line;
//   - it rewrites the SS3 forms of the cursor keys (ESC O A, sent in the
//     terminal's application cursor mode) into the CSI forms x/term knows
//     (ESC [ A), and drops the other SS3 keys (F1 to F4, the keypad), which
//     x/term would half-parse, typing their last letter into the line;
//   - once stopped (Run returned), it reads nothing more for the terminal.
//
// Read, ctrlC and err belong to the goroutine calling Terminal.ReadLine.
type keyReader struct {
	r       io.Reader
	pending []byte // an ESC or ESC O held back until the key's next byte
	ctrlC   bool   // a Ctrl-C was read
	err     error  // the error reading r, once there is one
	stopped atomic.Bool
}

func newKeyReader(r io.Reader) *keyReader { return &keyReader{r: r} }

// stop makes every later Read return io.EOF; a Read blocked on r returns
// io.EOF when r returns.
func (k *keyReader) stop() { k.stopped.Store(true) }

func (k *keyReader) Read(p []byte) (int, error) {
	for {
		if k.stopped.Load() {
			return 0, io.EOF
		}
		if len(p) == 0 {
			return 0, nil
		}
		n := copy(p, k.pending)
		k.pending = append(k.pending[:0], k.pending[n:]...)
		var err error
		if len(k.pending) == 0 && n < len(p) && k.err == nil {
			var m int
			m, err = k.r.Read(p[n:])
			n += m
			if err != nil {
				k.err = err
			}
		}
		if k.stopped.Load() {
			return 0, io.EOF
		}
		out, hold := filterKeys(p[:n], k.err != nil)
		if len(hold) > 0 {
			k.pending = append(append([]byte(nil), hold...), k.pending...)
		}
		if bytes.IndexByte(out, keyCtrlC) >= 0 {
			k.ctrlC = true
		}
		if len(out) > 0 || err != nil {
			return len(out), err
		}
		if k.err != nil && len(k.pending) == 0 {
			return 0, k.err
		}
	}
}

// filterKeys rewrites b in place: SS3 cursor keys become CSI ones, other
// SS3 keys go. out is what is left; hold is a trailing ESC or ESC O that
// may start an SS3 key whose last byte has not been read yet (none when
// final: no more bytes will come).
func filterKeys(b []byte, final bool) (out, hold []byte) {
	w := 0
	for i := 0; i < len(b); {
		if b[i] == keyEsc && i+1 < len(b) && b[i+1] == 'O' && i+2 < len(b) {
			switch c := b[i+2]; c {
			case 'A', 'B', 'C', 'D', 'H', 'F':
				b[w], b[w+1], b[w+2] = keyEsc, '[', c
				w += 3
			}
			i += 3
			continue
		}
		if !final && b[i] == keyEsc && (i+1 == len(b) || i+2 == len(b) && b[i+1] == 'O') {
			return b[:w], b[i:]
		}
		b[w] = b[i]
		w++
		i++
	}
	return b[:w], nil
}
