package store

import (
	"sync/atomic"
	"testing"
)

func BenchmarkMarkShown(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	peer := key(2)
	var i uint64
	for b.Loop() {
		if err := s.MarkShown(peer, msgID(i)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkShown(b *testing.B) {
	s := open(b, b.TempDir(), Options{})
	peer := key(2)
	const n = 10000
	for i := range uint64(n) {
		if err := s.MarkShown(peer, msgID(i)); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		b.Fatal(err)
	}
	var i uint64
	for b.Loop() {
		// Half hits (in bbolt), half misses.
		if s.Shown(peer, msgID(i%(2*n))) != (i%(2*n) < n) {
			b.Fatal("wrong answer")
		}
		i++
	}
}

func BenchmarkEnqueue(b *testing.B) {
	b.Run("serial", func(b *testing.B) {
		s := open(b, b.TempDir(), Options{})
		var i uint64
		for b.Loop() {
			if _, err := s.Enqueue(OutMsg{ID: msgID(i), To: "bob", Text: "hello"}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := open(b, b.TempDir(), Options{})
		var next atomic.Uint64
		b.SetParallelism(8) // 8 callers per CPU: group commit at work
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Enqueue(OutMsg{ID: msgID(next.Add(1)), To: "bob", Text: "hello"}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
